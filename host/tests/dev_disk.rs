//! `shoal dev` and its disk: upload sessions a `kill -9` abandoned are purged, a full disk is
//! reported as full (natively and through the `fs` plugin) and the server keeps serving, each
//! blob is stored once, and requests whose framing is ambiguous are refused. Also the `--listen`
//! forms an operator types.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{DevServer, error_of, poll_until, send_signal, tempdir};
use sha2::{Digest as _, Sha256};

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// Pushes `data` in one request (`POST ?digest=`); returns the status and the body.
fn push(server: &DevServer, repo: &str, data: &[u8]) -> (u16, Vec<u8>) {
    let url = server.url(&format!(
        "/v2/{repo}/blobs/uploads/?digest={}",
        digest_of(data)
    ));
    let r = client().post(url).body(data.to_vec()).send().unwrap();
    (r.status().as_u16(), r.bytes().unwrap().to_vec())
}

/// Starts an upload session; returns its path (`/v2/<repo>/blobs/uploads/<id>`).
fn start_upload(server: &DevServer, repo: &str) -> String {
    let r = client()
        .post(server.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// Sends raw bytes on a new connection and returns everything the server answers until it
/// closes the connection or 10 s pass.
fn raw_exchange(server: &DevServer, request: &[u8]) -> String {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("dev.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Bytes allocated on disk under `dir`, each inode counted once (as `du` does).
fn allocated(dir: &Path) -> u64 {
    fn walk(dir: &Path, seen: &mut HashSet<(u64, u64)>, total: &mut u64) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                walk(&entry.path(), seen, total);
            } else if seen.insert((meta.dev(), meta.ino())) {
                *total += meta.blocks() * 512;
            }
        }
    }
    let (mut seen, mut total) = (HashSet::new(), 0);
    walk(dir, &mut seen, &mut total);
    total
}

/// A small tmpfs, unmounted on drop. `None` (the test skips) unless the tests run as root;
/// with `SHOAL_REQUIRE_PEERS=1` (CI runs as root) not being root fails.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        if !common::require_root("mounting a small tmpfs") {
            return None;
        }
        let dir = tempdir("shoal-small-disk-");
        common::run_ok(
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
        );
        Some(SmallDisk(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn an_upload_abandoned_by_kill_9_is_purged_once_older_than_max_age() {
    let data = tempdir("shoal-uploads-");
    let config = write_config(data.path(), "uploads:\n  max_age: 1s\n  interval: 1s\n");
    let server = DevServer::start_with_config(data.path(), &config);
    let loc = start_upload(&server, "team/app");
    let id = loc.rsplit('/').next().unwrap().to_owned();
    let session = data.path().join("cache/uploads").join(&id);
    // A monolithic PUT that announces 10 MiB and stops after 3 MiB; then the server dies.
    let mut s = TcpStream::connect(server.addr()).unwrap();
    let head = format!(
        "PUT {loc}?digest={} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        digest_of(b"never finished"),
        10 << 20
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![7u8; 3 << 20]).unwrap();
    let data_file = session.join("data");
    assert!(
        poll_until(Duration::from_secs(30), || std::fs::metadata(&data_file)
            .is_ok_and(|m| m.len() >= 1 << 20)),
        "the PUT's bytes reach the session file"
    );
    send_signal(server.pid(), "KILL");
    drop(server);
    drop(s);
    assert!(data_file.exists(), "kill -9 leaves the bytes behind");

    let server = DevServer::start_with_config(data.path(), &config);
    assert!(
        poll_until(Duration::from_secs(30), || !session.exists()),
        "the abandoned session is purged"
    );
    // The purge removes the directory before it logs what it freed: wait for the line too.
    assert!(
        server.logged(|l| l.contains("purged abandoned upload sessions")),
        "{:?}",
        server.log()
    );
    // The session is gone for the client too.
    let r = client().get(server.url(&loc)).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    server.stop();
}

#[test]
fn listen_takes_localhost_and_a_bare_port() {
    let server = DevServer::start_listening("localhost:0");
    assert_eq!(server.addr().ip().to_string(), "127.0.0.1");
    assert_eq!(
        client()
            .get(server.url("/v2/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    server.stop();
    let server = DevServer::start_listening(":0");
    assert_eq!(server.addr().ip().to_string(), "0.0.0.0");
    let local = format!("http://127.0.0.1:{}/v2/", server.addr().port());
    assert_eq!(client().get(local).send().unwrap().status().as_u16(), 200);
    server.stop();
}

#[test]
fn requests_with_ambiguous_body_framing_are_refused() {
    let server = DevServer::start();
    let loc = start_upload(&server, "a");
    // Content-Length and Transfer-Encoding together, with a second request hidden in the body
    // for whoever trusts the length.
    let smuggled = "GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n";
    let both = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
        5 + smuggled.len()
    );
    let answer = raw_exchange(&server, both.as_bytes());
    // hyper settles this itself, before the registry sees the request: it drops the length,
    // reads the body as chunked (RFC 9112 6.3) and closes the connection after answering, so
    // the hidden request is never served. (The registry refuses both headers with a 400 when
    // they reach it: registry/tests/uploads.rs.)
    assert_eq!(
        answer.matches("HTTP/1.1").count(),
        1,
        "one answer only: {answer}"
    );
    assert!(answer.contains("connection: close"), "{answer}");
    assert!(
        !answer.contains("repositories"),
        "the hidden request was served: {answer}"
    );
    // A coding before chunked.
    let gzip = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(&server, gzip.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Nothing reached the session; plain chunked still works.
    let plain = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    );
    let answer = raw_exchange(&server, plain.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("range: 0-2"),
        "{answer}"
    );
    server.stop();
}

#[test]
fn default_dev_keeps_one_copy_of_each_blob() {
    let server = DevServer::start();
    let before = allocated(server.data_dir());
    // 20 MiB in four layers, of bytes that do not compress (no file system here compresses,
    // but a sparse or deduplicated file would hide a second copy).
    let mut total = 0u64;
    let mut digests = Vec::new();
    for i in 0..4u8 {
        let mut layer = vec![0u8; 5 << 20];
        let mut x = 0x9e37_79b9_u32.wrapping_mul(u32::from(i) + 1);
        for b in layer.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        let (status, body) = push(&server, "team/app", &layer);
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        total += layer.len() as u64;
        digests.push(digest_of(&layer));
    }
    let used = allocated(server.data_dir()) - before;
    eprintln!(
        "pushed {total} bytes; the data directory grew by {used} bytes ({:.2}x)",
        used as f64 / total as f64
    );
    // One copy plus metadata (links, the plugin cache is there before the push).
    assert!(
        used < total + total / 4,
        "the data directory grew by {used} bytes for {total} bytes pushed: more than one copy"
    );
    // And the backend still holds every blob, under its own name.
    for d in &digests {
        let hex = d.trim_start_matches("sha256:");
        let backend = server.data_dir().join("backend").join(hex);
        let cache = server
            .data_dir()
            .join("cache/blobs/sha256")
            .join(&hex[..2])
            .join(hex);
        let (b, c) = (
            std::fs::metadata(&backend).unwrap(),
            std::fs::metadata(&cache).unwrap(),
        );
        assert_eq!((b.ino(), b.len()), (c.ino(), c.len()), "{d}");
    }
    server.stop();
}

#[test]
fn a_full_data_disk_is_reported_as_full_and_pushes_resume_after() {
    // Room for the plugin cache shoal dev writes at start, not for the blob.
    let Some(disk) = SmallDisk::mount("16m") else {
        return;
    };
    let server = DevServer::start_in(disk.path());
    let big = vec![1u8; 20 << 20];
    let (status, body) = push(&server, "a", &big);
    let (code, message) = error_of(&body);
    assert_eq!((status, code.as_str()), (507, "UNKNOWN"), "{message}");
    assert!(message.contains("disk is full"), "{message}");
    // The failed push left nothing behind: a blob that fits goes in.
    let small = vec![2u8; 1 << 20];
    let (status, body) = push(&server, "a", &small);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    server.stop();
}

#[test]
fn a_full_fs_backend_disk_is_reported_as_full_through_the_plugin() {
    let Some(disk) = SmallDisk::mount("2m") else {
        return;
    };
    // The cache on an ordinary disk, the fs backend on the small one: the blob cannot be
    // linked across file systems, so the plugin writes it and runs out of room.
    let data = tempdir("shoal-fs-full-");
    let config = write_config(
        data.path(),
        &format!(
            "backends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
            disk.path().display()
        ),
    );
    let server = DevServer::start_with_config(data.path(), &config);
    let big = vec![3u8; 3 << 20];
    let (status, body) = push(&server, "a", &big);
    let (_, message) = error_of(&body);
    assert!(status >= 500, "{status} {message}");
    assert!(message.contains("disk is full"), "{message}");
    assert!(!message.contains("os error 29"), "{message}");
    // The plugin removed its partial file: a blob that fits goes through.
    let small = vec![4u8; 512 << 10];
    let (status, body) = push(&server, "a", &small);
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    server.stop();
}
