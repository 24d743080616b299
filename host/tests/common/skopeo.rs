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
