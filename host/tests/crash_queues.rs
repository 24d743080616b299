//! Crash safety of the origin's and the build-index's queues, with real processes and real
//! `kill -9` (SIGKILL): whatever a role acknowledged (a pushed blob's write-back to the `fs`
//! backend and its copy on the other ring member; a tag's copy at the remote build-index) is
//! there after the killed process is started again on the same data directory.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cluster::{Cluster, Node, Spec};
use common::image::noise;
use common::poll_until;
use sha2::Digest as _;

const NS: &str = "team/app";

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn blob_url(origin: &Node, hex: &str) -> String {
    format!(
        "http://{}/namespace/team%2Fapp/blobs/sha256:{hex}",
        origin.http
    )
}

/// Files in `dir` (none when it does not exist).
fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |rd| rd.count())
}

/// Files under `dir` whose name ends with `.tmp`, recursively.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(leftovers(&p));
        } else if p.to_string_lossy().ends_with(".tmp") {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn an_origin_killed_during_a_push_loses_nothing_it_acknowledged() {
    let cluster = Cluster::start(Spec {
        origins: 2,
        agents: 0,
        max_replica: 2,
        ..Spec::default()
    });
    let (pusher, member) = (&cluster.origins[0], &cluster.origins[1]);
    // The other member is down: the copies of what `pusher` acknowledges wait on its disk.
    member.kill();
    let http = client();
    let mut acked: Vec<(String, usize)> = Vec::new();
    for i in 0..4 {
        let bytes = noise(&format!("crash-{i}"), 1 << 20);
        let hex = sha256(&bytes);
        let resp = http.put(blob_url(pusher, &hex)).body(bytes).send().unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text());
        acked.push((hex, 1 << 20));
    }

    // A large push, killed while the origin is storing it.
    let big = noise("crash-big", 96 << 20);
    let big_hex = sha256(&big);
    let url = blob_url(pusher, &big_hex);
    let in_flight = std::thread::spawn(move || {
        client()
            .put(url)
            .body(big)
            .send()
            .map(|r| r.status().as_u16())
    });
    let store = pusher.data.join("store");
    let storing = poll_until(Duration::from_secs(60), || {
        !leftovers(&store.join("download")).is_empty()
    });
    assert!(storing, "the large push never started");
    pusher.kill();
    match in_flight.join().unwrap() {
        // It made it before the kill: acknowledged, so it must be kept too.
        Ok(201) => {
            eprintln!("the large push was acknowledged before the kill");
            acked.push((big_hex, 96 << 20));
        }
        Ok(status) => panic!("the push in flight answered {status}"),
        Err(e) => eprintln!("the large push was cut off by the kill: {e}"),
    }
    let pending = store.join("queue").join("pending");
    assert!(
        count_files(&pending) >= 4,
        "{} job files in {}: the copies to the dead member are not on disk",
        count_files(&pending),
        pending.display()
    );

    member.start();
    pusher.start();
    let http = client();
    for (hex, len) in &acked {
        let in_backend = cluster.backend.join(hex);
        let kept = poll_until(Duration::from_secs(60), || {
            std::fs::metadata(&in_backend).is_ok_and(|m| m.len() == *len as u64)
                && http
                    .head(format!("{}?local=true", blob_url(member, hex)))
                    .send()
                    .is_ok_and(|r| r.status().as_u16() == 200)
        });
        assert!(
            kept,
            "sha256:{hex} was acknowledged but is not in the backend and on the other member"
        );
        let stored = std::fs::read(&in_backend).unwrap();
        assert_eq!(&sha256(&stored), hex, "the backend holds other bytes");
    }
    assert!(
        poll_until(Duration::from_secs(30), || count_files(&pending) == 0),
        "job files stayed in {}",
        pending.display()
    );
    // The push cut short left nothing half-written behind.
    assert_eq!(leftovers(&store), Vec::<String>::new());
}

#[test]
fn a_build_index_killed_during_replication_loses_no_tag() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 0,
        max_replica: 1,
        build_index: true,
        remote_build_index: true,
        ..Spec::default()
    });
    let index = cluster.build_index.as_ref().unwrap();
    let remote = cluster.remote.as_ref().unwrap();
    // The remote is down: every copy is retried, and still queued when the index is killed.
    remote.kill();
    let http = client();
    let mut tags = Vec::new();
    for i in 0..5 {
        let digest = format!("sha256:{}", sha256(format!("image-{i}").as_bytes()));
        let url = format!(
            "http://{}/tags/team%2Fapp%3Av{i}/digest/{digest}",
            index.http
        );
        let resp = http.put(url).send().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text());
        tags.push((format!("v{i}"), digest));
    }
    let pending = index.data.join("queue").join("pending");
    assert_eq!(count_files(&pending), 5, "in {}", pending.display());
    index.kill();

    remote.start();
    index.start();
    for (tag, digest) in &tags {
        // The `fs` backend's default layout: the tag object is `<root>/<repo>:<tag>`.
        let copy = cluster.remote_backend.join(format!("{NS}:{tag}"));
        let arrived = poll_until(Duration::from_secs(60), || {
            std::fs::read_to_string(&copy).is_ok_and(|d| d.trim() == digest)
        });
        assert!(
            arrived,
            "{NS}:{tag} never reached the remote ({})",
            copy.display()
        );
        // And the remote serves it.
        let url = format!("http://{}/tags/team%2Fapp%3A{tag}", remote.http);
        assert_eq!(http.get(url).send().unwrap().text().unwrap(), *digest);
    }
    assert!(
        poll_until(Duration::from_secs(30), || count_files(&pending) == 0),
        "job files stayed in {}",
        pending.display()
    );
}
