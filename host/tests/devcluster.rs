//! The cluster as a user runs it: `shoal devcluster` (tracker, two origins, build-index, proxy,
//! agents as separate processes from examples/devcluster/), an image pushed through the proxy
//! with skopeo and credentials, and pulled through the agents with skopeo, containerd (the
//! shipped `examples/containerd/hosts.toml`) and Docker (the shipped
//! `examples/docker/daemon.json`), each with the port of the agent it uses.
//!
//! A peer that is not installed skips its test, unless `SHOAL_REQUIRE_PEERS=1` (as in CI).

mod common;

use std::path::Path;

use common::daemons::{Containerd, Dockerd};
use common::devcluster::DevCluster;
use common::image;
use common::skopeo::{skopeo_digest_at, skopeo_pull_from, skopeo_push_to};
use common::{assert_same_blobs, json, require, require_root, run, run_ok, tempdir};

/// The shipped containerd hosts.toml, pointed at `agent` instead of 127.0.0.1:16000, written
/// for `host` under `hosts_dir`.
fn hosts_toml(hosts_dir: &Path, host: &str, agent: &str) {
    let shipped = include_str!("../../examples/containerd/hosts.toml");
    assert!(shipped.contains("127.0.0.1:16000"), "the example moved");
    let dir = hosts_dir.join(host);
    std::fs::create_dir_all(&dir).expect("creating the hosts dir");
    std::fs::write(
        dir.join("hosts.toml"),
        shipped.replace("127.0.0.1:16000", agent),
    )
    .expect("writing hosts.toml");
}

fn ctr_pull(containerd: &Containerd, hosts_dir: &Path, reference: &str) {
    run_ok(
        containerd
            .ctr()
            .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
            .arg(hosts_dir)
            .arg(reference),
    );
}

#[test]
fn an_image_pushed_through_the_proxy_is_pulled_identically_through_every_agent_and_client() {
    if !(require("skopeo")
        && require("containerd")
        && require("ctr")
        && require("dockerd")
        && require("docker")
        && require_root("containerd and dockerd"))
    {
        return;
    }
    let cluster = DevCluster::start(2, 2);
    let proxy = cluster.addr("proxy-1");
    let work = tempdir("shoal-devcluster-e2e-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "devcluster-e2e");

    // No credentials: refused, with the challenge that makes clients log in.
    let refused = run(&mut skopeo_push_to(
        &proxy,
        &src,
        "v1",
        "shoaltest/app:v1",
        None,
    ));
    assert!(!refused.status.success(), "an anonymous push was accepted");
    let (status, headers, _) = common::http::http(
        "POST",
        &format!("http://{proxy}/v2/shoaltest/app/blobs/uploads/"),
        "*/*",
    );
    assert_eq!(status, 401, "anonymous upload start");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm="),
        "WWW-Authenticate: {challenge:?}"
    );

    run_ok(&mut skopeo_push_to(
        &proxy,
        &src,
        "v1",
        "shoaltest/app:v1",
        Some(&cluster.creds()),
    ));

    // skopeo through both agents: the same manifest, the same bytes.
    for agent in ["agent-1", "agent-2"] {
        let out = work.path().join(agent);
        skopeo_pull_from(&cluster.addr(agent), "shoaltest/app:v1", &out, "v1");
        assert_eq!(
            image::layout_digest_for_tag(&out, "v1"),
            built.manifest_digest,
            "{agent}"
        );
        assert_same_blobs(&src, &out);
    }

    // containerd through agent-1 with the shipped hosts.toml (no internet fallback).
    let containerd = Containerd::start();
    let hosts_dir = containerd.dir().join("certs.d");
    hosts_toml(&hosts_dir, "docker.io", &cluster.addr("agent-1"));
    ctr_pull(&containerd, &hosts_dir, "docker.io/shoaltest/app:v1");
    assert_eq!(
        containerd.image_digest("docker.io/shoaltest/app:v1"),
        built.manifest_digest.as_str()
    );

    // Docker through agent-2 with the shipped daemon.json: a Docker Hub name goes to the mirror.
    let daemon_json = include_str!("../../examples/docker/daemon.json")
        .replace("127.0.0.1:16000", &cluster.addr("agent-2"));
    let dockerd = Dockerd::start_with(&daemon_json);
    run_ok(dockerd.docker().args(["pull", "shoaltest/app:v1"]));
    let inspected = json(&run_ok(dockerd.docker().args([
        "image",
        "inspect",
        "shoaltest/app:v1",
    ])));
    assert_eq!(
        inspected[0]["Id"].as_str().unwrap_or_default(),
        built.config_digest.as_str(),
        "docker's image is not the pushed one"
    );
    let repo_digests = inspected[0]["RepoDigests"].to_string();
    assert!(
        repo_digests.contains(built.manifest_digest.as_str()),
        "RepoDigests {repo_digests} lacks {}",
        built.manifest_digest
    );
}

#[test]
fn a_tag_pushed_again_is_served_with_its_new_digest_at_every_agent() {
    if !require("skopeo") {
        return;
    }
    let cluster = DevCluster::start(2, 1);
    let proxy = cluster.addr("proxy-1");
    let creds = cluster.creds();
    let work = tempdir("shoal-devcluster-fresh-");
    let first = image::write_image_layout(&work.path().join("a"), "latest", "fresh-a");
    let second = image::write_image_layout(&work.path().join("b"), "latest", "fresh-b");
    assert_ne!(first.manifest_digest, second.manifest_digest);

    run_ok(&mut skopeo_push_to(
        &proxy,
        &work.path().join("a"),
        "latest",
        "team/app:latest",
        Some(&creds),
    ));
    for agent in ["agent-1", "agent-2"] {
        assert_eq!(
            skopeo_digest_at(&cluster.addr(agent), "team/app:latest"),
            first.manifest_digest.as_str(),
            "{agent} before the second push"
        );
    }
    run_ok(&mut skopeo_push_to(
        &proxy,
        &work.path().join("b"),
        "latest",
        "team/app:latest",
        Some(&creds),
    ));
    // No waiting: the very next request at each agent resolves the tag at the build-index.
    for agent in ["agent-1", "agent-2"] {
        assert_eq!(
            skopeo_digest_at(&cluster.addr(agent), "team/app:latest"),
            second.manifest_digest.as_str(),
            "{agent} after the second push"
        );
    }
    // The old image is still there by digest: digests are immutable.
    let pinned = format!("team/app@{}", first.manifest_digest);
    assert_eq!(
        skopeo_digest_at(&cluster.addr("agent-1"), &pinned),
        first.manifest_digest.as_str()
    );

    // A tag deleted through the proxy (with credentials) is gone at every agent.
    let http = reqwest::blocking::Client::new();
    let (user, password) = cluster.credentials.clone().expect("credentials");
    let url = format!("http://{proxy}/v2/team/app/manifests/latest");
    let anonymous = http.delete(&url).send().expect("DELETE");
    assert_eq!(anonymous.status().as_u16(), 401, "an anonymous delete");
    let deleted = http
        .delete(&url)
        .basic_auth(user, Some(password))
        .send()
        .expect("DELETE");
    assert_eq!(deleted.status().as_u16(), 202, "{:?}", deleted.text());
    for agent in ["agent-1", "agent-2"] {
        let resp = http
            .get(format!(
                "http://{}/v2/team/app/manifests/latest",
                cluster.addr(agent)
            ))
            .header("accept", common::http::ACCEPT_MANIFESTS)
            .send()
            .expect("GET");
        assert_eq!(resp.status().as_u16(), 404, "{agent} after the delete");
    }
}

#[test]
fn one_agent_mirrors_two_upstream_hosts_with_the_same_path() {
    if !(require("skopeo") && require("containerd") && require("ctr") && require_root("containerd"))
    {
        return;
    }
    let cluster = DevCluster::start(1, 1);
    let proxy = cluster.addr("proxy-1");
    let creds = cluster.creds();
    let work = tempdir("shoal-devcluster-ns-");
    let hub = image::write_image_layout(&work.path().join("hub"), "v1", "ns-docker-io");
    let ghcr = image::write_image_layout(&work.path().join("ghcr"), "v1", "ns-ghcr-io");
    // The agent's default mapping: docker.io names as they are, other hosts as `<host>/<path>`.
    run_ok(&mut skopeo_push_to(
        &proxy,
        &work.path().join("hub"),
        "v1",
        "org/app:v1",
        Some(&creds),
    ));
    run_ok(&mut skopeo_push_to(
        &proxy,
        &work.path().join("ghcr"),
        "v1",
        "ghcr.io/org/app:v1",
        Some(&creds),
    ));

    let containerd = Containerd::start();
    let hosts_dir = containerd.dir().join("certs.d");
    let agent = cluster.addr("agent-1");
    hosts_toml(&hosts_dir, "docker.io", &agent);
    hosts_toml(&hosts_dir, "ghcr.io", &agent);
    ctr_pull(&containerd, &hosts_dir, "docker.io/org/app:v1");
    ctr_pull(&containerd, &hosts_dir, "ghcr.io/org/app:v1");
    assert_eq!(
        containerd.image_digest("docker.io/org/app:v1"),
        hub.manifest_digest.as_str()
    );
    assert_eq!(
        containerd.image_digest("ghcr.io/org/app:v1"),
        ghcr.manifest_digest.as_str()
    );
    // A host the agent holds nothing for fails (containerd then tries `server`, a closed
    // local port here), instead of being answered with another registry's image.
    hosts_toml(&hosts_dir, "quay.io", &agent);
    let out = run(containerd
        .ctr()
        .args(["images", "pull", "--snapshotter", "native", "--hosts-dir"])
        .arg(&hosts_dir)
        .arg("quay.io/org/app:v1"));
    assert!(
        !out.status.success(),
        "quay.io/org/app:v1 was pulled from somewhere"
    );
}

/// Whether process `pid` still exists (a zombie counts as gone: it no longer runs).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn ctrl_c_stops_every_process_and_a_killed_one_is_restarted() {
    let mut cluster = DevCluster::start(1, 1);
    // A member that dies is started again, on the same address.
    let before = cluster.pid("build-index-1");
    cluster.signal("build-index-1", "KILL");
    let url = format!("http://{}/health", cluster.addr("build-index-1"));
    let restarted = common::poll_until(std::time::Duration::from_secs(60), || {
        cluster.pid("build-index-1") != before
            && reqwest::blocking::get(&url).is_ok_and(|r| r.status().is_success())
    });
    assert!(restarted, "build-index-1 was not restarted");

    let pids: Vec<(String, u32)> = cluster
        .members
        .keys()
        .map(|name| (name.clone(), cluster.pid(name)))
        .collect();
    let status = cluster
        .interrupt()
        .expect("devcluster did not exit after SIGINT");
    assert!(status.success(), "devcluster exited with {status}");
    for (name, pid) in pids {
        assert!(
            !alive(pid),
            "{name} (pid {pid}) still runs after the devcluster stopped"
        );
    }
}
