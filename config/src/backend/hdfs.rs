//! `hdfs`: HDFS through the WebHDFS REST API.

use serde::{Deserialize, Serialize};

use super::NamePath;
use crate::keypath::KeyPath;
use crate::net::HostPort;
use crate::validate::{Problems, Validate};

/// Name nodes to try in turn, and where under them the blobs live.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HdfsBackend {
    /// WebHDFS name nodes, `host:port`, at least one.
    pub namenodes: Vec<HostPort>,
    /// Folder for every object [/infra/dockerRegistry/, as Kraken].
    #[serde(default = "default_root")]
    pub root_directory: String,
    /// Object naming [identity].
    #[serde(default)]
    pub name_path: NamePath,
    /// `user.name` sent to WebHDFS; Kraken spells the key `username`.
    #[serde(default, alias = "username")]
    pub user_name: Option<String>,
    /// Extra hosts the backend may reach, e.g. the data nodes WebHDFS redirects to.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_root() -> String {
    "/infra/dockerRegistry/".to_owned()
}

impl Validate for HdfsBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.namenodes.is_empty(),
            &at.key("namenodes"),
            "lists no name nodes",
            "at least one host:port, like namenode1:50070",
        );
    }
}

impl super::BackendKind for HdfsBackend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    fn name_path(&self) -> Option<NamePath> {
        Some(self.name_path)
    }
}
