//! `shoal devcluster` as a test fixture: the whole cluster as the README starts it, on a free
//! range of loopback ports, in a temporary data directory; stopped (SIGTERM, as Ctrl-C would)
//! when the fixture drops.

use std::collections::BTreeMap;
use std::io::BufReader;
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::{lossy_lines, send_signal, wait_with_deadline};

/// A debug build of seven processes on a loaded 2-core machine: generous.
const START_DEADLINE: Duration = Duration::from_secs(120);

/// A running `shoal devcluster`.
pub struct DevCluster {
    child: Child,
    /// Name (`agent-1`) → (role, address) as the command printed them.
    pub members: BTreeMap<String, (String, String)>,
    /// The `credentials USER PASSWORD` line, when the command printed one.
    pub credentials: Option<(String, String)>,
    dir: tempfile::TempDir,
}

/// A first port whose whole layout (see `shoal devcluster --help`) is free now and shares no
/// port with a layout another test of this process took (tests run in parallel threads: both
/// could find one range free before either cluster binds it).
fn free_base(agents: u32, origins: u32) -> u16 {
    static CLAIMED: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    let offsets = |base: u32| {
        let mut v = vec![base, base + 3, base + 4];
        for k in 0..origins {
            v.extend([base + 1 + 10 * k, base + 2 + 10 * k]);
        }
        for k in 0..agents {
            v.extend([base + 1000 + 2 * k, base + 1001 + 2 * k]);
        }
        v
    };
    // Bases 20000-30900, so every port of a layout (at most base + 1010 here) is below the
    // kernel's ephemeral range (32768 and up by default): a client connection elsewhere can
    // then never take the port of a member that died while it restarts (one that did kept a
    // build-index from binding its port again for a minute). Spread the candidates by process
    // id so two test binaries rarely try the same range.
    let start = 20_000 + (std::process::id() % 110) * 100;
    for i in 0..110 {
        let base = 20_000 + (start - 20_000 + i * 100) % 11_000;
        let ports = offsets(base);
        let free = ports.iter().all(|p| {
            !claimed.contains(p) && TcpListener::bind((Ipv4Addr::LOCALHOST, *p as u16)).is_ok()
        });
        if free {
            claimed.extend(ports);
            return base as u16;
        }
    }
    panic!("no free port range for a devcluster");
}

impl DevCluster {
    /// Starts `shoal devcluster --agents AGENTS --origins ORIGINS` and waits for its lines.
    pub fn start(agents: u32, origins: u32) -> DevCluster {
        let dir = tempfile::Builder::new()
            .prefix("shoal-devcluster-")
            .tempdir()
            .expect("creating a data directory");
        let base = free_base(agents, origins);
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg("devcluster")
            .args(["--agents", &agents.to_string()])
            .args(["--origins", &origins.to_string()])
            .args(["--base-port", &base.to_string()])
            .arg("--data-dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting shoal devcluster");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in lossy_lines(BufReader::new(stdout)) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let expected = (3 + origins + agents) as usize;
        let mut members = BTreeMap::new();
        let mut credentials = None;
        let deadline = std::time::Instant::now() + START_DEADLINE;
        while members.len() < expected || credentials.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "shoal devcluster printed {} of {expected} members (credentials: {}) \
                         within {START_DEADLINE:?}; logs:\n{}",
                        members.len(),
                        credentials.is_some(),
                        logs(dir.path())
                    );
                }
            };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["credentials", user, password] => {
                    credentials = Some(((*user).to_owned(), (*password).to_owned()));
                }
                [role, name, address] => {
                    members.insert(
                        (*name).to_owned(),
                        ((*role).to_owned(), (*address).to_owned()),
                    );
                }
                _ => panic!("unexpected line from shoal devcluster: {line:?}"),
            }
        }
        DevCluster {
            child,
            members,
            credentials,
            dir,
        }
    }

    /// The address `name` (`proxy-1`, `agent-2`) serves on.
    pub fn addr(&self, name: &str) -> String {
        self.members
            .get(name)
            .unwrap_or_else(|| panic!("no member {name} in {:?}", self.members))
            .1
            .clone()
    }

    /// The user and password for pushing to the proxy.
    pub fn creds(&self) -> String {
        let (user, password) = self.credentials.as_ref().expect("credentials");
        format!("{user}:{password}")
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sends `signal` (`KILL`, `STOP`, ...) to member `name`.
    pub fn signal(&self, name: &str, signal: &str) {
        send_signal(self.pid(name), signal);
    }

    /// Member `name`'s process id, from `DIR/<name>/pid`.
    pub fn pid(&self, name: &str) -> u32 {
        let pid = std::fs::read_to_string(self.dir().join(name).join("pid"))
            .unwrap_or_else(|e| panic!("reading {name}'s pid: {e}"));
        pid.trim().parse().expect("a pid")
    }

    /// Stops the command as Ctrl-C would and returns how it exited.
    pub fn interrupt(&mut self) -> Option<std::process::ExitStatus> {
        send_signal(self.child.id(), "INT");
        wait_with_deadline(&mut self.child, Duration::from_secs(60))
    }

    /// Member `name`'s log.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir.join("logs")) {
        for e in entries.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!(
                "--- {}\n{}\n",
                e.path().display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            ));
        }
    }
    out
}

impl Drop for DevCluster {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        send_signal(self.child.id(), "TERM");
        if wait_with_deadline(&mut self.child, Duration::from_secs(60)).is_none() {
            eprintln!("shoal devcluster did not stop within 60 s of SIGTERM; killing it");
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- devcluster logs\n{}", logs(self.dir.path()));
        }
    }
}
