//! The roles one `shoal` binary can run, as named on its command line.

use std::fmt;
use std::str::FromStr;

use crate::decode::closest;
use crate::error::ConfigError;

/// Which process a config file is for; picks the struct `shoal config check ROLE FILE` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The node-local read-only registry and P2P peer.
    Agent,
    /// The dedicated seeder in front of the storage backends.
    Origin,
    /// The announce service that hands out peers.
    Tracker,
    /// The tag-to-digest service.
    BuildIndex,
    /// The push side of the registry API.
    Proxy,
    /// Every role in one process, for trying shoal out.
    Dev,
}

impl Role {
    /// Every role, in the order the docs list them.
    pub const ALL: [Role; 6] = [
        Role::Agent,
        Role::Origin,
        Role::Tracker,
        Role::BuildIndex,
        Role::Proxy,
        Role::Dev,
    ];

    /// The command-line spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Origin => "origin",
            Role::Tracker => "tracker",
            Role::BuildIndex => "build-index",
            Role::Proxy => "proxy",
            Role::Dev => "dev",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ConfigError;

    fn from_str(given: &str) -> Result<Self, Self::Err> {
        if let Some(role) = Role::ALL.into_iter().find(|r| r.as_str() == given) {
            return Ok(role);
        }
        let names = Role::ALL.map(Role::as_str);
        let normalized = given.to_ascii_lowercase().replace('_', "-");
        Err(ConfigError::UnknownRole {
            given: given.to_owned(),
            hint: closest(&normalized, &names).map(str::to_owned),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_name_and_suggests_near_misses() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        }
        let err = "build_index".parse::<Role>().unwrap_err().to_string();
        assert!(err.contains("did you mean `build-index`?"), "{err}");
    }
}
