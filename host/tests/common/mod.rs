//! Fixtures shared by the integration tests: a `shoal dev` process on a free port, the real peers
//! (skopeo, containerd, dockerd, oras-py) found on this machine, and images built on the spot.
//!
//! Every process a fixture starts is stopped by its `Drop`, and its log is printed (into the
//! test's captured output, so only a failing test shows it).

// Each test binary uses a different part of these fixtures.
#![allow(dead_code)]

pub mod cluster;
pub mod daemons;
pub mod devcluster;
pub mod http;
pub mod image;
pub mod object_store;
pub mod skopeo;
pub mod template;
pub mod webhdfs;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long `shoal dev` may take to print its listening line. A debug build on a loaded 2-core
/// machine starts in well under a second; the slack is for CI running other test binaries.
const STARTUP_DEADLINE: Duration = Duration::from_secs(60);
/// How long an external client command (skopeo, ctr, docker, python) may run before the test
/// calls it hung. A hang is a finding too: a server that never answers looks just like this.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(180);

/// A `shoal dev` process serving on 127.0.0.1 on a port the kernel picked.
pub struct DevServer {
    child: Child,
    addr: SocketAddr,
    data_dir: PathBuf,
    /// Present when the fixture made the data directory, so it goes away with the server.
    _owned_data: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

impl DevServer {
    /// Starts `shoal dev` with a fresh temporary data directory.
    pub fn start() -> DevServer {
        let dir = tempfile::Builder::new()
            .prefix("shoal-data-")
            .tempdir()
            .expect("creating a data directory");
        let path = dir.path().to_owned();
        DevServer::spawn(path, Some(dir), None, "127.0.0.1:0")
    }

    /// Starts `shoal dev --listen LISTEN` with a fresh temporary data directory; the address
    /// is the one it reports.
    pub fn start_listening(listen: &str) -> DevServer {
        let dir = tempfile::Builder::new()
            .prefix("shoal-data-")
            .tempdir()
            .expect("creating a data directory");
        let path = dir.path().to_owned();
        DevServer::spawn(path, Some(dir), None, listen)
    }

    /// Starts `shoal dev` on a data directory the caller owns, e.g. to restart on the same data.
    pub fn start_in(data_dir: &Path) -> DevServer {
        DevServer::spawn(data_dir.to_owned(), None, None, "127.0.0.1:0")
    }

    /// Starts `shoal dev --config CONFIG` on a data directory the caller owns.
    pub fn start_with_config(data_dir: &Path, config: &Path) -> DevServer {
        DevServer::spawn(data_dir.to_owned(), None, Some(config), "127.0.0.1:0")
    }

    /// Starts `shoal dev --config CONFIG` on a data directory the caller owns, with `envs`
    /// added to its environment (what `${VAR}` in the config reads).
    pub fn start_with_env(data_dir: &Path, config: &Path, envs: &[(&str, &str)]) -> DevServer {
        DevServer::spawn_full(
            data_dir.to_owned(),
            None,
            Some(config),
            "127.0.0.1:0",
            &[],
            envs,
        )
    }

    /// Starts `shoal dev --config CONFIG` under `wrapper` (a command that runs the rest of its
    /// arguments, such as `prlimit --nofile=1024:`).
    pub fn start_wrapped(data_dir: &Path, config: &Path, wrapper: &[&str]) -> DevServer {
        DevServer::spawn_wrapped(
            data_dir.to_owned(),
            None,
            Some(config),
            "127.0.0.1:0",
            wrapper,
        )
    }

    fn spawn(
        data_dir: PathBuf,
        owned: Option<tempfile::TempDir>,
        config: Option<&Path>,
        listen: &str,
    ) -> DevServer {
        DevServer::spawn_wrapped(data_dir, owned, config, listen, &[])
    }

    fn spawn_wrapped(
        data_dir: PathBuf,
        owned: Option<tempfile::TempDir>,
        config: Option<&Path>,
        listen: &str,
        wrapper: &[&str],
    ) -> DevServer {
        DevServer::spawn_full(data_dir, owned, config, listen, wrapper, &[])
    }

    fn spawn_full(
        data_dir: PathBuf,
        owned: Option<tempfile::TempDir>,
        config: Option<&Path>,
        listen: &str,
        wrapper: &[&str],
        envs: &[(&str, &str)],
    ) -> DevServer {
        let mut cmd = match wrapper.split_first() {
            None => Command::new(env!("CARGO_BIN_EXE_shoal")),
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_shoal"));
                cmd
            }
        };
        cmd.args(["dev", "--listen", listen, "--data-dir"])
            .arg(&data_dir);
        if let Some(config) = config {
            cmd.arg("--config").arg(config);
        }
        cmd.envs(envs.iter().copied());
        let mut child = cmd
            // The listening line is logged at info; a RUST_LOG that hides it makes startup fail
            // with the message below.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning target/debug/shoal");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines_rx) = mpsc::channel();
        let pid = child.id();
        {
            let log = Arc::clone(&log);
            // Keeps draining after startup so the server never blocks on a full pipe; ends when
            // the process closes its stderr. Spawned threads share the test's output capture,
            // so the echo shows up only when the test fails.
            std::thread::spawn(move || {
                for line in lossy_lines(stderr) {
                    eprintln!("[shoal {pid}] {line}");
                    log.lock().expect("log lock").push(line.clone());
                    let _ = lines_tx.send(line);
                }
            });
        }
        let deadline = Instant::now() + STARTUP_DEADLINE;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = parse_listening_line(&line) {
                        break addr;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("waiting for shoal");
                    panic!(
                        "shoal dev exited ({status}) before it listened; its log:\n{}",
                        log.lock().expect("log lock").join("\n")
                    );
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "shoal dev printed no `listening on http://` line within {STARTUP_DEADLINE:?} \
                         (a RUST_LOG that hides info hides it); its log:\n{}",
                        log.lock().expect("log lock").join("\n")
                    );
                }
            }
        };
        DevServer {
            child,
            addr,
            data_dir,
            _owned_data: owned,
            log,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, the registry host as clients write it in image references.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits up to 30 s for a line of the server's log that `matches`. Lines reach the test
    /// through a pipe and a reader thread, so a line the server wrote before it answered a
    /// request may not be here yet when the answer is.
    pub fn logged(&self, matches: impl Fn(&str) -> bool) -> bool {
        poll_until(Duration::from_secs(30), || {
            self.log
                .lock()
                .expect("log lock")
                .iter()
                .any(|l| matches(l))
        })
    }

    /// Sends SIGTERM and waits up to `deadline` for the process to exit. `None` means it did not
    /// (the process is then killed by `Drop`).
    pub fn terminate(&mut self, deadline: Duration) -> Option<ExitStatus> {
        send_signal(self.child.id(), "TERM");
        wait_with_deadline(&mut self.child, deadline)
    }

    /// Stops the server with SIGTERM and checks that it exited cleanly within 15 s.
    pub fn stop(mut self) {
        let status = self
            .terminate(Duration::from_secs(15))
            .expect("shoal dev stops on SIGTERM");
        assert!(status.success(), "shoal dev exited with {status}");
    }
}

impl Drop for DevServer {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in tracing's `... listening on http://127.0.0.1:PORT ...` line.
fn parse_listening_line(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on http")? + "listening on http".len();
    let rest = line[at..]
        .strip_prefix("://")
        .or_else(|| line[at..].strip_prefix("s://"))?;
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Lines of `reader`, with bytes that are not UTF-8 replaced rather than ending the stream.
pub fn lossy_lines(reader: impl Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(reader);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(
                String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
        }
    })
}

/// Sends `SIGsignal` to `pid` with kill(1): the workspace denies `unsafe`, so no libc call.
pub fn send_signal(pid: u32, signal: &str) {
    // A process that already exited is not an error here; the caller's wait tells.
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Polls `child` until it exits or `deadline` passes.
pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child process") {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a peer the test needs is installed. Missing with `SHOAL_REQUIRE_PEERS=1` (CI) is a
/// failure; missing on a developer's machine skips the test with a note.
pub fn require(tool: &str) -> bool {
    find_program(tool).is_some() || missing(tool)
}

/// Like [`require`], for a Python module (oras-py is `oras`).
pub fn require_python_module(module: &str) -> bool {
    if !require("python3") {
        return false;
    }
    let found = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    found || missing(&format!("python module {module}"))
}

/// containerd and dockerd run only as root; the same skip-or-fail rule as [`require`].
pub fn require_root(what: &str) -> bool {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    if String::from_utf8_lossy(&uid.stdout).trim() == "0" {
        return true;
    }
    if std::env::var("SHOAL_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{what} needs root and SHOAL_REQUIRE_PEERS=1 is set: run the tests as root");
    }
    eprintln!("skipping: {what} needs root");
    false
}

fn missing(what: &str) -> bool {
    if std::env::var("SHOAL_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "{what} is not installed and SHOAL_REQUIRE_PEERS=1 is set: run scripts/install-test-deps (as root)"
        );
    }
    eprintln!("skipping: {what} not installed");
    false
}

/// The path of `program` on PATH or in the sbin directories (dockerd lives in /usr/sbin, which a
/// non-login PATH may lack).
pub fn find_program(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A [`Command`] for `program`, resolved with [`find_program`].
pub fn command(program: &str) -> Command {
    Command::new(find_program(program).unwrap_or_else(|| PathBuf::from(program)))
}

/// Runs `cmd` to completion (killing it after [`COMMAND_DEADLINE`]) and returns its output,
/// whatever its exit status.
pub fn run(cmd: &mut Command) -> Output {
    let shown = show(cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning `{shown}`: {e}"));
    let collect = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = collect(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = collect(Box::new(child.stderr.take().expect("piped stderr")));
    let status = match wait_with_deadline(&mut child, COMMAND_DEADLINE) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let err = stderr.join().unwrap_or_default();
            panic!(
                "`{shown}` did not finish within {COMMAND_DEADLINE:?}; its stderr:\n{}",
                String::from_utf8_lossy(&err)
            );
        }
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    eprintln!("$ {shown}\n  -> {status}");
    output
}

/// Runs `cmd` and panics with its output unless it exits 0. Returns stdout.
pub fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let shown = show(cmd);
    let output = run(cmd);
    assert!(
        output.status.success(),
        "`{shown}` failed ({})\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs a future to completion on a runtime of its own; the tests are synchronous (they drive
/// external processes) and use reqwest, which is async, for the odd direct request.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(future)
}

/// Polls `ready` every 100 ms until it returns true or `deadline` passes.
pub fn poll_until(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + deadline;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The registry's error body: code and message of the first error.
pub fn error_of(body: &[u8]) -> (String, String) {
    let v = json(body);
    let e = &v["errors"][0];
    (
        e["code"].as_str().unwrap_or_default().to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    )
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// Asserts that two OCI layouts hold the same blobs, byte for byte.
pub fn assert_same_blobs(expected: &Path, actual: &Path) {
    let expected = image::read_layout_blobs(expected);
    let actual = image::read_layout_blobs(actual);
    let names = |blobs: &std::collections::BTreeMap<image::Digest, Vec<u8>>| {
        blobs.keys().cloned().collect::<BTreeSet<_>>()
    };
    assert_eq!(
        names(&expected),
        names(&actual),
        "the pulled layout has other blobs than the pushed one"
    );
    // Equal names imply equal bytes (read_layout_blobs checked each file against its name).
}

pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("creating a temporary directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_address_in_the_listening_line() {
        let line = "2026-01-01T00:00:00Z  INFO shoal_host::dev: shoal dev listening on http://127.0.0.1:40123 data_dir=/tmp/x";
        assert_eq!(
            parse_listening_line(line),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_listening_line("listening on http://[::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(parse_listening_line("starting"), None);
    }
}
