//! Checks that serde cannot express (cross references, ranges, URL templates), collected so one
//! run of `shoal config check` reports every problem at once.

use crate::keypath::KeyPath;

/// Problems found by semantic validation, each at a key path; files are attached later.
#[derive(Debug, Default)]
pub struct Problems {
    pub(crate) items: Vec<Found>,
}

/// One semantic problem before it is located in a file.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) path: KeyPath,
    pub(crate) message: String,
    pub(crate) expected: Option<String>,
    pub(crate) hint: Option<String>,
}

impl Problems {
    /// Records a problem at `path`.
    pub(crate) fn at(
        &mut self,
        path: &KeyPath,
        message: impl Into<String>,
        expected: &str,
    ) -> &mut Found {
        self.items.push(Found {
            path: path.clone(),
            message: message.into(),
            expected: (!expected.is_empty()).then(|| expected.to_owned()),
            hint: None,
        });
        let last = self.items.len() - 1;
        &mut self.items[last]
    }

    /// Records `message` at `path` unless `ok`.
    pub(crate) fn require(&mut self, ok: bool, path: &KeyPath, message: &str, expected: &str) {
        if !ok {
            self.at(path, message, expected);
        }
    }

    /// Requires a count or size to be at least one.
    pub(crate) fn at_least_one(&mut self, value: u64, path: &KeyPath) {
        self.require(
            value >= 1,
            path,
            "must be at least 1",
            "a number of 1 or more",
        );
    }
}

/// A config section that can check itself; `at` is where the section sits in the document.
pub(crate) trait Validate {
    fn validate(&self, at: &KeyPath, problems: &mut Problems);
}
