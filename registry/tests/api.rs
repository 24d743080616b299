//! The registry API driven in-process through `tower::ServiceExt::oneshot`: every endpoint and
//! every error path the spec names, without sockets.

mod common;

use axum::http::{Method, StatusCode};
use common::fixture;
use shoal_registry::Digest;
use shoal_registry::manifest::{DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST};

#[tokio::test]
async fn base_endpoint_answers_with_api_version() {
    let f = fixture().await;
    let r = f.get("/v2/").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");
    assert_eq!(f.get("/health").await.status, StatusCode::OK);
    assert_eq!(f.get("/nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn monolithic_upload_then_head_and_get() {
    let f = fixture().await;
    let d = f.push_blob("library/alpine", b"hello blob").await;
    let r = f
        .call(
            Method::HEAD,
            &format!("/v2/library/alpine/blobs/{d}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), "10");
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert!(r.body.is_empty());
    let r = f.get(&format!("/v2/library/alpine/blobs/{d}")).await;
    assert_eq!(r.body, b"hello blob");
    // Not linked into another repository.
    let r = f.get(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
}

#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let f = fixture().await;
    let wrong = Digest::sha256_of(b"something else");
    let r = f
        .call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={wrong}"),
            &[],
            b"payload".to_vec(),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    for d in [wrong, Digest::sha256_of(b"payload")] {
        let r = f
            .call(Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], vec![])
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
    // Same through a chunked session.
    let r = f
        .call(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
        .await;
    let loc = r.header("location").to_owned();
    let wrong = Digest::sha256_of(b"x");
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={wrong}"),
            &[],
            b"payload".to_vec(),
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(f.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
    let r = f
        .call(
            Method::HEAD,
            &format!("/v2/a/blobs/{}", Digest::sha256_of(b"payload")),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn malformed_parameters_get_spec_codes() {
    let f = fixture().await;
    let r = f.get("/v2/a/blobs/sha256:1234").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "DIGEST_INVALID")
    );
    let r = f
        .get(&format!("/v2/a/blobs/{}", Digest::sha256_of(b"nope")))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    let r = f.get("/v2/a/../b/manifests/latest").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "NAME_INVALID")
    );
    let r = f
        .call(Method::POST, "/v2/Upper/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(r.code(), "NAME_INVALID");
    let r = f
        .call(
            Method::POST,
            "/v2/a/blobs/uploads/?digest=md5:abc",
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    let r = f.get("/v2/a/blobs/uploads/not-a-uuid").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
    );
    let r = f
        .call(Method::POST, "/v2/a/manifests/latest", &[], vec![])
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED")
    );
    let r = f.get("/v2/a/tags/list?n=abc").await;
    assert_eq!(r.code(), "PAGINATION_NUMBER_INVALID");
    let r = f.get("/v2/never/tags/list").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
}

#[tokio::test]
async fn chunked_upload_in_order_with_status_and_416_for_gaps() {
    let f = fixture().await;
    let r = f
        .call(Method::POST, "/v2/a/b/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-0");
    let loc = r.header("location").to_owned();
    assert!(loc.starts_with("/v2/a/b/blobs/uploads/"));
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "0-4"), ("content-length", "5")],
            b"01234".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.header("range"), "0-4");
    // A gap: refused with 416 and the current range; nothing appended.
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "7-9")],
            b"789".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("range"), "0-4");
    // Length disagreeing with the range.
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "5-9"), ("content-length", "3")],
            b"567".to_vec(),
        )
        .await;
    assert_eq!(r.code(), "SIZE_INVALID");
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "5-9")],
            b"56789".to_vec(),
        )
        .await;
    assert_eq!(r.header("range"), "0-9");
    // A chunk without Content-Range is appended (streamed PATCH, as docker does).
    let r = f.call(Method::PATCH, &loc, &[], b"ab".to_vec()).await;
    assert_eq!(r.header("range"), "0-11");
    let r = f.get(&loc).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("range"), "0-11");
    let d = Digest::sha256_of(b"0123456789abcd");
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-range", "12-13")],
            b"cd".to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("location"), format!("/v2/a/b/blobs/{d}"));
    assert_eq!(
        f.get(&format!("/v2/a/b/blobs/{d}")).await.body,
        b"0123456789abcd"
    );
    assert_eq!(f.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn put_without_digest_is_refused_and_cancel_forgets() {
    let f = fixture().await;
    let loc = f
        .call(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
        .await
        .header("location")
        .to_owned();
    assert_eq!(
        f.call(Method::PUT, &loc, &[], b"x".to_vec()).await.code(),
        "DIGEST_INVALID"
    );
    let r = f.call(Method::DELETE, &loc, &[], vec![]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(f.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");
    // A session belongs to its repository.
    let loc = f
        .call(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
        .await
        .header("location")
        .to_owned();
    let other = loc.replace("/v2/a/", "/v2/b/");
    assert_eq!(f.get(&other).await.code(), "BLOB_UPLOAD_UNKNOWN");
}

#[tokio::test]
async fn sha512_uploads_are_verified() {
    let f = fixture().await;
    let mut h = shoal_registry::Digester::new(shoal_registry::Algorithm::Sha512);
    h.update(b"sha512 content");
    let d = h.current();
    let loc = f
        .call(Method::POST, "/v2/a/blobs/uploads/", &[], vec![])
        .await
        .header("location")
        .to_owned();
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            b"sha512 content".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        f.get(&format!("/v2/a/blobs/{d}")).await.body,
        b"sha512 content"
    );
}

#[tokio::test]
async fn range_reads() {
    let f = fixture().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let d = f.push_blob("r", &data).await;
    let uri = format!("/v2/r/blobs/{d}");
    let r = f
        .call(Method::GET, &uri, &[("range", "bytes=100-199")], vec![])
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.header("content-range"), "bytes 100-199/3000");
    assert_eq!(r.header("content-length"), "100");
    assert_eq!(r.body, &data[100..200]);
    let r = f
        .call(Method::GET, &uri, &[("range", "bytes=-10")], vec![])
        .await;
    assert_eq!(r.body, &data[2990..]);
    let r = f
        .call(Method::GET, &uri, &[("range", "bytes=2999-")], vec![])
        .await;
    assert_eq!(r.body, &data[2999..]);
    let r = f
        .call(Method::GET, &uri, &[("range", "bytes=3000-")], vec![])
        .await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */3000");
}

#[tokio::test]
async fn cross_repository_mount() {
    let f = fixture().await;
    let d = f.push_blob("src/repo", b"shared layer").await;
    let r = f
        .call(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.header("location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(
        f.get(&format!("/v2/dst/blobs/{d}")).await.body,
        b"shared layer"
    );
    // From a repository that lacks it: an ordinary session instead.
    let r = f
        .call(
            Method::POST,
            &format!("/v2/dst2/blobs/uploads/?mount={d}&from=nothere"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(r.header("location").starts_with("/v2/dst2/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_round_trip_bytes_and_type_for_all_four_types() {
    let f = fixture().await;
    for (i, media) in [OCI_MANIFEST, DOCKER_MANIFEST].into_iter().enumerate() {
        let body = f.image("img", media, format!("layer {i}").as_bytes()).await;
        let tag = format!("t{i}");
        let r = f.push_manifest("img", &tag, media, &body).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let digest = Digest::sha256_of(body.as_bytes());
        assert_eq!(r.header("docker-content-digest"), digest.to_string());
        for reference in [tag.clone(), digest.to_string()] {
            let r = f.get(&format!("/v2/img/manifests/{reference}")).await;
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.body, body.as_bytes());
            assert_eq!(r.header("content-type"), media);
            assert_eq!(r.header("docker-content-digest"), digest.to_string());
            let h = f
                .call(
                    Method::HEAD,
                    &format!("/v2/img/manifests/{reference}"),
                    &[],
                    vec![],
                )
                .await;
            assert_eq!(h.header("content-length"), body.len().to_string());
            assert!(h.body.is_empty());
        }
    }
    // An index with two platforms, in both families.
    let mut descs = Vec::new();
    for arch in ["amd64", "arm64"] {
        let body = f
            .image("img", OCI_MANIFEST, format!("{arch} layer").as_bytes())
            .await;
        let d = Digest::sha256_of(body.as_bytes());
        assert_eq!(
            f.push_manifest("img", &d.to_string(), OCI_MANIFEST, &body)
                .await
                .status,
            StatusCode::CREATED
        );
        descs.push(format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":{},"platform":{{"architecture":"{arch}","os":"linux"}}}}"#,
            body.len()
        ));
    }
    for media in [OCI_INDEX, DOCKER_LIST] {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","manifests":[{}]}}"#,
            descs.join(",")
        );
        let r = f.push_manifest("img", "multi", media, &index).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let r = f.get("/v2/img/manifests/multi").await;
        assert_eq!(r.header("content-type"), media);
        assert_eq!(r.body, index.as_bytes());
    }
}

#[tokio::test]
async fn accept_header_is_honoured() {
    let f = fixture().await;
    let body = f.image("acc", OCI_MANIFEST, b"l").await;
    f.push_manifest("acc", "v1", OCI_MANIFEST, &body).await;
    let ok = f
        .call(
            Method::GET,
            "/v2/acc/manifests/v1",
            &[("accept", &format!("{DOCKER_MANIFEST}, {OCI_MANIFEST}"))],
            vec![],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = f
        .call(
            Method::GET,
            "/v2/acc/manifests/v1",
            &[("accept", DOCKER_MANIFEST)],
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
}

#[tokio::test]
async fn manifest_errors() {
    let f = fixture().await;
    let r = f.push_manifest("m", "v1", OCI_MANIFEST, "{not json").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_INVALID")
    );
    let missing = Digest::sha256_of(b"missing layer");
    let config = f.push_blob("m", b"{}").await;
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{missing}","size":5}}]}}"#
    );
    let r = f.push_manifest("m", "v1", OCI_MANIFEST, &body).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN")
    );
    assert!(String::from_utf8_lossy(&r.body).contains(&missing.to_string()));
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{missing}","size":5}}]}}"#
    );
    assert_eq!(
        f.push_manifest("m", "idx", OCI_INDEX, &index).await.code(),
        "MANIFEST_BLOB_UNKNOWN"
    );
    // Pushed by a digest that is not its own.
    let good = f.image("m", OCI_MANIFEST, b"z").await;
    let r = f
        .push_manifest("m", &missing.to_string(), OCI_MANIFEST, &good)
        .await;
    assert_eq!(r.code(), "DIGEST_INVALID");
    assert_eq!(f.get("/v2/m/manifests/v1").await.code(), "MANIFEST_UNKNOWN");
    assert_eq!(
        f.get(&format!("/v2/m/manifests/{missing}")).await.code(),
        "MANIFEST_UNKNOWN"
    );
    let r = f
        .push_manifest(
            "m",
            "v1",
            OCI_MANIFEST,
            &good.replace(OCI_MANIFEST, DOCKER_MANIFEST),
        )
        .await;
    assert_eq!(r.code(), "MANIFEST_INVALID");
}

#[tokio::test]
async fn tags_pagination_and_catalog() {
    let f = fixture().await;
    let body = f.image("lib/app", OCI_MANIFEST, b"t").await;
    for t in ["d", "a", "c", "b", "e"] {
        assert_eq!(
            f.push_manifest("lib/app", t, OCI_MANIFEST, &body)
                .await
                .status,
            StatusCode::CREATED
        );
    }
    let r = f.get("/v2/lib/app/tags/list").await;
    assert_eq!(
        r.json()["tags"],
        serde_json::json!(["a", "b", "c", "d", "e"])
    );
    assert_eq!(r.json()["name"], "lib/app");
    let r = f.get("/v2/lib/app/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["a", "b"]));
    assert_eq!(
        r.header("link"),
        "</v2/lib/app/tags/list?n=2&last=b>; rel=\"next\""
    );
    let r = f.get("/v2/lib/app/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["c", "d"]));
    let r = f.get("/v2/lib/app/tags/list?n=2&last=d").await;
    assert_eq!(r.json()["tags"], serde_json::json!(["e"]));
    assert_eq!(r.header("link"), "");
    assert_eq!(
        f.get("/v2/lib/app/tags/list?n=0").await.json()["tags"],
        serde_json::json!([])
    );
    f.push_blob("zz/top", b"q").await;
    let r = f.get("/v2/_catalog").await;
    assert_eq!(
        r.json()["repositories"],
        serde_json::json!(["lib/app", "zz/top"])
    );
    let r = f.get("/v2/_catalog?n=1").await;
    assert_eq!(r.json()["repositories"], serde_json::json!(["lib/app"]));
    assert_eq!(
        r.header("link"),
        "</v2/_catalog?n=1&last=lib/app>; rel=\"next\""
    );
}

#[tokio::test]
async fn referrers_api_with_artifact_type_filter() {
    let f = fixture().await;
    let subject_body = f.image("ref", OCI_MANIFEST, b"subject").await;
    let subject = Digest::sha256_of(subject_body.as_bytes());
    f.push_manifest("ref", "v1", OCI_MANIFEST, &subject_body)
        .await;
    let empty = f.push_blob("ref", b"{}").await;
    for (i, at) in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ]
    .iter()
    .enumerate()
    {
        let sig = f.push_blob("ref", format!("sig {i}").as_bytes()).await;
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{at}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/octet-stream","digest":"{sig}","size":5}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{}}},"annotations":{{"n":"{i}"}}}}"#,
            subject_body.len()
        );
        let d = Digest::sha256_of(body.as_bytes());
        let r = f
            .push_manifest("ref", &d.to_string(), OCI_MANIFEST, &body)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.header("oci-subject"), subject.to_string());
    }
    let r = f.get(&format!("/v2/ref/referrers/{subject}")).await;
    assert_eq!(r.header("content-type"), OCI_INDEX);
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter()
            .all(|m| m["mediaType"] == OCI_MANIFEST && m["size"].as_u64().unwrap() > 0)
    );
    let r = f
        .get(&format!(
            "/v2/ref/referrers/{subject}?artifactType=application/vnd.example.sig"
        ))
        .await;
    assert_eq!(r.header("oci-filters-applied"), "artifactType");
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(list[0]["annotations"]["n"], "1");
    // Deleting a referrer removes it from the list.
    let sig_digest = list[0]["digest"].as_str().unwrap().to_owned();
    assert_eq!(
        f.call(
            Method::DELETE,
            &format!("/v2/ref/manifests/{sig_digest}"),
            &[],
            vec![]
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        f.get(&format!("/v2/ref/referrers/{subject}")).await.json()["manifests"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // No referrers: an empty index, not an error.
    let none = Digest::sha256_of(b"none");
    assert_eq!(
        f.get(&format!("/v2/ref/referrers/{none}")).await.json()["manifests"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn deletes() {
    let f = fixture().await;
    let body = f.image("del", OCI_MANIFEST, b"d").await;
    let d = Digest::sha256_of(body.as_bytes());
    f.push_manifest("del", "a", OCI_MANIFEST, &body).await;
    f.push_manifest("del", "b", OCI_MANIFEST, &body).await;
    // Tag delete leaves the other tag and the digest.
    assert_eq!(
        f.call(Method::DELETE, "/v2/del/manifests/a", &[], vec![])
            .await
            .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        f.get("/v2/del/manifests/a").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(f.get("/v2/del/manifests/b").await.status, StatusCode::OK);
    // Digest delete removes every tag pointing at it.
    assert_eq!(
        f.call(
            Method::DELETE,
            &format!("/v2/del/manifests/{d}"),
            &[],
            vec![]
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        f.get("/v2/del/manifests/b").await.code(),
        "MANIFEST_UNKNOWN"
    );
    assert_eq!(
        f.call(
            Method::DELETE,
            &format!("/v2/del/manifests/{d}"),
            &[],
            vec![]
        )
        .await
        .code(),
        "MANIFEST_UNKNOWN"
    );
    let blob = f.push_blob("del", b"gone soon").await;
    assert_eq!(
        f.call(
            Method::DELETE,
            &format!("/v2/del/blobs/{blob}"),
            &[],
            vec![]
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        f.get(&format!("/v2/del/blobs/{blob}")).await.code(),
        "BLOB_UNKNOWN"
    );
    assert_eq!(
        f.call(
            Method::DELETE,
            &format!("/v2/del/blobs/{blob}"),
            &[],
            vec![]
        )
        .await
        .code(),
        "BLOB_UNKNOWN"
    );
}

#[tokio::test]
async fn ranged_gets_across_several_send_windows_return_exactly_those_bytes() {
    let reg = fixture().await;
    // Over one 4 MiB window plus an odd tail, with bytes that differ at every offset.
    let data: Vec<u8> = (0..(5 << 20) + 3)
        .map(|i: u32| (i * 7 + i / 251) as u8)
        .collect();
    let d = reg.push_blob("a", &data).await;
    let uri = format!("/v2/a/blobs/{d}");
    let whole = reg.get(&uri).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert!(whole.body == data, "whole blob differs");
    for (start, end) in [
        (0, 0),
        (1_000_001, 4_194_305),
        (2_097_151, 2_097_152),
        (5_000_000, (5 << 20) + 2),
    ] {
        let range = format!("bytes={start}-{end}");
        let r = reg
            .call(Method::GET, &uri, &[("range", &range)], vec![])
            .await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert!(r.body == data[start..=end], "{range}: bytes differ");
        assert_eq!(
            r.header("content-range"),
            format!("bytes {start}-{end}/{}", data.len())
        );
    }
}

#[tokio::test]
async fn tags_read_from_memory_follow_every_change_at_once() {
    let reg = fixture().await;
    let one = reg.image("a", OCI_MANIFEST, b"layer one").await;
    let two = reg.image("a", OCI_MANIFEST, b"layer two").await;
    let (d1, d2) = (
        Digest::sha256_of(one.as_bytes()),
        Digest::sha256_of(two.as_bytes()),
    );
    let digest_of_tag = |r: &common::Resp| r.header("docker-content-digest").to_owned();
    reg.push_manifest("a", "v1", OCI_MANIFEST, &one).await;
    // Read twice: the second read is answered from memory.
    for _ in 0..2 {
        let r = reg.get("/v2/a/manifests/v1").await;
        assert_eq!(
            (r.status, digest_of_tag(&r)),
            (StatusCode::OK, d1.to_string())
        );
    }
    // The tag moves: the next read sees the new digest.
    reg.push_manifest("a", "v1", OCI_MANIFEST, &two).await;
    let r = reg.get("/v2/a/manifests/v1").await;
    assert_eq!(
        (r.status, digest_of_tag(&r)),
        (StatusCode::OK, d2.to_string())
    );
    // Deleted by tag, then the manifest by digest: both gone at once.
    let r = reg
        .call(Method::DELETE, "/v2/a/manifests/v1", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/a/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );
    reg.push_manifest("a", "v2", OCI_MANIFEST, &one).await;
    assert_eq!(reg.get("/v2/a/manifests/v2").await.status, StatusCode::OK);
    assert_eq!(
        reg.get(&format!("/v2/a/manifests/{d1}")).await.status,
        StatusCode::OK
    );
    let r = reg
        .call(
            Method::DELETE,
            &format!("/v2/a/manifests/{d1}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/a/manifests/v2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.get(&format!("/v2/a/manifests/{d1}")).await.status,
        StatusCode::NOT_FOUND
    );
}
