//! `shoal preload` as an operator runs it, against a cluster of separate `shoal` processes (a
//! tracker, two origins, a build-index, three agents) holding an image of three layers pushed
//! through `shoal dev` over the same backend folder: with stdout not a terminal it prints plain
//! progress lines per agent, a final line per agent and exits 0, and the pulls that follow send
//! nothing to the origins; with one agent address that refuses connections it exits 1 and names
//! that agent and why, while the other agent still completes.

mod common;

use std::net::{Ipv4Addr, TcpListener};
use std::process::{Command, Output};

use common::cluster::{Cluster, Spec, get};
use common::http::push_over_http;
use common::image::{self, Digest};
use common::{DevServer, block_on};

fn shoal_preload(image: &str, agents: &str) -> (Output, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["preload", image, "--agents", agents])
        .output()
        .expect("running shoal preload");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    // Shown when the test fails.
    println!("$ shoal preload {image} --agents {agents}\n{stdout}{stderr}");
    (out, stdout, stderr)
}

/// An address on which nothing listens: a port the kernel handed out, closed again.
fn refusing_address() -> String {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr.to_string()
}

#[test]
fn shoal_preload_shows_each_agents_progress_and_names_an_agent_that_failed() {
    let cluster = Cluster::start(Spec {
        origins: 2,
        agents: 3,
        build_index: true,
        ..Spec::default()
    });
    let work = common::tempdir("shoal-preload-");
    let layout = work.path().join("layout");
    let built = image::write_image_layout(&layout, "v1", "preload");
    assert_eq!(built.layer_digests.len(), 3);
    let dev_config = work.path().join("dev.yaml");
    std::fs::write(
        &dev_config,
        format!(
            "backends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
            cluster.backend.display()
        ),
    )
    .unwrap();
    let dev = DevServer::start_with_config(&work.path().join("dev"), &dev_config);
    block_on(push_over_http(
        &reqwest::Client::new(),
        &dev,
        "team/app",
        "v1",
        &layout,
        &built,
    ));
    dev.stop();

    let agents: Vec<String> = cluster.agents.iter().map(|a| a.http.to_string()).collect();
    let (out, stdout, stderr) = shoal_preload("team/app:v1", &agents.join(","));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        !stdout.contains('\x1b'),
        "escape codes off a terminal:\n{stdout}"
    );
    for a in &agents {
        // The plain progress line as the image resolves, and the agent's last line.
        assert!(
            stdout.contains(&format!("agent {a}: 0/4 blobs, 0 B/")),
            "no progress line for {a}:\n{stdout}"
        );
        assert!(
            stdout.contains(&format!("agent {a}: done, 4/4 blobs")),
            "{a} did not finish:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("preloaded team/app:v1 onto 3 agents"),
        "{stdout}"
    );

    // Every blob and the manifest through every agent: nothing more from the origins, and
    // no piece more into any agent.
    let origins_sent = || cluster.origins.iter().map(|o| o.sent()).collect::<Vec<_>>();
    let agents_received = || {
        cluster
            .agents
            .iter()
            .map(|a| a.received())
            .collect::<Vec<_>>()
    };
    let (sent, received) = (origins_sent(), agents_received());
    for a in &agents {
        let (status, body) =
            get(&format!("http://{a}/v2/team/app/manifests/v1")).expect("GET the manifest");
        assert_eq!(status, 200, "{a}: {}", String::from_utf8_lossy(&body));
        assert_eq!(Digest::of(&body), built.manifest_digest, "{a}");
        for d in std::iter::once(&built.config_digest).chain(&built.layer_digests) {
            let (status, body) =
                get(&format!("http://{a}/v2/team/app/blobs/{d}")).expect("GET a blob");
            assert_eq!((status, Digest::of(&body)), (200, d.clone()), "{a}");
        }
    }
    assert_eq!(
        origins_sent(),
        sent,
        "the origins sent pieces for the pulls"
    );
    assert_eq!(
        agents_received(),
        received,
        "the agents fetched pieces for the pulls"
    );

    // One agent refuses connections: exit 1, naming it and why; the other one is done (and
    // had everything already).
    let dead = refusing_address();
    let (out, stdout, stderr) = shoal_preload("team/app:v1", &format!("{},{dead}", agents[0]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("agent {}: done, 4/4 blobs", agents[0]))
            && stdout.contains("(0 fetched, 4 already there)"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("agent {dead}: failed: "))
            && stdout.contains("Connection refused"),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "preloading team/app:v1 failed on 1 of 2 agents: {dead}"
        )),
        "{stderr}"
    );

    // An image no agent knows: each agent's 404 with its OCI code and message.
    let (out, stdout, _) = shoal_preload("team/app:nope", &agents[0]);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "agent {}: failed: 404 Not Found: MANIFEST_UNKNOWN",
            agents[0]
        )),
        "{stdout}"
    );
}
