//! The P2P roles as separate `shoal` processes on their own 127.0.0.x addresses, pulled by a
//! real OCI client: what the CLI and real clients need that the in-process cluster tests of
//! `shoal-roles` (`roles/tests/`: fan-out, a killed origin, a dead tracker, a corrupt peer)
//! cannot show.

mod common;

use common::cluster::{Cluster, Spec};
use common::skopeo::{skopeo, skopeo_push};
use common::{DevServer, assert_same_blobs, image, require, run_ok};

/// What users run: skopeo pushes an image into the backend (through `shoal dev` over the same
/// folder), then pulls it by tag from each agent: the tag from the build-index, the manifest
/// and layers over P2P.
#[test]
fn skopeo_pulls_an_image_by_tag_through_every_agent() {
    if !require("skopeo") {
        return;
    }
    let cluster = Cluster::start(Spec {
        origins: 2,
        agents: 3,
        build_index: true,
        ..Spec::default()
    });
    let work = common::tempdir("shoal-p2p-image-");
    let layout = work.path().join("layout");
    let built = image::write_image_layout(&layout, "v1", "p2p");
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
    skopeo_push(&dev, &layout, "v1", "team/app:v1", false);
    dev.stop();
    for agent in &cluster.agents {
        let out = work.path().join(format!("pulled-{}", agent.name));
        run_ok(
            skopeo()
                .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
                .arg(format!("docker://{}/team/app:v1", agent.http))
                .arg(format!("oci:{}:v1", out.display())),
        );
        assert_same_blobs(&layout, &out);
        assert_eq!(
            image::layout_digest_for_tag(&out, "v1"),
            built.manifest_digest,
            "{}",
            agent.name
        );
    }
    // Pushing to an agent is refused: it is read-only.
    let status = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/team/other:v1", cluster.agents[0].http))
        .output()
        .unwrap();
    assert!(!status.status.success(), "an agent accepted a push");
    let received: u64 = cluster.agents.iter().map(|a| a.received()).sum();
    assert!(received > 0, "the agents received nothing over P2P");
}
