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
    /// A label for the account; Kraken's examples set it to the user name.
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
