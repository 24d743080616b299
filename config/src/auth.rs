//! Credentials for storage backends (`auth:`), keyed by the `username` a backend names, so
//! secrets live in one block that can sit in a separate, tighter-permissioned file.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// `auth:` — credentials by backend kind, then by user name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `auth.s3.<user>`.
    pub s3: BTreeMap<String, S3Auth>,
    /// `auth.gcs.<user>`.
    pub gcs: BTreeMap<String, GcsAuth>,
    /// `auth.plugin.<user>.<key>`: secrets of `plugin:` backends, handed to the component
    /// named by the backend's `username` through `get-secret(key)`; redacted when printed.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plugin: BTreeMap<String, BTreeMap<String, Secret>>,
}

/// `auth.s3.<user>`; the inner `s3:` level is Kraken's layout.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Auth {
    /// The keys.
    pub s3: S3Credentials,
}

/// An AWS access key pair.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Credentials {
    /// Kraken's label for the account: when set, it must be the user name the keys sit under
    /// (a key pasted under the wrong user is refused).
    #[serde(default)]
    pub aws: Option<String>,
    /// Access key id.
    pub aws_access_key_id: String,
    /// Secret access key.
    pub aws_secret_access_key: Secret,
    /// Session token for temporary credentials.
    #[serde(default)]
    pub aws_session_token: Option<Secret>,
}

/// `auth.gcs.<user>`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcsAuth {
    /// The key.
    pub gcs: GcsCredentials,
}

/// A GCS service-account key.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcsCredentials {
    /// The service account's JSON key.
    pub access_blob: Secret,
}

impl AuthConfig {
    /// The secrets a backend's plugin receives through its `config` import: the `auth:` entry
    /// its `username` names, flattened to key/value pairs (`aws_access_key_id`,
    /// `aws_secret_access_key`, `aws_session_token`; `access_blob`). Empty for kinds that
    /// take no `auth:` entry; the loader has already checked that every named user exists.
    pub fn secrets_for(&self, backend: &crate::Backend) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match backend {
            crate::Backend::S3(c) => {
                if let Some(a) = self.s3.get(&c.username) {
                    let k = &a.s3;
                    out.insert("aws_access_key_id".into(), k.aws_access_key_id.clone());
                    out.insert(
                        "aws_secret_access_key".into(),
                        k.aws_secret_access_key.expose().to_owned(),
                    );
                    if let Some(t) = &k.aws_session_token {
                        out.insert("aws_session_token".into(), t.expose().to_owned());
                    }
                }
            }
            crate::Backend::Gcs(c) => {
                if let Some(a) = self.gcs.get(&c.username) {
                    out.insert("access_blob".into(), a.gcs.access_blob.expose().to_owned());
                }
            }
            crate::Backend::Plugin(c) => {
                if let Some(entry) = c.username.as_ref().and_then(|u| self.plugin.get(u)) {
                    for (key, secret) in entry {
                        out.insert(key.clone(), secret.expose().to_owned());
                    }
                }
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_backend_gets_every_key_of_its_auth_plugin_entry() {
        let auth: AuthConfig = serde_yaml_ng::from_str(
            "plugin:\n  azure-prod:\n    account_key: k1\n    sas: k2\n  other:\n    x: y\n",
        )
        .unwrap();
        let backend: crate::Backend =
            serde_yaml_ng::from_str("plugin:\n  plugin: azure.wasm\n  username: azure-prod\n")
                .unwrap();
        let secrets = auth.secrets_for(&backend);
        assert_eq!(secrets.len(), 2, "{secrets:?}");
        assert_eq!(secrets["account_key"], "k1");
        assert_eq!(secrets["sas"], "k2");
        let anonymous: crate::Backend =
            serde_yaml_ng::from_str("plugin:\n  plugin: azure.wasm\n").unwrap();
        assert!(auth.secrets_for(&anonymous).is_empty());
    }

    #[test]
    fn secrets_follow_the_backends_username() {
        let auth: AuthConfig = serde_yaml_ng::from_str(
            "s3:\n  alice:\n    s3:\n      aws_access_key_id: AKID\n      aws_secret_access_key: shh\n",
        )
        .unwrap();
        let s3: crate::Backend =
            serde_yaml_ng::from_str("s3:\n  region: us-east-1\n  bucket: b\n  username: alice\n")
                .unwrap();
        let secrets = auth.secrets_for(&s3);
        assert_eq!(secrets["aws_access_key_id"], "AKID");
        assert_eq!(secrets["aws_secret_access_key"], "shh");
        assert!(!secrets.contains_key("aws_session_token"));
        let fs: crate::Backend = serde_yaml_ng::from_str("fs:\n  root: /tmp/x\n").unwrap();
        assert!(auth.secrets_for(&fs).is_empty());
    }
}
