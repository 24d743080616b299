//! Network names from the config, parsed once so nothing downstream splits strings on `:`
//! (which breaks IPv6 addresses).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A host name or IP address with a port, such as `origin1:15002` or `[::1]:15002`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// Builds one from parts, for tests and for addresses made in code.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        HostPort {
            host: host.into(),
            port,
        }
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Why a string is not `host:port`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {reason}, expected host:port like origin1:15002")]
pub struct HostPortError {
    input: String,
    reason: &'static str,
}

impl FromStr for HostPort {
    type Err = HostPortError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| HostPortError {
            input: input.chars().take(128).collect(),
            reason,
        };
        let (host, port) = if let Some(rest) = input.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| err("a bracketed IPv6 address needs `]:port` after it"))?;
            host.parse::<Ipv6Addr>()
                .map_err(|_| err("not an IPv6 address inside the brackets"))?;
            (host, port)
        } else {
            let (host, port) = input
                .rsplit_once(':')
                .ok_or_else(|| err("missing `:port`"))?;
            if host.contains(':') {
                return Err(err("write IPv6 addresses in brackets, like [::1]:15002"));
            }
            let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
            if host.is_empty() || !host.chars().all(valid) {
                return Err(err("the host must be a DNS name or an IP address"));
            }
            (host, port)
        };
        let port = Some(port)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| err("the port must be a number from 1 to 65535"))?;
        Ok(HostPort::new(host, port))
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A block of IP addresses such as `10.0.0.0/8`; a bare address means just that address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// True when `ip` falls inside the block; an IPv4 address never matches an IPv6 block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Why a string is not a CIDR block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR block {input:?}: {reason}, expected an address block like 10.0.0.0/8")]
pub struct CidrError {
    input: String,
    reason: &'static str,
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| CidrError {
            input: input.chars().take(128).collect(),
            reason,
        };
        let (addr, prefix) = match input.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (input, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => Some(p)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u8>().ok())
                .filter(|p| *p <= max)
                .ok_or_else(|| err("the prefix length is out of range"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Serde glue for types that read and write themselves as one string.
macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_serde!(HostPort);
string_serde!(Cidr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_round_trips() {
        for text in [
            "origin1:15002",
            "10.0.0.1:80",
            "[::1]:15002",
            "a_b.example.com:1",
        ] {
            let hp: HostPort = text.parse().unwrap();
            assert_eq!(hp.to_string(), text);
        }
        let hp: HostPort = "[fe80::1]:7".parse().unwrap();
        assert_eq!((hp.host(), hp.port()), ("fe80::1", 7));
    }

    #[test]
    fn host_port_rejects_bad_input() {
        for text in [
            "", "origin1", ":80", "h:0", "h:65536", "::1:80", "[::1]80", "h h:1", "h:x",
        ] {
            let err = text.parse::<HostPort>().expect_err(text).to_string();
            assert!(err.contains("expected host:port"), "{err}");
        }
    }

    #[test]
    fn cidr_contains() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert_eq!(one.to_string(), "::1/128");
        for bad in ["10.0.0.0/33", "nope/8", "10.0.0.0/x", "10.0.0.0/+8"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn listen_addresses_as_go_servers_take_them() {
        let ok = |s: &str| parse_listen(s).unwrap().to_string();
        assert_eq!(ok(":5000"), "0.0.0.0:5000");
        assert_eq!(ok("localhost:5000"), "127.0.0.1:5000");
        assert_eq!(ok("LocalHost:1"), "127.0.0.1:1");
        assert_eq!(ok("127.0.0.1:0"), "127.0.0.1:0");
        assert_eq!(ok("[::1]:5000"), "[::1]:5000");
        for bad in [
            "",
            ":",
            "5000",
            ":x",
            ":65536",
            "localhost",
            "localhost:",
            "example.com:80",
            "::1:5000",
        ] {
            let e = parse_listen(bad).unwrap_err().to_string();
            assert!(e.contains(":PORT"), "{bad}: {e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn listen_parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_listen(&s);
        }

        #[test]
        fn every_ip_and_port_parses_as_itself(ip: IpAddr, port: u16) {
            let a = SocketAddr::from((ip, port));
            proptest::prop_assert_eq!(parse_listen(&a.to_string()).unwrap(), a);
        }
    }
}

/// Why a string is not an address to listen on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid listen address {input:?}: expected IP:PORT (127.0.0.1:5000, [::1]:5000), \
     localhost:PORT, or :PORT for every interface"
)]
pub struct ListenAddrError {
    input: String,
}

/// Parses an address to listen on, as Go servers (distribution, Kraken) take it: `IP:PORT`,
/// `[IPv6]:PORT`, `:PORT` for every IPv4 interface (`0.0.0.0`), and `localhost:PORT` for the
/// IPv4 loopback. No other name is resolved: a listener binds an address, and a name that
/// resolves differently tomorrow should not move it.
pub fn parse_listen(input: &str) -> Result<SocketAddr, ListenAddrError> {
    let err = || ListenAddrError {
        input: input.chars().take(128).collect(),
    };
    let port = |p: &str| {
        Some(p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
    };
    if let Some(p) = input.strip_prefix(':') {
        return port(p)
            .map(|p| SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)))
            .ok_or_else(err);
    }
    if let Some((host, p)) = input.rsplit_once(':')
        && host.eq_ignore_ascii_case("localhost")
    {
        return port(p)
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, p)))
            .ok_or_else(err);
    }
    input.parse().map_err(|_| err())
}

/// Serde for a `listen:` key: written as `IP:PORT`, read with [`parse_listen`].
pub(crate) mod listen_addr {
    use std::net::SocketAddr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(addr)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse_listen(&raw).map_err(serde::de::Error::custom)
    }

    /// The same for an optional key.
    pub(crate) mod option {
        use std::net::SocketAddr;

        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            addr: &Option<SocketAddr>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match addr {
                Some(a) => s.collect_str(a),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SocketAddr>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|raw| super::super::parse_listen(&raw).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}
