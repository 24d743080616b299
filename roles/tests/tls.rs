//! A cluster that speaks TLS everywhere, from one test CA: every HTTP port serves `server.tls`
//! (origins, tracker and build-index require client certificates), every role calls the
//! others with `client_tls`, and peers trade pieces over `peer.tls`. A tag resolves and a
//! layer reaches every agent; a client without a certificate from the CA, or speaking plain
//! HTTP, is refused by every role port.

mod common;

use common::images::image_manifest;
use common::{Cluster, Spec, digest_of, noise};

const NS: &str = "team/app";

/// A client trusting `ca` that presents `identity` (certificate and key) when given.
fn https_client(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> reqwest::Client {
    let config =
        shoal_p2p::tls::client_config(ca, identity.map(|i| i.0), identity.map(|i| i.1)).unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_speaking_tls_everywhere_serves_pulls_and_refuses_strangers() {
    let cluster = Cluster::start(Spec {
        agents: 2,
        tls: true,
        ..Spec::default()
    })
    .await;

    // A layer pushed to its owner over HTTPS, and an image whose tag the build-index answers.
    let layer = noise(6 << 20, 7);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = image_manifest(&config, &layer);
    let layer_digest = cluster.push_to_owner(NS, layer.clone()).await;
    cluster.push_to_owner(NS, config.clone()).await;
    let manifest_digest = cluster.push_to_owner(NS, manifest.clone()).await;
    cluster
        .backend
        .insert(NS, &format!("{NS}:v1"), manifest_digest.clone());

    // Every agent resolves the tag at the build-index and gets the manifest over P2P.
    for i in 0..cluster.agents.len() {
        let (status, body) = cluster.get(i, &format!("/v2/{NS}/manifests/v1")).await;
        assert_eq!(status, 200, "agent{i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(digest_of(&body), manifest_digest, "agent{i}");
    }
    // And the layer, from the origins and each other, over TLS.
    let pulled = cluster
        .pull_everywhere(NS, &layer_digest)
        .await
        .expect("pulls");
    for (i, got) in pulled.into_iter().enumerate() {
        assert_eq!(got, Ok(layer_digest.clone()), "agent{i}");
    }
    let mut received = 0;
    for agent in &cluster.agents {
        received += cluster
            .metric(agent, "shoal_p2p_piece_bytes_received_total ")
            .await
            .expect("an agent's piece counter");
    }
    assert!(
        received >= 2 * layer.len() as u64,
        "the agents received {received} piece bytes over P2P"
    );

    // Strangers: no client certificate, a certificate from another CA, or plain HTTP.
    let dir = tempfile::tempdir().unwrap();
    let cluster_ca = cluster.dir.path().join("cluster-ca.crt");
    let other = shoal_p2p::testing::TestCa::new(dir.path(), "other");
    let (other_cert, other_key) = other.issue("stranger");
    let anonymous = https_client(&cluster_ca, None);
    let impostor = https_client(&cluster_ca, Some((&other_cert, &other_key)));
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let role_ports = [
        ("tracker", cluster.trackers[0].http),
        ("origin", cluster.origins[0].http),
        ("build-index", cluster.build_index.http),
    ];
    for (name, addr) in role_ports {
        let url = format!("https://{addr}/health");
        let ok = cluster
            .http
            .get(&url)
            .send()
            .await
            .expect("with the CA's certificate");
        assert_eq!(ok.status(), 200, "{name} refused the cluster's certificate");
        for (who, client) in [("no certificate", &anonymous), ("another CA", &impostor)] {
            let refused = client.get(&url).send().await;
            assert!(
                refused.is_err(),
                "{name} answered a client with {who}: {:?}",
                refused.map(|r| r.status())
            );
        }
        let text = plain
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .expect("plain HTTP gets an answer");
        assert_eq!(text.status(), 400, "{name} over plain HTTP");
        assert!(
            text.text().await.unwrap().contains("TLS"),
            "{name}: the refusal does not say the port speaks TLS"
        );
    }
    // The agent's registry port serves TLS without asking for a client certificate, as
    // containerd and docker connect to it.
    let agent = cluster.agents[0].http;
    let v2 = anonymous
        .get(format!("https://{agent}/v2/"))
        .send()
        .await
        .expect("the agent serves TLS clients without certificates");
    assert_eq!(v2.status(), 200);
}
