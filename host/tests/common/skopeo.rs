//! skopeo, the reference OCI client the round-trip tests push and pull with.

use std::path::Path;
use std::process::Command;

use super::{DevServer, command, run_ok};

/// skopeo without the machine's signature policy (a test cannot depend on /etc/containers).
pub fn skopeo() -> Command {
    let mut cmd = command("skopeo");
    cmd.arg("--insecure-policy");
    cmd
}

/// `skopeo copy` from the OCI layout at `layout` (tag `tag`) to `HOST/reference`, failing if
/// skopeo would have to change a digest.
pub fn skopeo_push(server: &DevServer, layout: &Path, tag: &str, reference: &str, all: bool) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{reference}", server.host_port()));
    run_ok(&mut cmd);
}

/// `skopeo copy` from `HOST/reference` into a new OCI layout at `out`, tagged `tag`.
pub fn skopeo_pull(server: &DevServer, reference: &str, out: &Path, tag: &str, all: bool) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--src-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    cmd.arg(format!("docker://{}/{reference}", server.host_port()))
        .arg(format!("oci:{}:{tag}", out.display()));
    run_ok(&mut cmd);
}

/// `skopeo inspect --raw`: the manifest bytes exactly as the registry serves them.
pub fn skopeo_inspect_raw(server: &DevServer, reference: &str) -> Vec<u8> {
    run_ok(
        skopeo()
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{}/{reference}", server.host_port())),
    )
}

/// `skopeo copy` from the OCI layout at `layout` (tag `tag`) to `HOST/reference` on any
/// registry address, with `creds` (`user:password`) when given.
pub fn skopeo_push_to(
    host: &str,
    layout: &Path,
    tag: &str,
    reference: &str,
    creds: Option<&str>,
) -> Command {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.arg("--dest-creds").arg(creds);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{host}/{reference}"));
    cmd
}

/// `skopeo copy` from `HOST/reference` on any registry address into a new OCI layout at
/// `out`, tagged `tag`.
pub fn skopeo_pull_from(host: &str, reference: &str, out: &Path, tag: &str) {
    let mut cmd = skopeo();
    cmd.args(["copy", "--preserve-digests", "--src-tls-verify=false"])
        .arg(format!("docker://{host}/{reference}"))
        .arg(format!("oci:{}:{tag}", out.display()));
    run_ok(&mut cmd);
}

/// The manifest digest `HOST/reference` resolves to, as `skopeo inspect` reports it.
pub fn skopeo_digest_at(host: &str, reference: &str) -> String {
    let out = run_ok(
        skopeo()
            .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
            .arg(format!("docker://{host}/{reference}")),
    );
    String::from_utf8_lossy(&out).trim().to_owned()
}
