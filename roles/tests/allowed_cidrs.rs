//! An agent's `allowed_cidrs`: clients outside them get 403 `DENIED` on the registry port.

mod common;

use std::time::Duration;

use shoal_config::AgentConfig;
use shoal_roles::agent;
use tokio::net::TcpListener;

/// An agent on 127.0.0.1 whose `allowed_cidrs` is `cidrs`; its registry address.
async fn agent_allowing(dir: &std::path::Path, cidrs: &str) -> std::net::SocketAddr {
    let registry = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = registry.local_addr().unwrap();
    let yaml = format!(
        "registry:\n  listen: \"{addr}\"\npeer:\n  listen: \"{}\"\nallowed_cidrs: {cidrs}\n\
         tracker:\n  hosts:\n    static: [\"127.0.0.1:1\"]\nbuild_index:\n  hosts:\n    static: [\"127.0.0.1:1\"]\n",
        peer.local_addr().unwrap()
    );
    let cfg: AgentConfig = shoal_config::load_str(&yaml, &|_| None)
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"));
    let data = dir.to_owned();
    let deps = agent::AgentDeps {
        tracker_health: common::Consecutive::new(2, 1),
    };
    tokio::spawn(async move {
        let listeners = agent::AgentListeners {
            registry,
            peer,
            metrics: None,
        };
        agent::serve(&cfg, &data, listeners, deps, std::future::pending()).await
    });
    addr
}

async fn get_v2(addr: std::net::SocketAddr) -> (u16, String) {
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match http.get(format!("http://{addr}/v2/")).send().await {
            Ok(r) => return (r.status().as_u16(), r.text().await.unwrap_or_default()),
            Err(e) if tokio::time::Instant::now() > deadline => panic!("no answer: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn a_client_outside_allowed_cidrs_is_denied_and_one_inside_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let outside = agent_allowing(&dir.path().join("a"), "[10.0.0.0/8]").await;
    let (status, body) = get_v2(outside).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""code":"DENIED""#), "{body}");
    let inside = agent_allowing(&dir.path().join("b"), "[10.0.0.0/8, 127.0.0.0/8]").await;
    let (status, body) = get_v2(inside).await;
    assert_eq!(status, 200, "{body}");
}
