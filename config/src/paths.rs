//! Relative paths in a config file are relative to that file's folder, not to the folder the
//! process was started in: a `cert: tls/server.pem` next to `origin.yaml` is found whether
//! the origin runs from `/` under systemd or from a shell in the repository. With `extends:`,
//! each path is relative to the file that wrote it. `shoal config check` and every start load
//! through here, so both see the same paths.

use std::path::Path;

use serde_yaml_ng::Value;

use crate::keypath::KeyPath;
use crate::layering::Layered;

/// Every key that holds a file or folder path; `*` is any sequence index or mapping key.
/// A plugin source that starts with `oci://` is a registry reference, left as it is.
/// A new path key is added here (the key-coverage test in `host/tests/config_keys.rs` lists
/// every path key it finds in the effective configs and fails on one not here).
pub const PATH_KEYS: &[&str] = &[
    "data_dir",
    "store.root",
    "server.tls.cert",
    "server.tls.key",
    "server.tls.client_ca",
    "client_tls.ca",
    "client_tls.cert",
    "client_tls.key",
    "peer.tls.cert",
    "peer.tls.key",
    "peer.tls.ca",
    "backends.*.backend.fs.root",
    "backends.*.backend.plugin.plugin",
    "backends.*.backend.*.security.tls.client.cert",
    "backends.*.backend.*.security.tls.client.key",
    "backends.*.backend.*.security.tls.client.ca",
    "cluster.healthcheck.policy",
    "tracker.cluster.healthcheck.policy",
    "access.htpasswd",
    "access.token.key_file",
];

/// Rewrites every relative path of `doc` (the merged document of `layered`) as the folder of
/// the file that set it joined with the path.
pub(crate) fn resolve_relative(doc: &mut Value, layered: &Layered) {
    for pattern in PATH_KEYS {
        let parts: Vec<&str> = pattern.split('.').collect();
        let mut found = Vec::new();
        collect(doc, &parts, KeyPath::root(), &mut found);
        for path in found {
            let Some(dir) = layered.dir_of(&path) else {
                continue;
            };
            if let Some(Value::String(s)) = lookup_mut(doc, &path)
                && !s.is_empty()
                && !s.starts_with(crate::plugin_source::OCI_SCHEME)
                && Path::new(s.as_str()).is_relative()
            {
                *s = dir.join(s.as_str()).display().to_string();
            }
        }
    }
}

/// The key paths under `value` that `parts` matches.
fn collect(value: &Value, parts: &[&str], at: KeyPath, found: &mut Vec<KeyPath>) {
    let Some((first, rest)) = parts.split_first() else {
        found.push(at);
        return;
    };
    match (value, *first) {
        (Value::Sequence(items), "*") => {
            for (i, item) in items.iter().enumerate() {
                collect(item, rest, at.index(i), found);
            }
        }
        (Value::Mapping(map), "*") => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    collect(v, rest, at.key(k), found);
                }
            }
        }
        (Value::Mapping(map), key) => {
            if let Some(v) = map.get(key) {
                collect(v, rest, at.key(key), found);
            }
        }
        _ => {}
    }
}

fn lookup_mut<'v>(root: &'v mut Value, path: &KeyPath) -> Option<&'v mut Value> {
    use crate::keypath::Segment;
    path.segments()
        .iter()
        .try_fold(root, |v, segment| match (v, segment) {
            (Value::Mapping(map), Segment::Key(k)) => map.get_mut(k.as_str()),
            (Value::Sequence(items), Segment::Index(i)) => items.get_mut(*i),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use crate::{DevConfig, OriginConfig, load};

    #[test]
    fn relative_paths_are_relative_to_the_file_that_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(
            base.join("origin.yaml"),
            "server:\n  tls:\n    cert: tls/cert.pem\n    key: /abs/key.pem\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("origin.yaml"),
            "extends: base/origin.yaml\nstore:\n  root: ./store\nbackends:\n  - namespace: .*\n    backend:\n      fs:\n        root: backend\n",
        )
        .unwrap();
        let c: OriginConfig = load(dir.path().join("origin.yaml"), &|_| None).unwrap();
        let tls = c.server.tls.unwrap();
        assert_eq!(tls.cert, base.join("tls/cert.pem"));
        assert_eq!(tls.key, std::path::Path::new("/abs/key.pem"));
        assert_eq!(c.store.root.unwrap(), dir.path().join("./store"));
        let crate::Backend::Fs(fs) = &c.backends[0].backend else {
            panic!("{:?}", c.backends[0]);
        };
        assert_eq!(fs.root, dir.path().join("backend"));
    }

    #[test]
    fn an_oci_plugin_source_is_not_a_path() {
        let dir = tempfile::tempdir().unwrap();
        let pinned = format!("oci://127.0.0.1:5000/plugins/p@sha256:{}", "a".repeat(64));
        std::fs::write(
            dir.path().join("dev.yaml"),
            format!(
                "backends:\n  - namespace: .*\n    backend:\n      plugin:\n        \
                 plugin: {pinned}\n  - namespace: x/.*\n    backend:\n      plugin:\n        \
                 plugin: p.wasm\n"
            ),
        )
        .unwrap();
        let c: DevConfig = load(dir.path().join("dev.yaml"), &|_| None).unwrap();
        let source = |i: usize| match &c.backends[i].backend {
            crate::Backend::Plugin(p) => p.plugin.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(source(0), pinned);
        assert_eq!(source(1), dir.path().join("p.wasm").display().to_string());
    }

    #[test]
    fn a_default_stays_relative_to_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("dev.yaml"), "listen: 127.0.0.1:0\n").unwrap();
        let c: DevConfig = load(dir.path().join("dev.yaml"), &|_| None).unwrap();
        assert_eq!(c.data_dir, std::path::Path::new("./shoal-data"));
    }
}
