//! Every role as a process started from its YAML, for the keys every role has: `log.format:
//! json` makes each line it writes JSON; `metrics.listen` serves `/metrics` there and nothing
//! else; each listen key (`listen`, `registry.listen`, `peer.listen`) is where the role binds,
//! and a taken port fails the start naming the key; `store.root` and `data_dir` are where the
//! files go.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

const TRACKER: &str = "tracker:\n  hosts:\n    static: [127.0.0.1:9]\n";

/// The YAML of `role` with its listen keys on `port` (0 for any), JSON logs, and metrics on
/// their own port.
fn config(role: &str, port: u16) -> String {
    let json = "log:\n  format: json\nmetrics:\n  listen: 127.0.0.1:0\n";
    match role {
        "agent" => format!(
            "registry:\n  listen: 127.0.0.1:{port}\npeer:\n  listen: 127.0.0.1:{port}\n{TRACKER}\
             build_index:\n  hosts:\n    static: [127.0.0.1:9]\n{json}"
        ),
        "origin" => {
            format!("listen: 127.0.0.1:{port}\npeer:\n  listen: 127.0.0.1:{port}\n{TRACKER}{json}")
        }
        "tracker" | "build-index" => format!("listen: 127.0.0.1:{port}\n{json}"),
        "proxy" => format!(
            "registry:\n  listen: 127.0.0.1:{port}\norigin:\n  hosts:\n    static: [127.0.0.1:9]\n\
             build_index:\n  hosts:\n    static: [127.0.0.1:9]\n{json}"
        ),
        "dev" => format!("listen: 127.0.0.1:{port}\n{json}"),
        _ => unreachable!(),
    }
}

/// A role's process; killed when dropped.
struct Role {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<Value>,
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Role {
    fn start(role: &str, yaml: &str, dir: &Path, data_dir: Option<&Path>) -> Role {
        let file = dir.join(format!("{role}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.arg(role).arg("--config").arg(&file);
        if let Some(d) = data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        // The file's log.level is what this test is about, not the suite's RUST_LOG.
        cmd.env_remove("RUST_LOG")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start shoal");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in common::lossy_lines(stderr) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Role {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Lines until one whose message starts with `message`; every line must be JSON.
    fn wait_for(&mut self, message: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {message:?} line; so far: {:#?}", self.seen));
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a line that is not JSON ({e}): {line}"));
            self.seen.push(value.clone());
            if value["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return value;
            }
        }
    }

    /// Everything it wrote to stderr, once it has exited.
    fn failed_output(mut self) -> String {
        let status = common::wait_with_deadline(&mut self.child, Duration::from_secs(60))
            .expect("a refused start exits");
        assert!(!status.success());
        let mut out = String::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut out);
        }
        out
    }
}

fn get(url: &str) -> (u16, String) {
    common::block_on(async {
        let r = reqwest::get(url).await.expect("the request is answered");
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

#[test]
fn every_role_writes_json_logs_and_serves_metrics_on_metrics_listen_only() {
    for role in ["agent", "origin", "tracker", "build-index", "proxy", "dev"] {
        let dir = common::tempdir("shoal-role-process-");
        let data = dir.path().join("data");
        let mut process = Role::start(role, &config(role, 0), dir.path(), Some(&data));
        let line = process.wait_for("metrics listening");
        let addr = line["addr"]
            .as_str()
            .expect("the metrics address")
            .to_owned();
        let (status, body) = get(&format!("http://{addr}/metrics"));
        assert_eq!(status, 200, "{role}: {body}");
        assert!(body.contains("# TYPE shoal_"), "{role}: {body}");
        let (status, _) = get(&format!("http://{addr}/v2/"));
        assert_eq!(status, 404, "{role}: metrics.listen serves /metrics alone");
    }
}

#[test]
fn a_taken_port_fails_the_start_naming_its_key() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (role, key) in [
        ("agent", "registry.listen"),
        ("origin", "listen"),
        ("tracker", "listen"),
        ("build-index", "listen"),
        ("proxy", "registry.listen"),
        ("dev", "listen"),
    ] {
        let dir = common::tempdir("shoal-role-port-");
        let data = dir.path().join("data");
        let process = Role::start(role, &config(role, port), dir.path(), Some(&data));
        let out = process.failed_output();
        assert!(
            out.contains(&format!("binding {key} 127.0.0.1:{port}")),
            "{role}: {out}"
        );
        assert!(
            !data.exists(),
            "{role}: a failed start made {}",
            data.display()
        );
    }
    // The peer port: the registry port is free, the peer port is not.
    for role in ["agent", "origin"] {
        let dir = common::tempdir("shoal-role-port-");
        let yaml = config(role, 0).replacen(
            "peer:\n  listen: 127.0.0.1:0",
            &format!("peer:\n  listen: 127.0.0.1:{port}"),
            1,
        );
        let process = Role::start(role, &yaml, dir.path(), Some(&dir.path().join("data")));
        let out = process.failed_output();
        assert!(
            out.contains(&format!("binding peer.listen 127.0.0.1:{port}")),
            "{role}: {out}"
        );
    }
}

#[test]
fn store_root_and_data_dir_are_where_the_files_go() {
    for role in ["agent", "origin"] {
        let dir = common::tempdir("shoal-role-store-");
        let (data, elsewhere) = (dir.path().join("data"), dir.path().join("elsewhere"));
        let yaml = format!(
            "{}store:\n  root: {}\n",
            config(role, 0),
            elsewhere.display()
        );
        let mut process = Role::start(role, &yaml, dir.path(), Some(&data));
        process.wait_for(&format!("shoal {role} listening"));
        let made = std::fs::read_dir(&elsewhere)
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(made > 0, "{role}: nothing under store.root");
        assert!(
            !data.join("store").exists(),
            "{role}: a store under the data dir"
        );
    }
    // shoal dev without --data-dir: `data_dir` from the file, relative to the file's folder.
    let dir = common::tempdir("shoal-role-store-");
    let yaml = format!("{}data_dir: from-the-file\n", config("dev", 0));
    let mut process = Role::start("dev", &yaml, dir.path(), None);
    process.wait_for("shoal dev listening");
    assert!(dir.path().join("from-the-file/cache").is_dir());
}
