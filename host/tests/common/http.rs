//! Plain HTTP against a server under test, for what no client command shows (status codes,
//! headers), and the simplest client's push.

use std::path::Path;

use super::image::{self, BuiltImage};
use super::{DevServer, block_on};

/// A GET or HEAD straight to the server, for what no client command shows (status codes,
/// headers after a delete).
pub fn http(method: &str, url: &str, accept: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    block_on(async {
        let response = reqwest::Client::new()
            .request(method.parse().expect("an HTTP method"), url)
            .header("Accept", accept)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: body: {e}"))
            .to_vec();
        (status, headers, body)
    })
}

pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// Pushes every blob of `image` from the layout at `layout`, then its manifest as `name:tag`,
/// the way the simplest client does: POST, then one PUT with the whole blob and its digest.
pub async fn push_over_http(
    client: &reqwest::Client,
    server: &DevServer,
    name: &str,
    tag: &str,
    layout: &Path,
    image: &BuiltImage,
) {
    let blobs = image::read_layout_blobs(layout);
    for digest in std::iter::once(&image.config_digest).chain(&image.layer_digests) {
        let started = client
            .post(server.url(&format!("/v2/{name}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        assert_eq!(
            started.status().as_u16(),
            202,
            "POST /v2/{name}/blobs/uploads/"
        );
        let location = started.headers()["location"]
            .to_str()
            .expect("Location")
            .to_owned();
        let location = if location.starts_with('/') {
            server.url(&location)
        } else {
            location
        };
        let separator = if location.contains('?') { '&' } else { '?' };
        let done = client
            .put(format!("{location}{separator}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .body(blobs[digest].clone())
            .send()
            .await
            .expect("PUT upload");
        assert_eq!(done.status().as_u16(), 201, "PUT {location} for {digest}");
    }
    let put = client
        .put(server.url(&format!("/v2/{name}/manifests/{tag}")))
        .header("Content-Type", image::OCI_MANIFEST)
        .body(image.manifest.clone())
        .send()
        .await
        .expect("PUT manifest");
    assert_eq!(put.status().as_u16(), 201, "PUT /v2/{name}/manifests/{tag}");
}
