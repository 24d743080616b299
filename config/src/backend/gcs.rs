//! `gcs`: Google Cloud Storage.

use serde::{Deserialize, Serialize};

use super::NamePath;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// GCS resumable uploads send chunks in multiples of this size.
const CHUNK_QUANTUM: u64 = 256 * 1024;

/// A bucket, a folder in it, and the `auth.gcs` user whose key opens it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GcsBackend {
    /// Selects the credentials under `auth.gcs`.
    pub username: String,
    /// Bucket name.
    pub bucket: String,
    /// Prefix for every object [""].
    #[serde(default)]
    pub root_directory: String,
    /// Object naming [identity].
    #[serde(default)]
    pub name_path: NamePath,
    /// The JSON API's base URL, for emulators such as fake-gcs-server
    /// (`http://127.0.0.1:4443`); unset means `https://storage.googleapis.com`. Unset, the
    /// plugin may reach Google's storage and token hosts; set, only this one, so a key whose
    /// `token_uri` is elsewhere needs that host in `allowed_hosts`. With no key granted, requests
    /// to an endpoint go out without `Authorization`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Resumable-upload chunk size in bytes [16MiB].
    #[serde(default = "default_chunk_size")]
    pub upload_chunk_size: u64,
    /// Extra hosts the backend may reach besides the GCS endpoint.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_chunk_size() -> u64 {
    16 * 1024 * 1024
}

impl Validate for GcsBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.bucket.is_empty(),
            &at.key("bucket"),
            "is empty",
            "a bucket name",
        );
        problems.require(
            self.upload_chunk_size >= CHUNK_QUANTUM
                && self.upload_chunk_size.is_multiple_of(CHUNK_QUANTUM),
            &at.key("upload_chunk_size"),
            "GCS needs upload chunks in whole multiples of 256 KiB",
            "a multiple of 262144 bytes, like 16777216",
        );
    }
}

impl super::BackendKind for GcsBackend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    fn name_path(&self) -> Option<NamePath> {
        Some(self.name_path)
    }
}
