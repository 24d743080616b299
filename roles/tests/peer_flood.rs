//! 2,000 connections to an agent's peer port that send one byte and stall: the agent holds
//! at most a bounded number in their handshake (each with a small frame cap), so its memory
//! barely moves and a pull through it still succeeds. The connections come from a separate
//! process (python3), which raises its own file limit; this test binary runs nothing else, so
//! the resident size it reads is the cluster's.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cluster, Spec, digest_of, noise};

const CONNECTIONS: usize = 2000;

/// This process's resident set, in bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

const FLOOD: &str = r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
held, refused = [], 0
for _ in range(n):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect((host, port))
        s.send(b"\x00")
        held.append(s)
    except OSError:
        refused += 1
        s.close()
print(f"ready {len(held)} {refused}", flush=True)
sys.stdin.read()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_strangers_on_the_peer_port_cost_little_and_pulls_go_on() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    // Warm up: one pull, so the measurement compares a running agent with itself.
    let warm = noise(1 << 20, 7);
    cluster.backend.insert(
        "team/app",
        digest_of(&warm).strip_prefix("sha256:").unwrap(),
        warm.clone(),
    );
    let (status, body) = cluster
        .get(0, &format!("/v2/team/app/blobs/{}", digest_of(&warm)))
        .await;
    assert_eq!(status, 200);
    assert_eq!(digest_of(&body), digest_of(&warm));

    let before = rss();
    let peer = cluster.agents[0].peer.unwrap();
    let mut flood = Command::new("python3")
        .args([
            "-c",
            FLOOD,
            &peer.ip().to_string(),
            &peer.port().to_string(),
        ])
        .arg(CONNECTIONS.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let stdout = flood.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    })
    .await
    .unwrap();
    assert!(line.starts_with("ready"), "flood client said {line:?}");
    let after = rss();
    let grown = after.saturating_sub(before);
    eprintln!(
        "flood: {} (connected, refused); RSS {} MB -> {} MB",
        line.trim(),
        before >> 20,
        after >> 20
    );
    assert!(
        grown < 50 << 20,
        "RSS grew by {} MB with {CONNECTIONS} stalled peer connections",
        grown >> 20
    );

    // A pull through the flooded agent still succeeds.
    let blob = noise(8 << 20, 8);
    let digest = digest_of(&blob);
    cluster
        .backend
        .insert("team/app", digest.strip_prefix("sha256:").unwrap(), blob);
    let pulled = tokio::time::timeout(
        Duration::from_secs(120),
        cluster.get(0, &format!("/v2/team/app/blobs/{digest}")),
    )
    .await
    .expect("the pull finished");
    assert_eq!(pulled.0, 200);
    assert_eq!(digest_of(&pulled.1), digest);

    let _ = flood.stdin.take().unwrap().write_all(b"");
    drop(flood.stdin.take());
    let _ = flood.kill();
    let _ = flood.wait();
}
