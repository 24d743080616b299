//! `fs`: a local folder, the default backend of `shoal dev`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::NamePath;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// Blobs and tags as files under `root`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FsBackend {
    /// The folder; relative paths are relative to the working directory.
    pub root: PathBuf,
    /// File naming [identity].
    #[serde(default)]
    pub name_path: NamePath,
}

impl Validate for FsBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.root.as_os_str().is_empty(),
            &at.key("root"),
            "is empty",
            "a folder path",
        );
    }
}

impl super::BackendKind for FsBackend {
    fn name_path(&self) -> Option<NamePath> {
        Some(self.name_path)
    }
}
