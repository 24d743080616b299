//! `s3`: Amazon S3 or an S3-compatible server such as MinIO.

use serde::{Deserialize, Serialize};

use super::NamePath;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// S3's minimum multipart part size.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;

/// A bucket, a folder in it, and the `auth.s3` user whose keys open it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Backend {
    /// AWS region, e.g. `us-west-1`.
    pub region: String,
    /// Bucket name.
    pub bucket: String,
    /// Prefix for every object [""].
    #[serde(default)]
    pub root_directory: String,
    /// Object naming [identity].
    #[serde(default)]
    pub name_path: NamePath,
    /// Selects the credentials under `auth.s3`.
    pub username: String,
    /// Endpoint for S3-compatible servers; unset means AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Plain HTTP to `endpoint` [false].
    #[serde(default)]
    pub disable_ssl: bool,
    /// `endpoint/bucket/key` addressing instead of virtual hosts, as MinIO needs [false].
    #[serde(default)]
    pub force_path_style: bool,
    /// Multipart upload part size in bytes [64MiB].
    #[serde(default = "default_part_size")]
    pub upload_part_size: u64,
    /// Extra hosts the backend may reach besides the S3 endpoint.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_part_size() -> u64 {
    64 * 1024 * 1024
}

impl Validate for S3Backend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.bucket.is_empty(),
            &at.key("bucket"),
            "is empty",
            "a bucket name",
        );
        problems.require(
            self.upload_part_size >= MIN_PART_SIZE,
            &at.key("upload_part_size"),
            "is below S3's 5 MiB minimum part size",
            "at least 5242880 bytes",
        );
    }
}

impl super::BackendKind for S3Backend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    fn name_path(&self) -> Option<NamePath> {
        Some(self.name_path)
    }
}
