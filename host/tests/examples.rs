//! The deployment examples as an operator would use them: every systemd unit passes
//! `systemd-analyze verify` with shoal as its binary, and the Kubernetes manifests pass the
//! Kubernetes schemas (`kubernetes-validate --strict`) while the config in each role's
//! ConfigMap passes `shoal config check` for that role.

mod common;

use std::path::Path;
use std::process::Command;

use common::{require, tempdir};
use serde::Deserialize;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

#[test]
fn every_systemd_unit_verifies_and_checks_its_config_before_starting() {
    if !require("systemd-analyze") {
        return;
    }
    let work = tempdir("shoal-units-");
    for role in ["agent", "origin", "tracker", "build-index", "proxy"] {
        let name = format!("shoal-{role}.service");
        let text = std::fs::read_to_string(examples().join("systemd").join(&name)).unwrap();
        assert!(
            text.contains(&format!("shoal config check {role} /etc/shoal/{role}.yaml")),
            "{name} checks its config before it starts"
        );
        assert!(
            text.contains(&format!("shoal {role} --config /etc/shoal/{role}.yaml")),
            "{name}"
        );
        // The binary the unit names must exist for verify: point it at the one under test.
        let unit = work.path().join(&name);
        std::fs::write(
            &unit,
            text.replace("/usr/local/bin/shoal", env!("CARGO_BIN_EXE_shoal")),
        )
        .unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&unit)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{name}: {said}"
        );
    }
}

#[test]
fn the_kubernetes_manifests_validate_and_each_role_config_checks() {
    let file = examples().join("kubernetes/shoal.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut kinds = Vec::new();
    let mut checked = Vec::new();
    let work = tempdir("shoal-k8s-");
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let doc = serde_yaml_ng::Value::deserialize(doc).unwrap();
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        if kind == "ConfigMap" {
            let role = name.strip_prefix("shoal-").unwrap();
            let config = doc["data"][format!("{role}.yaml").as_str()]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has {role}.yaml"));
            let path = work.path().join(format!("{role}.yaml"));
            std::fs::write(&path, config).unwrap();
            // The variables the pods set from the downward API and the shoal-s3 Secret.
            let out = Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["config", "check", role])
                .arg(&path)
                .env("NODE_IP", "10.0.0.1")
                .env("POD_IP", "10.0.1.1")
                .env("AWS_ACCESS_KEY_ID", "id")
                .env("AWS_SECRET_ACCESS_KEY", "secret")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked.push(role.to_owned());
        }
        kinds.push(format!("{kind}/{name}"));
    }
    for want in [
        "DaemonSet/agent",
        "StatefulSet/origin",
        "Deployment/tracker",
        "Deployment/build-index",
        "Deployment/proxy",
    ] {
        assert!(kinds.iter().any(|k| k == want), "no {want} in {kinds:?}");
    }
    assert_eq!(checked.len(), 5, "{checked:?}");
    if !require("kubernetes-validate") {
        return;
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
