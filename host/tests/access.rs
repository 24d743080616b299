//! `shoal dev` with `access:` (an htpasswd file made in the test), driven by the clients that
//! log in: skopeo `--creds`, `docker login`, `ctr --user`; and by plain HTTP for what no client
//! shows (challenges, scopes, throttling). A peer that is not installed skips its test, unless
//! `SHOAL_REQUIRE_PEERS=1`.

mod common;

use std::path::Path;

use common::daemons::{Containerd, Dockerd};
use common::image::{self, Digest};
use common::skopeo::skopeo;
use common::{
    DevServer, assert_same_blobs, block_on, json, require, require_root, run, run_ok, tempdir,
};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55";
const CREDS: &str = "alice:s3cret-Pa55";

/// A `shoal dev` whose `access:` names an htpasswd file with one user, and lets anyone pull
/// `public/*`.
struct Secured {
    server: DevServer,
    _dir: tempfile::TempDir,
}

impl Secured {
    fn start() -> Secured {
        let dir = tempdir("shoal-access-");
        let htpasswd = dir.path().join("htpasswd");
        let line = shoal_registry::htpasswd_line(USER, PASSWORD).expect("hashing a password");
        std::fs::write(&htpasswd, format!("# made by the test\n{line}\n")).expect("htpasswd");
        let config = dir.path().join("dev.yaml");
        std::fs::write(
            &config,
            format!(
                "access:\n  htpasswd: {}\n  anonymous_pull: ['public/.*']\n",
                htpasswd.display()
            ),
        )
        .expect("dev.yaml");
        let data = dir.path().join("data");
        let server = DevServer::start_with_config(&data, &config);
        Secured { server, _dir: dir }
    }

    fn host(&self) -> String {
        self.server.host_port()
    }

    /// `skopeo copy` of the layout at `layout` to `reference`, with `creds` or none.
    fn push(&self, layout: &Path, reference: &str, creds: Option<&str>) -> std::process::Output {
        let mut cmd = skopeo();
        cmd.args(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
        if let Some(creds) = creds {
            cmd.args(["--dest-creds", creds]);
        }
        cmd.arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{}/{reference}", self.host()));
        run(&mut cmd)
    }

    /// `skopeo copy` of `reference` into a new layout at `out`, with `creds` or none.
    fn pull(&self, reference: &str, out: &Path, creds: Option<&str>) -> std::process::Output {
        let mut cmd = skopeo();
        cmd.args(["copy", "--preserve-digests", "--src-tls-verify=false"]);
        if let Some(creds) = creds {
            cmd.args(["--src-creds", creds]);
        }
        cmd.arg(format!("docker://{}/{reference}", self.host()))
            .arg(format!("oci:{}:v1", out.display()));
        run(&mut cmd)
    }
}

/// A request straight to the server: status, headers and body.
fn request(
    method: &str,
    url: &str,
    auth: Option<(&str, &str)>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    block_on(async {
        let mut req = reqwest::Client::new().request(method.parse().expect("a method"), url);
        if let Some((user, password)) = auth {
            req = req.basic_auth(user, Some(password));
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (
            status,
            headers,
            resp.bytes().await.expect("a body").to_vec(),
        )
    })
}

fn www_authenticate(headers: &reqwest::header::HeaderMap) -> String {
    headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn anonymous_push_is_refused_with_the_challenge() {
    let s = Secured::start();
    let (status, headers, body) =
        request("POST", &s.server.url("/v2/team/app/blobs/uploads/"), None);
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    assert_eq!(json(&body)["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(
        www_authenticate(&headers),
        format!(
            r#"Bearer realm="http://{}/token",service="shoal-registry",scope="repository:team/app:pull,push""#,
            s.host()
        )
    );
    // The open endpoint stays open.
    let (status, _, body) = request("GET", &s.server.url("/health"), None);
    assert_eq!((status, body.as_slice()), (200, &b"ok"[..]));
    assert!(
        s.server
            .log()
            .iter()
            .any(|l| l.contains("credentials required") && l.contains("users=1")),
        "no start-up line about credentials"
    );
}

#[test]
fn skopeo_pushes_and_pulls_with_credentials_only() {
    if !require("skopeo") {
        return;
    }
    let s = Secured::start();
    let work = tempdir("shoal-access-skopeo-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "access-skopeo");

    let refused = s.push(&src, "team/app:v1", None);
    assert!(
        !refused.status.success(),
        "an anonymous skopeo push succeeded"
    );
    let text = stderr(&refused).to_lowercase();
    assert!(
        // skopeo's first request is a HEAD, whose 401 has no body; it then says "denied".
        ["unauthorized", "authentication required", "denied"]
            .iter()
            .any(|why| text.contains(why)),
        "skopeo's error does not say why: {text}"
    );
    let wrong = s.push(&src, "team/app:v1", Some("alice:wrong"));
    assert!(
        !wrong.status.success(),
        "a push with a wrong password succeeded"
    );

    let pushed = s.push(&src, "team/app:v1", Some(CREDS));
    assert!(
        pushed.status.success(),
        "skopeo --dest-creds: {}",
        stderr(&pushed)
    );
    let out = work.path().join("out");
    let pulled = s.pull("team/app:v1", &out, Some(CREDS));
    assert!(
        pulled.status.success(),
        "skopeo --src-creds: {}",
        stderr(&pulled)
    );
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    assert_same_blobs(&src, &out);
    // Not without credentials: team/* is not listed in anonymous_pull.
    let anonymous = s.pull("team/app:v1", &work.path().join("anon"), None);
    assert!(
        !anonymous.status.success(),
        "team/app was pulled anonymously"
    );
}

#[test]
fn anonymous_pull_works_only_for_listed_namespaces() {
    if !require("skopeo") {
        return;
    }
    let s = Secured::start();
    let work = tempdir("shoal-access-anon-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "access-anon");
    for reference in ["public/app:v1", "private/app:v1"] {
        let pushed = s.push(&src, reference, Some(CREDS));
        assert!(pushed.status.success(), "{reference}: {}", stderr(&pushed));
    }
    let out = work.path().join("public");
    let pulled = s.pull("public/app:v1", &out, None);
    assert!(
        pulled.status.success(),
        "anonymous pull of public/app: {}",
        stderr(&pulled)
    );
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    let refused = s.pull("private/app:v1", &work.path().join("private"), None);
    assert!(
        !refused.status.success(),
        "private/app was pulled anonymously"
    );
    // And over plain HTTP, without the token dance.
    let manifest = format!("/v2/public/app/manifests/{}", built.manifest_digest);
    assert_eq!(request("GET", &s.server.url(&manifest), None).0, 200);
    let manifest = format!("/v2/private/app/manifests/{}", built.manifest_digest);
    assert_eq!(request("GET", &s.server.url(&manifest), None).0, 401);
}

#[test]
fn a_pull_token_cannot_push() {
    let s = Secured::start();
    let token_url = |scope: &str| {
        s.server.url(&format!(
            "/token?service=shoal-registry&scope={}",
            scope
                .replace(':', "%3A")
                .replace('/', "%2F")
                .replace(',', "%2C")
        ))
    };
    let (status, _, body) = request(
        "GET",
        &token_url("repository:team/app:pull"),
        Some((USER, PASSWORD)),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let token = json(&body)["token"].as_str().expect("token").to_owned();
    let with_token = |method: &str, path: &str, token: &str| {
        block_on(async {
            let resp = reqwest::Client::new()
                .request(method.parse().expect("a method"), s.server.url(path))
                .bearer_auth(token)
                .send()
                .await
                .expect("a request with a token");
            let status = resp.status().as_u16();
            (status, www_authenticate(resp.headers()))
        })
    };
    let (status, _) = with_token("GET", "/v2/team/app/tags/list", &token);
    assert_eq!(status, 404, "a pull token could not read the repository");
    let (status, challenge) = with_token("POST", "/v2/team/app/blobs/uploads/", &token);
    assert_eq!(status, 401, "a pull token started an upload");
    assert!(
        challenge.ends_with(r#"error="insufficient_scope""#),
        "{challenge}"
    );

    let (_, _, body) = request(
        "GET",
        &token_url("repository:team/app:pull,push"),
        Some((USER, PASSWORD)),
    );
    let token = json(&body)["token"].as_str().expect("token").to_owned();
    let (status, _) = with_token("POST", "/v2/team/app/blobs/uploads/", &token);
    assert_eq!(status, 202, "a push token could not start an upload");
}

#[test]
fn a_hundred_wrong_passwords_are_throttled() {
    let s = Secured::start();
    let mut statuses = Vec::new();
    for i in 0..100 {
        let (status, headers, _) = request(
            "GET",
            &s.server.url("/token?service=shoal-registry"),
            Some((USER, &format!("guess-{i}"))),
        );
        if status == 429 {
            let retry: u64 = headers["retry-after"]
                .to_str()
                .expect("Retry-After")
                .parse()
                .expect("seconds");
            assert!((1..=60).contains(&retry), "Retry-After {retry}");
        }
        statuses.push(status);
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    // The default: 10 failed logins per client per minute.
    assert_eq!((refused, throttled), (10, 90), "{statuses:?}");
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    // The right password does not get through either, until the window ends.
    let (status, _, _) = request("GET", &s.server.url("/v2/"), Some((USER, PASSWORD)));
    assert_eq!(status, 429);
    assert!(
        s.server.logged(|l| l.contains("too many failed logins")),
        "the throttle left no log line"
    );
}

/// The `RepoDigests` of an image in dockerd.
fn repo_digests(dockerd: &Dockerd, reference: &str) -> Vec<String> {
    let inspected = json(&run_ok(
        dockerd.docker().args(["image", "inspect"]).arg(reference),
    ));
    inspected[0]["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

#[test]
fn docker_logs_in_pushes_and_pulls() {
    if !(require("skopeo") && require("dockerd") && require("docker") && require_root("dockerd")) {
        return;
    }
    let s = Secured::start();
    let work = tempdir("shoal-access-docker-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "access-docker");
    let pushed = s.push(&src, "team/app:v1", Some(CREDS));
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    let dockerd = Dockerd::start();
    let host = s.host();
    let source = format!("{host}/team/app:v1");
    let refused = run(dockerd.docker().args(["pull", &source]));
    assert!(
        !refused.status.success(),
        "docker pulled without logging in"
    );

    let wrong = run(dockerd
        .docker()
        .args(["login", "-u", USER, "-p", "wrong", &host]));
    assert!(
        !wrong.status.success(),
        "docker login took a wrong password"
    );
    run_ok(
        dockerd
            .docker()
            .args(["login", "-u", USER, "-p", PASSWORD, &host]),
    );
    run_ok(dockerd.docker().args(["pull", &source]));
    assert!(
        repo_digests(&dockerd, &source)
            .contains(&format!("{host}/team/app@{}", built.manifest_digest)),
        "docker pulled another manifest"
    );

    let target = format!("{host}/docker/app:v1");
    run_ok(dockerd.docker().args(["tag", &source, &target]));
    let output =
        String::from_utf8(run_ok(dockerd.docker().args(["push", &target]))).expect("UTF-8");
    let digest = output
        .lines()
        .find_map(|l| l.split("digest: ").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push's output:\n{output}"));
    let digest = Digest::parse(digest).expect("docker push's digest");

    run_ok(dockerd.docker().args(["rmi", &source, &target]));
    run_ok(dockerd.docker().args(["pull", &target]));
    assert!(
        repo_digests(&dockerd, &target).contains(&format!("{host}/docker/app@{digest}")),
        "docker pulled back another manifest than it pushed"
    );
    // After logout, nothing more.
    run_ok(dockerd.docker().args(["rmi", &target]));
    run_ok(dockerd.docker().args(["logout", &host]));
    let refused = run(dockerd.docker().args(["pull", &target]));
    assert!(!refused.status.success(), "docker pulled after logging out");
}

#[test]
fn ctr_pulls_and_pushes_with_user() {
    if !(require("skopeo") && require("containerd") && require("ctr") && require_root("containerd"))
    {
        return;
    }
    let s = Secured::start();
    let work = tempdir("shoal-access-ctr-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "access-ctr");
    let pushed = s.push(&src, "team/app:v1", Some(CREDS));
    assert!(pushed.status.success(), "{}", stderr(&pushed));

    let containerd = Containerd::start();
    let host = s.host();
    let source = format!("{host}/team/app:v1");
    let pull = |user: Option<&str>| {
        let mut cmd = containerd.ctr();
        cmd.args(["images", "pull", "--plain-http", "--snapshotter", "native"]);
        if let Some(user) = user {
            cmd.args(["--user", user]);
        }
        run(cmd.arg(&source))
    };
    assert!(!pull(None).status.success(), "ctr pulled without --user");
    let pulled = pull(Some(CREDS));
    assert!(
        pulled.status.success(),
        "ctr --user pull: {}",
        stderr(&pulled)
    );
    let listing =
        String::from_utf8(run_ok(containerd.ctr().args(["images", "ls"]))).expect("UTF-8");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with(&source) && l.contains(built.manifest_digest.as_str())),
        "{source} with {} not in:\n{listing}",
        built.manifest_digest
    );

    let target = format!("{host}/ctr/app:v1");
    run_ok(containerd.ctr().args(["images", "tag", &source, &target]));
    let refused = run(containerd
        .ctr()
        .args(["images", "push", "--plain-http", &target]));
    assert!(!refused.status.success(), "ctr pushed without --user");
    run_ok(
        containerd
            .ctr()
            .args(["images", "push", "--plain-http", "--user", CREDS, &target]),
    );
    let out = work.path().join("out");
    let back = s.pull("ctr/app:v1", &out, Some(CREDS));
    assert!(back.status.success(), "{}", stderr(&back));
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    assert_same_blobs(&src, &out);
}
