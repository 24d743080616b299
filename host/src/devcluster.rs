//! `shoal devcluster`: the whole P2P cluster on this machine, one process per role, from the
//! example configs in `examples/devcluster/` (embedded in the binary, so it runs from anywhere).
//!
//! Under the data directory: `config/<role>/{base,development}.yaml` (the examples as shipped),
//! and per process `<name>/config.yaml` (which `extends:` its role's development.yaml and sets
//! only the addresses and the store root of that instance), `<name>/` as its data directory and
//! `logs/<name>.log`, and `<name>/pid`. Relative paths in a config are relative to its file
//! (and every process runs with the data directory as its working directory), so the
//! examples' `../../backend`, written in `config/<role>/development.yaml`, is one backend
//! folder, `DIR/backend`, shared by the origins (blobs, `sharded_docker_blob`) and the
//! build-index (tags, `docker_tag`).
//!
//! Ports, from `--base-port` B (15000 by default, Kraken's devcluster ports): proxy B, origin k
//! B+2+10(k-1) (peer one below), tracker B+3, build-index B+4, agent k B+1000+2(k-1) (peer one
//! above). The proxy needs credentials: one user, `shoal`, with a fresh password each run (its
//! bcrypt line in `DIR/htpasswd`), printed as `credentials USER PASSWORD` after the process
//! lines. A process that dies is restarted (its log says why); Ctrl-C or SIGTERM stops all.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::cli::DevClusterArgs;

macro_rules! example {
    ($role:literal, $file:literal) => {
        (
            $role,
            $file,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../examples/devcluster/",
                $role,
                "/",
                $file
            )),
        )
    };
}

/// The example files, as shipped: (role, file, text).
const EXAMPLES: &[(&str, &str, &str)] = &[
    example!("tracker", "base.yaml"),
    example!("tracker", "development.yaml"),
    example!("origin", "base.yaml"),
    example!("origin", "development.yaml"),
    example!("build-index", "base.yaml"),
    example!("build-index", "development.yaml"),
    example!("proxy", "base.yaml"),
    example!("proxy", "development.yaml"),
    example!("agent", "base.yaml"),
    example!("agent", "development.yaml"),
];

/// How long every process has to answer on its address after it starts.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a process has to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// A process that dies more often than this within [`CRASH_WINDOW`] is not restarted again.
const MAX_RESTARTS: usize = 5;
const CRASH_WINDOW: Duration = Duration::from_secs(60);

/// One process of the cluster.
struct Member {
    role: &'static str,
    name: String,
    /// Its registry (agent, proxy) or HTTP address, printed and probed for readiness.
    address: SocketAddr,
    /// The overlay over its role's development.yaml.
    overlay: String,
}

/// The cluster's processes, in start order.
fn plan(args: &DevClusterArgs) -> anyhow::Result<Vec<Member>> {
    if args.agents == 0 || args.origins == 0 {
        bail!("--agents and --origins must be at least 1");
    }
    if args.origins > 9 {
        bail!("--origins {}: at most 9 fit the port layout", args.origins);
    }
    let b = u32::from(args.base_port);
    if b + 1000 + 2 * args.agents + 1 > u32::from(u16::MAX) {
        bail!(
            "--base-port {} with --agents {} runs past port 65535",
            args.base_port,
            args.agents
        );
    }
    let addr =
        |offset: u32| -> SocketAddr { SocketAddr::from(([127, 0, 0, 1], (b + offset) as u16)) };
    let list = |addrs: &[SocketAddr]| -> String {
        addrs.iter().fold(String::new(), |mut s, a| {
            let _ = write!(s, "\n      - {a}");
            s
        })
    };
    let origins: Vec<SocketAddr> = (0..args.origins).map(|k| addr(2 + 10 * k)).collect();
    let (proxy, tracker, build_index) = (addr(0), addr(3), addr(4));
    let mut members = vec![Member {
        role: "tracker",
        name: "tracker-1".into(),
        address: tracker,
        overlay: format!(
            "listen: {tracker}\norigin:\n  hosts:\n    static:{}\n",
            list(&origins)
        ),
    }];
    for (k, origin) in origins.iter().enumerate() {
        let name = format!("origin-{}", k + 1);
        members.push(Member {
            role: "origin",
            overlay: format!(
                "listen: {origin}\npeer:\n  listen: {peer}\nstore:\n  root: ./store\n\
                 cluster:\n  hosts:\n    static:{hosts}\nhashring:\n  max_replica: {replica}\n\
                 tracker:\n  hosts:\n    static:\n      - {tracker}\n",
                peer = addr(1 + 10 * k as u32),
                hosts = list(&origins),
                replica = args.origins.min(2),
            ),
            name,
            address: *origin,
        });
    }
    members.push(Member {
        role: "build-index",
        name: "build-index-1".into(),
        address: build_index,
        overlay: format!("listen: {build_index}\n"),
    });
    members.push(Member {
        role: "proxy",
        name: "proxy-1".into(),
        address: proxy,
        overlay: format!(
            "registry:\n  listen: {proxy}\norigin:\n  hosts:\n    static:{}\n\
             build_index:\n  hosts:\n    static:\n      - {build_index}\n\
             access:\n  htpasswd: ../htpasswd\n",
            list(&origins)
        ),
    });
    for k in 0..args.agents {
        let name = format!("agent-{}", k + 1);
        let registry = addr(1000 + 2 * k);
        members.push(Member {
            role: "agent",
            overlay: format!(
                "registry:\n  listen: {registry}\npeer:\n  listen: {peer}\nstore:\n  root: ./store\n\
                 tracker:\n  hosts:\n    static:\n      - {tracker}\n\
                 build_index:\n  hosts:\n    static:\n      - {build_index}\n",
                peer = addr(1001 + 2 * k),
            ),
            name,
            address: registry,
        });
    }
    Ok(members)
}

/// Writes the examples and every member's overlay under `dir`.
fn write_configs(dir: &Path, members: &[Member]) -> anyhow::Result<()> {
    for (role, file, text) in EXAMPLES {
        let folder = dir.join("config").join(role);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        std::fs::write(folder.join(file), text)
            .with_context(|| format!("writing {}/{file}", folder.display()))?;
    }
    std::fs::create_dir_all(dir.join("logs"))?;
    for m in members {
        let folder = dir.join(&m.name);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        let text = format!(
            "# Written by `shoal devcluster`: {name} is its role's development.yaml with this\n\
             # instance's addresses.\nextends: ../config/{role}/development.yaml\n{overlay}",
            name = m.name,
            role = m.role,
            overlay = m.overlay
        );
        std::fs::write(folder.join("config.yaml"), text)?;
    }
    Ok(())
}

/// The one user allowed to push to the proxy: a fresh password each run, its bcrypt line in
/// `DIR/htpasswd` (the proxy's `access.htpasswd`).
fn credentials(dir: &Path) -> anyhow::Result<(String, String)> {
    let mut raw = [0u8; 12];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
        &mut raw,
    )?;
    let (user, password) = ("shoal".to_owned(), hex::encode(raw));
    let line = shoal_registry::htpasswd_line(&user, &password)
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
    let path = dir.join("htpasswd");
    std::fs::write(&path, format!("{line}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok((user, password))
}

/// A running member and its restarts.
struct Running {
    member: Member,
    child: Child,
    crashes: Vec<Instant>,
}

fn spawn(exe: &Path, dir: &Path, m: &Member) -> anyhow::Result<Child> {
    let log_path = dir.join("logs").join(format!("{}.log", m.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let child = Command::new(exe)
        .arg(m.role)
        .arg("--config")
        .arg(Path::new(&m.name).join("config.yaml"))
        .arg("--data-dir")
        .arg(&m.name)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", m.name))?;
    // So an operator (or a test) can signal one member: `kill -9 $(cat DIR/origin-1/pid)`.
    if let Some(pid) = child.id() {
        std::fs::write(dir.join(&m.name).join("pid"), format!("{pid}\n"))?;
    }
    Ok(child)
}

fn log_tail(dir: &Path, name: &str, lines: usize) -> String {
    let text =
        std::fs::read_to_string(dir.join("logs").join(format!("{name}.log"))).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until every member answers `GET /health`, failing with a member's log when it exits.
async fn wait_ready(dir: &Path, running: &mut [Running]) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + READY_DEADLINE;
    for r in running.iter_mut() {
        let url = format!("http://{}/health", r.member.address);
        loop {
            if let Some(status) = r.child.try_wait()? {
                bail!(
                    "{} exited ({status}) while starting; the end of logs/{}.log:\n{}",
                    r.member.name,
                    r.member.name,
                    log_tail(dir, &r.member.name, 30)
                );
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|resp| resp.status().is_success())
            {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} did not answer on {} within {READY_DEADLINE:?}; the end of its log:\n{}",
                    r.member.name,
                    r.member.address,
                    log_tail(dir, &r.member.name, 30)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id() {
        // `unsafe` is off in this workspace, so no libc::kill: the kill(1) of procps.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
}

/// Stops every member: SIGTERM, then SIGKILL after [`STOP_DEADLINE`].
async fn stop_all(running: &mut [Running]) {
    for r in running.iter() {
        terminate(&r.child);
    }
    for r in running.iter_mut() {
        match tokio::time::timeout(STOP_DEADLINE, r.child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                eprintln!(
                    "{} did not stop within {STOP_DEADLINE:?}; killing it",
                    r.member.name
                );
                let _ = r.child.kill().await;
            }
        }
    }
}

/// Runs the dev cluster until SIGINT or SIGTERM.
pub async fn run(args: DevClusterArgs) -> anyhow::Result<()> {
    let members = plan(&args)?;
    let dir = &args.data_dir;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", args.data_dir.display()))?;
    write_configs(&dir, &members)?;
    let (user, password) = credentials(&dir)?;
    let exe = std::env::current_exe().context("finding the shoal binary")?;
    let mut running = Vec::with_capacity(members.len());
    for member in members {
        let child = spawn(&exe, &dir, &member)?;
        running.push(Running {
            member,
            child,
            crashes: Vec::new(),
        });
    }
    if let Err(e) = wait_ready(&dir, &mut running).await {
        stop_all(&mut running).await;
        return Err(e);
    }
    {
        let mut out = String::new();
        for r in &running {
            let _ = writeln!(
                out,
                "{} {} {}",
                r.member.role, r.member.name, r.member.address
            );
        }
        let _ = writeln!(out, "credentials {user} {password}");
        print!("{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    eprintln!(
        "shoal devcluster: {} processes running; logs in {}; Ctrl-C stops them",
        running.len(),
        dir.join("logs").display()
    );
    let outcome = supervise(&exe, &dir, &mut running).await;
    stop_all(&mut running).await;
    outcome
}

/// Restarts members that die, until a signal asks to stop or one dies too often.
async fn supervise(exe: &Path, dir: &Path, running: &mut [Running]) -> anyhow::Result<()> {
    let signal = crate::serve::signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            () = &mut signal => return Ok(()),
            _ = tick.tick() => {}
        }
        for r in running.iter_mut() {
            let Some(status) = r.child.try_wait()? else {
                continue;
            };
            let now = Instant::now();
            r.crashes
                .retain(|at| now.duration_since(*at) < CRASH_WINDOW);
            r.crashes.push(now);
            if r.crashes.len() > MAX_RESTARTS {
                bail!(
                    "{} exited {} times within {CRASH_WINDOW:?}; the end of logs/{}.log:\n{}",
                    r.member.name,
                    r.crashes.len(),
                    r.member.name,
                    log_tail(dir, &r.member.name, 30)
                );
            }
            eprintln!(
                "{} exited ({status}); restarting it (logs/{}.log)",
                r.member.name, r.member.name
            );
            r.child = spawn(exe, dir, &r.member)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn args(agents: u32, origins: u32, base_port: u16) -> DevClusterArgs {
        DevClusterArgs {
            agents,
            origins,
            base_port,
            data_dir: PathBuf::from("x"),
        }
    }

    #[test]
    fn the_default_layout_uses_krakens_devcluster_ports() {
        let m = plan(&args(2, 1, 15000)).unwrap();
        let lines: Vec<String> = m
            .iter()
            .map(|m| format!("{} {} {}", m.role, m.name, m.address))
            .collect();
        assert_eq!(
            lines,
            [
                "tracker tracker-1 127.0.0.1:15003",
                "origin origin-1 127.0.0.1:15002",
                "build-index build-index-1 127.0.0.1:15004",
                "proxy proxy-1 127.0.0.1:15000",
                "agent agent-1 127.0.0.1:16000",
                "agent agent-2 127.0.0.1:16002",
            ]
        );
    }

    #[test]
    fn no_two_members_share_a_port() {
        let m = plan(&args(50, 9, 20000)).unwrap();
        let mut ports: Vec<String> = Vec::new();
        for member in &m {
            for line in member.overlay.lines() {
                if let Some(addr) = line.trim().strip_prefix("listen: ") {
                    ports.push(addr.to_owned());
                }
            }
        }
        let total = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), total, "a listen address is used twice");
    }

    #[test]
    fn layouts_past_the_port_range_are_refused() {
        assert!(plan(&args(40_000, 1, 15000)).is_err());
        assert!(plan(&args(1, 10, 15000)).is_err());
        assert!(plan(&args(0, 1, 15000)).is_err());
    }
}
