//! A proxy in front of a test cluster, and an image pushed through a registry API (the
//! proxy's) as a client would.

use std::net::SocketAddr;

use shoal_config::ProxyConfig;
use shoal_roles::proxy;
use tokio::net::TcpListener;

use super::{Cluster, Consecutive, Node, digest_of, ip, noise};

/// Starts a proxy on 127.0.0.150 over `origins` and the cluster's build-index.
pub async fn start_proxy(cluster: &Cluster, origins: &[SocketAddr]) -> Node {
    start_proxy_with(cluster, origins, "").await
}

/// As [`start_proxy`], with `extra` YAML appended to its config.
pub async fn start_proxy_with(cluster: &Cluster, origins: &[SocketAddr], extra: &str) -> Node {
    let listener = TcpListener::bind((ip(50), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let list: Vec<String> = origins.iter().map(|a| format!("\"{a}\"")).collect();
    let mut yaml = format!(
        "build_index:\n  hosts:\n    static: [\"{}\"]\n",
        cluster.build_index.http
    );
    if !list.is_empty() {
        yaml.push_str(&format!(
            "origin:\n  hosts:\n    static: [{}]\n",
            list.join(", ")
        ));
    }
    yaml.push_str(extra);
    let config: ProxyConfig = shoal_config::load_str(&yaml, &|_| None).expect("proxy config");
    let data = cluster.dir.path().join("proxy");
    let deps = proxy::ProxyDeps {
        origin_health: Consecutive::new(2, 2),
        protect: None,
    };
    Node::spawn("proxy".into(), addr, None, async move {
        proxy::serve(&config, &data, listener, deps, std::future::pending()).await
    })
}

/// Pushes `bytes` as a blob of `repo` through the registry at `addr` (one monolithic POST).
pub async fn push_blob(
    http: &reqwest::Client,
    addr: SocketAddr,
    repo: &str,
    bytes: Vec<u8>,
) -> String {
    let d = digest_of(&bytes);
    let resp = http
        .post(format!("http://{addr}/v2/{repo}/blobs/uploads/?digest={d}"))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    d
}

/// An OCI image manifest of one config and one layer.
pub fn manifest(config: &str, config_len: usize, layer: &str, layer_len: usize) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":{config_len}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":{layer_len}}}]}}"#
    )
    .into_bytes()
}

/// Pushes an image of `repo` through the registry at `proxy`: a 3 MiB layer made from `seed`,
/// a config, and a manifest tagged `tag`. Returns the layer's digest, the layer, and the
/// manifest's digest.
pub async fn push_image(
    http: &reqwest::Client,
    proxy: SocketAddr,
    repo: &str,
    tag: &str,
    seed: u8,
) -> (String, Vec<u8>, String) {
    let layer = noise(3 << 20, seed);
    let config = format!("{{\"seed\":{seed}}}").into_bytes();
    let layer_d = push_blob(http, proxy, repo, layer.clone()).await;
    let config_d = push_blob(http, proxy, repo, config.clone()).await;
    let m = manifest(&config_d, config.len(), &layer_d, layer.len());
    let resp = http
        .put(format!("http://{proxy}/v2/{repo}/manifests/{tag}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    (layer_d, layer, digest_of(&m))
}
