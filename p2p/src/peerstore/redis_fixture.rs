//! A `redis-server` for tests, shared by the peer store's and the tracker's Redis tests.

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use shoal_config::{Duration, HostPort};

/// A `redis-server` of the test's own on a free loopback port, killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
}

impl RedisServer {
    /// Stops the server with SIGSTOP: connections stay open and nothing is answered, as with
    /// a Redis that hangs. Drop still kills it.
    pub(crate) fn freeze(&self) {
        let stopped = Command::new("kill")
            .args(["-STOP", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(stopped.success(), "kill -STOP redis-server failed");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    crate::testing::daemon_port()
}

/// Starts Redis, or returns `None` to skip when it is not installed, unless
/// `SHOAL_REQUIRE_PEERS=1` (CI), where a missing Redis is a failure.
pub(crate) fn start_redis() -> Option<RedisServer> {
    start_redis_on(free_port())
}

pub(crate) fn start_redis_on(port: u16) -> Option<RedisServer> {
    start_redis_with(port, &[])
}

/// As [`start_redis_on`], with more `redis-server` arguments (e.g. `--requirepass`).
pub(crate) fn start_redis_with(port: u16, args: &[&str]) -> Option<RedisServer> {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("SHOAL_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!(
                "redis-server is not installed and SHOAL_REQUIRE_PEERS=1 is set: run scripts/install-test-deps (as root)"
            );
        }
        eprintln!("skipping: redis-server not installed");
        return None;
    }
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting redis-server");
    let server = RedisServer { child, port };
    // Ready when it accepts a connection; poll with a deadline rather than sleep blindly.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Some(server)
}

pub(crate) fn config(port: u16) -> shoal_config::RedisPeerStore {
    shoal_config::RedisPeerStore {
        addr: HostPort::new("127.0.0.1", port),
        dial_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}
