//! The registry port under clients that misbehave or must prove who they are: 2,000 stalled
//! connections under a soft limit of 1,024 file descriptors, TLS with skopeo, mTLS, and
//! `allowed_cidrs`. Real `shoal dev` processes; certificates made by openssl in the test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::image;
use common::skopeo::skopeo;
use common::{DevServer, poll_until, require, run, tempdir};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a test file");
    path
}

/// One plain-HTTP GET on a new connection; the status line and the whole reply.
fn plain_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(30))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n"
    )?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply)?;
    Ok(reply)
}

#[test]
fn two_thousand_stalled_connections_do_not_lock_new_clients_out() {
    if !require("prlimit") {
        return;
    }
    // This test holds 2,000 sockets itself.
    let _ = rlimit::increase_nofile_limit(8192);
    let dir = tempdir("shoal-front-stalled-");
    let config = write(dir.path(), "dev.yaml", "server:\n  header_timeout: 3s\n");
    // The common soft limit; the hard one stays as it is, and shoal raises its soft limit to it.
    let server = DevServer::start_wrapped(
        &dir.path().join("data"),
        &config,
        &["prlimit", "--nofile=1024:"],
    );
    let raised = server
        .log()
        .iter()
        .any(|l| l.contains("file-descriptor limit"));
    assert!(raised, "no log line with the file-descriptor limit");
    let addr = server.addr();
    let mut stalled = Vec::new();
    for _ in 0..2000 {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
            .expect("connecting a stalled client");
        conn.write_all(b"GET /v2/ HT").expect("half a request line");
        stalled.push(conn);
    }
    // New clients are answered while the 2,000 hang on.
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let start = Instant::now();
        let reply = plain_get(addr, "/v2/").expect("a new client is answered");
        slowest = slowest.max(start.elapsed());
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    eprintln!("slowest of 20 new clients beside 2,000 stalled connections: {slowest:?}");
    // Every stalled connection is closed by the server (the header timeout, or the limit
    // closing the longest idle).
    // One deadline for all: a broken server costs a minute, not a minute per connection.
    let deadline = Instant::now() + Duration::from_secs(60);
    let open = stalled
        .iter_mut()
        .map(|conn| {
            let left = deadline.saturating_duration_since(Instant::now());
            conn.set_read_timeout(Some(left.max(Duration::from_millis(10))))
                .expect("read timeout");
            still_open(conn)
        })
        .filter(|open| *open)
        .count();
    assert_eq!(open, 0, "{open} stalled connections were never closed");
    server.stop();
}

/// Whether `conn` stays open until its read timeout: a close (or reset) ends the read at once.
fn still_open(conn: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => continue,
            Err(e) => {
                return matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
}

/// A CA, a server certificate for 127.0.0.1, and a client certificate, made with openssl.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Certs {
        let dir = tempdir("shoal-front-certs-");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = run(std::process::Command::new("openssl")
                .current_dir(d)
                .args(args));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509", "-days", "2", "-subj", "/CN=shoal test CA"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&ca);
        for (name, usage) in [("server", "serverAuth"), ("client", "clientAuth")] {
            let mut req = vec!["req", "-subj"];
            let subject = format!("/CN=shoal test {name}");
            req.push(&subject);
            req.extend(ec);
            let (key, csr, crt, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.crt"),
                format!("{name}.ext"),
            );
            req.extend(["-keyout", &key, "-out", &csr]);
            openssl(&req);
            std::fs::write(
                d.join(&ext),
                format!(
                    "basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n\
                     subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                ),
            )
            .unwrap();
            openssl(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ]);
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A certificate folder as skopeo reads it: `*.crt` are CAs, a `*.cert`/`*.key` pair is the
    /// client's certificate.
    fn cert_dir(&self, with_client: bool) -> tempfile::TempDir {
        let dir = tempdir("shoal-front-certdir-");
        std::fs::copy(self.path("ca.crt"), dir.path().join("ca.crt")).unwrap();
        if with_client {
            std::fs::copy(self.path("client.crt"), dir.path().join("client.cert")).unwrap();
            std::fs::copy(self.path("client.key"), dir.path().join("client.key")).unwrap();
        }
        dir
    }

    fn server_yaml(&self, client_ca: bool) -> String {
        let mut yaml = format!(
            "server:\n  tls:\n    cert: {}\n    key: {}\n",
            self.path("server.crt").display(),
            self.path("server.key").display()
        );
        if client_ca {
            yaml.push_str(&format!(
                "    client_ca: {}\n",
                self.path("ca.crt").display()
            ));
        }
        yaml
    }
}

fn curl(args: &[&str]) -> std::process::Output {
    run(std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(args))
}

#[test]
fn a_tls_registry_serves_skopeo_with_its_ca_and_refuses_plain_http() {
    if !(require("openssl") && require("skopeo")) {
        return;
    }
    let certs = Certs::make();
    let dir = tempdir("shoal-front-tls-");
    let config = write(dir.path(), "dev.yaml", &certs.server_yaml(false));
    let server = DevServer::start_with_config(&dir.path().join("data"), &config);
    assert!(
        server
            .log()
            .iter()
            .any(|l| l.contains("listening on https://")),
        "the listening line does not say https"
    );
    let host = server.host_port();
    // Plain HTTP gets a 400 that says why.
    let reply = plain_get(server.addr(), "/v2/").expect("a plain request is answered");
    assert!(
        reply.starts_with("HTTP/1.1 400") && reply.contains("speaks TLS"),
        "{reply}"
    );
    // skopeo verifies the certificate against the CA in its cert dir, pushes and pulls.
    let src = dir.path().join("src");
    let built = image::write_image_layout(&src, "v1", "front-door-tls");
    let cert_dir = certs.cert_dir(false);
    let out = run(skopeo()
        .args(["copy", "--preserve-digests", "--dest-cert-dir"])
        .arg(cert_dir.path())
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{host}/tls/app:v1")));
    assert!(
        out.status.success(),
        "skopeo push over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let back = dir.path().join("back");
    let out = run(skopeo()
        .args(["copy", "--preserve-digests", "--src-cert-dir"])
        .arg(cert_dir.path())
        .arg(format!("docker://{host}/tls/app:v1"))
        .arg(format!("oci:{}:v1", back.display())));
    assert!(
        out.status.success(),
        "skopeo pull over TLS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        image::layout_digest_for_tag(&back, "v1"),
        built.manifest_digest,
        "the pulled manifest differs"
    );
    // Without the CA, skopeo refuses the certificate rather than trusting it.
    let out = run(skopeo()
        .args(["inspect", "--raw"])
        .arg(format!("docker://{host}/tls/app:v1")));
    assert!(
        !out.status.success(),
        "skopeo trusted a certificate from an unknown CA"
    );
    server.stop();
}

#[test]
fn with_a_client_ca_only_clients_with_a_certificate_are_served() {
    if !(require("openssl") && require("curl") && require("skopeo")) {
        return;
    }
    let certs = Certs::make();
    let dir = tempdir("shoal-front-mtls-");
    let config = write(dir.path(), "dev.yaml", &certs.server_yaml(true));
    let server = DevServer::start_with_config(&dir.path().join("data"), &config);
    let url = format!("https://{}/v2/", server.host_port());
    let ca = certs.path("ca.crt");
    let ca = ca.to_str().unwrap();
    // Without a client certificate the handshake is refused.
    let out = curl(&["--cacert", ca, &url]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout) != "200",
        "served a client without a certificate: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    // With one signed by the CA, it is served.
    let (cert, key) = (certs.path("client.crt"), certs.path("client.key"));
    let out = curl(&[
        "--cacert",
        ca,
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        &url,
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A certificate from another CA is refused too.
    let other = Certs::make();
    let out = curl(&[
        "--cacert",
        ca,
        "--cert",
        other.path("client.crt").to_str().unwrap(),
        "--key",
        other.path("client.key").to_str().unwrap(),
        &url,
    ]);
    assert!(
        !out.status.success(),
        "served a client certificate from another CA"
    );
    // skopeo presents the certificate from its cert dir and pushes.
    let src = dir.path().join("src");
    image::write_image_layout(&src, "v1", "front-door-mtls");
    let with_client = certs.cert_dir(true);
    let out = run(skopeo()
        .args(["copy", "--preserve-digests", "--dest-cert-dir"])
        .arg(with_client.path())
        .arg(format!("oci:{}:v1", src.display()))
        .arg(format!("docker://{}/mtls/app:v1", server.host_port())));
    assert!(
        out.status.success(),
        "skopeo push with a client certificate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let without = certs.cert_dir(false);
    let out = run(skopeo()
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(without.path())
        .arg(format!("docker://{}/mtls/app:v1", server.host_port())));
    assert!(
        !out.status.success(),
        "skopeo without a client certificate was served"
    );
    server.stop();
}

#[test]
fn a_client_outside_allowed_cidrs_is_denied() {
    let dir = tempdir("shoal-front-cidrs-");
    let config = write(dir.path(), "dev.yaml", "allowed_cidrs: [10.0.0.0/8]\n");
    let server = DevServer::start_with_config(&dir.path().join("data"), &config);
    let reply = plain_get(server.addr(), "/v2/").expect("an answer");
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains(r#""code":"DENIED""#), "{reply}");
    assert!(
        poll_until(Duration::from_secs(10), || server
            .log()
            .iter()
            .any(|l| l.contains("shoal::request")
                && l.contains("status=403")
                && l.contains(r#"error="DENIED""#))),
        "the refusal has no request line"
    );
    server.stop();
    let config = write(
        dir.path(),
        "dev.yaml",
        "allowed_cidrs: [10.0.0.0/8, 127.0.0.1]\n",
    );
    let server = DevServer::start_with_config(&dir.path().join("data"), &config);
    let reply = plain_get(server.addr(), "/v2/").expect("an answer");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    server.stop();
}
