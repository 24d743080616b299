//! containerd and dockerd as test peers: each test starts its own instance with its root, state
//! and API socket in a temporary directory, so nothing touches the machine's own daemons (if any)
//! and two tests can run side by side.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{command, poll_until, send_signal, wait_with_deadline};

/// How long a daemon may take to answer on its socket. dockerd starts its own containerd first.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// A long-running peer process whose stdout and stderr go to a log file (a file, not a pipe, so
/// a chatty daemon can never block on it).
struct Daemon {
    name: &'static str,
    child: Child,
    log_path: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, mut cmd: Command, log_path: PathBuf) -> Daemon {
        let log = File::create(&log_path).expect("creating a daemon log");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Daemon {
            name,
            child,
            log_path,
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("polling a daemon")
    }

    fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `ready` says yes, failing early with the log if the daemon exits.
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let mut exited = None;
        let ok = poll_until(READY_DEADLINE, || {
            exited = self.exited();
            exited.is_some() || ready()
        });
        if let Some(status) = exited {
            panic!(
                "{} exited ({status}) while starting; its log:\n{}",
                self.name,
                self.log_tail(60)
            );
        }
        assert!(
            ok,
            "{} was not ready within {READY_DEADLINE:?}; its log:\n{}",
            self.name,
            self.log_tail(60)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited().is_none() {
            send_signal(self.child.id(), "TERM");
            if wait_with_deadline(&mut self.child, STOP_DEADLINE).is_none() {
                eprintln!(
                    "{} did not stop within {STOP_DEADLINE:?} of SIGTERM; killing it",
                    self.name
                );
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- the last lines of {}'s log\n{}",
                self.name,
                self.log_tail(80)
            );
        }
    }
}

/// A temporary directory under /tmp rather than $TMPDIR: it holds unix sockets, whose paths
/// must fit in 108 bytes, and containerd appends `.ttrpc` and dockerd `containerd/...` to them.
fn socket_dir(prefix: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/tmp")
        .expect("creating a directory in /tmp");
    assert!(
        dir.path().as_os_str().len() < 40,
        "{}: too long for the sockets it will hold",
        dir.path().display()
    );
    dir
}

/// A containerd of its own, with its gRPC socket in a temporary directory.
pub struct Containerd {
    // Fields drop in order: the daemon stops before its directory is removed.
    daemon: Daemon,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Containerd {
    pub fn start() -> Containerd {
        let dir = socket_dir("shoal-ctd-");
        let socket = dir.path().join("c.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            containerd_config(dir.path(), &socket, containerd_major_version()),
        )
        .expect("writing the containerd config");
        let mut cmd = command("containerd");
        cmd.arg("--config").arg(&config);
        let mut daemon = Daemon::spawn("containerd", cmd, dir.path().join("containerd.log"));
        let probe = socket.clone();
        daemon.wait_ready(|| {
            probe.exists()
                && command("ctr")
                    .arg("--address")
                    .arg(&probe)
                    .arg("version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
        });
        Containerd {
            daemon,
            socket,
            dir,
        }
    }

    /// `ctr` talking to this containerd, in a namespace of the tests' own.
    pub fn ctr(&self) -> Command {
        let mut cmd = command("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "shoal-test"]);
        cmd
    }

    /// A scratch directory that goes away with this containerd.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The major version of the installed containerd, from `containerd --version`
/// (`containerd github.com/containerd/containerd 1.6.20~ds1 ...`).
fn containerd_major_version() -> u32 {
    let out = command("containerd")
        .arg("--version")
        .output()
        .expect("running containerd --version");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .filter_map(|word| word.trim_start_matches('v').split('.').next()?.parse().ok())
        .next()
        .unwrap_or_else(|| panic!("no version in `containerd --version`: {text:?}"))
}

/// containerd 1.x reads config `version = 2`; 2.x reads `version = 3` (and migrates 2). The CRI
/// plugin is off: it wants CNI and would only slow startup and fill the log.
fn containerd_config(dir: &Path, socket: &Path, major: u32) -> String {
    let version = if major >= 2 { 3 } else { 2 };
    let path = |p: &Path| toml_string(&p.to_string_lossy());
    format!(
        "version = {version}\n\
         root = {root}\n\
         state = {state}\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         \n\
         [grpc]\n  address = {socket}\n\
         \n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt}\n",
        root = path(&dir.join("root")),
        state = path(&dir.join("state")),
        socket = path(socket),
        opt = path(&dir.join("opt")),
    )
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A dockerd of its own: vfs storage, no bridge and no iptables (it needs no network for pulls
/// from 127.0.0.1, which dockerd treats as an insecure registry by default), and an empty
/// daemon.json so the machine's /etc/docker/daemon.json cannot change what is tested.
pub struct Dockerd {
    daemon: Daemon,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        let dir = socket_dir("shoal-dkd-");
        let d = dir.path();
        let socket = d.join("d.sock");
        std::fs::write(d.join("daemon.json"), "{}\n").expect("writing daemon.json");
        std::fs::create_dir_all(d.join("cli")).expect("creating the docker CLI config directory");
        let mut cmd = command("dockerd");
        cmd.arg("--config-file")
            .arg(d.join("daemon.json"))
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver",
                "vfs",
            ])
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()));
        let mut daemon = Daemon::spawn("dockerd", cmd, d.join("dockerd.log"));
        daemon.wait_ready(|| {
            socket.exists() && {
                let probe = Dockerd::cli(d, &socket)
                    .arg("info")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                probe.is_ok_and(|s| s.success())
            }
        });
        Dockerd {
            daemon,
            socket,
            dir,
        }
    }

    fn cli(dir: &Path, socket: &Path) -> Command {
        let mut cmd = command("docker");
        // Its own CLI config directory: no credentials or contexts from the machine's ~/.docker.
        cmd.arg("--config")
            .arg(dir.join("cli"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()));
        cmd
    }

    /// The docker CLI talking to this dockerd.
    pub fn docker(&self) -> Command {
        Dockerd::cli(self.dir.path(), &self.socket)
    }
}
