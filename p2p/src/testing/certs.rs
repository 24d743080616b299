//! A certificate authority for TLS tests, made with the `openssl` command: a CA and leaf
//! certificates for loopback addresses and `localhost`, each usable by a server and by a client.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA whose files live in a folder the test owns.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("running openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

impl TestCa {
    /// A new CA in `dir`: `{name}-ca.crt` and `{name}-ca.key`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let (crt, key) = (format!("{name}-ca.crt"), format!("{name}-ca.key"));
        let subject = format!("/CN=shoal test CA {name}");
        let mut args = vec!["req", "-x509", "-days", "2", "-subj", &subject];
        args.extend(EC);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(dir, &args);
        TestCa {
            dir: dir.to_owned(),
            name: name.to_owned(),
        }
    }

    /// The CA's certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.crt", self.name))
    }

    /// A certificate signed by this CA for `127.0.0.1`, `::1` and `localhost`, for servers and
    /// clients: the paths of `{name}-{leaf}.crt` and its key.
    pub fn issue(&self, leaf: &str) -> (PathBuf, PathBuf) {
        self.issue_for(
            leaf,
            &[
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
            ],
        )
    }

    /// As [`TestCa::issue`], naming `ips` and `localhost`.
    pub fn issue_for(&self, leaf: &str, ips: &[IpAddr]) -> (PathBuf, PathBuf) {
        let base = format!("{}-{leaf}", self.name);
        let (key, csr, crt, ext) = (
            format!("{base}.key"),
            format!("{base}.csr"),
            format!("{base}.crt"),
            format!("{base}.ext"),
        );
        let subject = format!("/CN=shoal test {leaf}");
        let mut req = vec!["req", "-subj", &subject];
        req.extend(EC);
        req.extend(["-keyout", &key, "-out", &csr]);
        openssl(&self.dir, &req);
        let mut names: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        names.push("DNS:localhost".to_owned());
        std::fs::write(
            self.dir.join(&ext),
            format!(
                "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName={}\n",
                names.join(",")
            ),
        )
        .expect("writing the extensions file");
        let (ca_crt, ca_key) = (
            format!("{}-ca.crt", self.name),
            format!("{}-ca.key", self.name),
        );
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                &ca_crt,
                "-CAkey",
                &ca_key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-extfile",
                &ext,
            ],
        );
        (self.dir.join(crt), self.dir.join(key))
    }
}
