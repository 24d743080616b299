//! How a role names another cluster: `static:` host list or one `dns:` name, exactly one.

use serde::{Deserialize, Serialize};

use crate::net::HostPort;

/// The members of a cluster (origins, trackers, build-indexes), as Kraken's `hosts:` block.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawHosts", into = "RawHosts")]
pub enum Hosts {
    /// A fixed list, e.g. `static: [origin1:15002, origin2:15002]`.
    Static(Vec<HostPort>),
    /// A DNS name re-resolved on every refresh, e.g. `dns: origin.example.com:15002`.
    Dns(HostPort),
}

/// The YAML shape, checked for exactly one key when converted into [`Hosts`].
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawHosts {
    #[serde(rename = "static", default, skip_serializing_if = "Option::is_none")]
    static_: Option<Vec<HostPort>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dns: Option<HostPort>,
}

impl TryFrom<RawHosts> for Hosts {
    type Error = String;

    fn try_from(raw: RawHosts) -> Result<Self, Self::Error> {
        match (raw.static_, raw.dns) {
            (Some(list), None) if list.is_empty() => {
                Err("`static` lists no hosts, expected at least one host:port".to_owned())
            }
            (Some(list), None) => Ok(Hosts::Static(list)),
            (None, Some(dns)) => Ok(Hosts::Dns(dns)),
            (Some(_), Some(_)) => {
                Err("both `static` and `dns` are set, expected exactly one of them".to_owned())
            }
            (None, None) => Err(
                "no hosts given, expected `static: [host:port, ...]` or `dns: name:port`"
                    .to_owned(),
            ),
        }
    }
}

impl From<Hosts> for RawHosts {
    fn from(hosts: Hosts) -> Self {
        match hosts {
            Hosts::Static(list) => RawHosts {
                static_: Some(list),
                dns: None,
            },
            Hosts::Dns(name) => RawHosts {
                static_: None,
                dns: Some(name),
            },
        }
    }
}

/// For `hosts:` keys that must be present when their section is: serde treats a missing
/// `Option` as `None` unless the field has its own deserializer, which this is.
pub(crate) fn required<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Hosts>, D::Error> {
    Hosts::deserialize(d).map(Some)
}
