//! Outbound HTTP grants: the hosts a backend's own settings name (address, endpoint,
//! download_url, ...) plus its explicit `allowed_hosts:`, parsed once into typed entries and
//! checked in the one `send_request` hook every plugin request passes.

use std::fmt;

use shoal_config::Backend;

/// One granted host, with or without a port.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Grant {
    /// Lowercase, IPv6 brackets removed.
    host: String,
    /// `None` grants every port of the host.
    port: Option<u16>,
}

/// The hosts a plugin may reach; empty means none (deny by default).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    grants: Vec<Grant>,
}

/// An entry that is neither `host` nor `host:port`.
#[derive(Debug, thiserror::Error)]
#[error("{entry:?} is not a host or host:port, like s3.us-west-1.amazonaws.com or [::1]:9000")]
pub struct BadHost {
    entry: String,
}

impl AllowedHosts {
    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a URL (whose host and port count).
    pub fn parse<'a>(entries: impl IntoIterator<Item = &'a str>) -> Result<Self, BadHost> {
        let mut grants = Vec::new();
        for entry in entries {
            grants.push(parse_entry(entry).ok_or_else(|| BadHost {
                entry: entry.to_owned(),
            })?);
        }
        Ok(AllowedHosts { grants })
    }

    /// The hosts `backend`'s settings name plus its `allowed_hosts:`.
    pub fn for_backend(backend: &Backend) -> Result<Self, BadHost> {
        let mut named: Vec<String> = Vec::new();
        match backend {
            Backend::RegistryBlob(c) | Backend::RegistryTag(c) => named.push(c.address.clone()),
            Backend::Http(c) => {
                named.push(c.download_url.clone());
                named.extend(c.upload_url.clone());
            }
            Backend::S3(c) => {
                // The s3 plugin's defaults: region us-east-1, the AWS regional endpoint.
                let region = if c.region.is_empty() {
                    "us-east-1"
                } else {
                    &c.region
                };
                let endpoint = c
                    .endpoint
                    .clone()
                    .unwrap_or_else(|| format!("s3.{region}.amazonaws.com"));
                // Virtual-hosted addressing puts the bucket in front of the endpoint's host;
                // the plugin addresses by path with force_path_style, for IP addresses and
                // localhost, and for bucket names with dots.
                let virtual_host = parse_entry(&endpoint).filter(|g| {
                    !c.force_path_style
                        && !c.bucket.contains('.')
                        && g.host != "localhost"
                        && g.host.parse::<std::net::IpAddr>().is_err()
                });
                if let Some(g) = virtual_host {
                    named.push(match g.port {
                        Some(port) => format!("{}.{}:{port}", c.bucket, g.host),
                        None => format!("{}.{}", c.bucket, g.host),
                    });
                }
                named.push(endpoint);
            }
            Backend::Gcs(c) => match &c.endpoint {
                Some(endpoint) => named.push(endpoint.clone()),
                None => {
                    named.push("storage.googleapis.com".to_owned());
                    named.push("oauth2.googleapis.com".to_owned());
                }
            },
            Backend::Hdfs(c) => named.extend(c.namenodes.iter().map(|n| n.to_string())),
            Backend::Fs(_) | Backend::Plugin(_) => {}
        }
        // `%s` in URL templates is not part of the host; cut it off with the path.
        let named = named.iter().map(|s| s.split("%s").next().unwrap_or(s));
        let extra = backend.allowed_hosts().iter().map(String::as_str);
        AllowedHosts::parse(named.chain(extra))
    }

    /// True when a request to `uri` is granted. A URI without a host never is.
    pub fn permits(&self, uri: &http::Uri) -> bool {
        let Some(host) = uri.host() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().or(match uri.scheme_str() {
            Some("https") => Some(443),
            Some("http") => Some(80),
            _ => None,
        });
        self.grants
            .iter()
            .any(|g| g.host == host && (g.port.is_none() || g.port == port))
    }
}

impl fmt::Display for AllowedHosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.grants.is_empty() {
            return f.write_str("no hosts");
        }
        for (i, g) in self.grants.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match (g.host.contains(':'), g.port) {
                (true, Some(p)) => write!(f, "[{}]:{p}", g.host)?,
                (false, Some(p)) => write!(f, "{}:{p}", g.host)?,
                (_, None) => f.write_str(&g.host)?,
            }
        }
        Ok(())
    }
}

fn parse_entry(entry: &str) -> Option<Grant> {
    let entry = entry.trim();
    // A URL: keep the authority only.
    let authority = match entry.split_once("://") {
        Some((_, rest)) => rest.split(['/', '?', '#']).next()?,
        None => entry,
    };
    if authority.is_empty() || authority.contains(['@', ' ', '/', '\t']) {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':')?.parse().ok()?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port.parse().ok()?)),
            Some(_) => (authority, None), // a bare IPv6 address
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    Some(Grant {
        host: host.to_ascii_lowercase(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn a_bare_host_grants_every_port() {
        let a = AllowedHosts::parse(["Example.com"]).unwrap();
        assert!(a.permits(&uri("https://example.com/x")));
        assert!(a.permits(&uri("http://EXAMPLE.com:9000/x")));
        assert!(!a.permits(&uri("http://example.org/")));
        assert!(!a.permits(&uri("http://sub.example.com/")));
    }

    #[test]
    fn a_port_grants_only_that_port() {
        let a = AllowedHosts::parse(["127.0.0.1:9000"]).unwrap();
        assert!(a.permits(&uri("http://127.0.0.1:9000/")));
        assert!(!a.permits(&uri("http://127.0.0.1:9001/")));
        assert!(!a.permits(&uri("http://127.0.0.1/")));
        let a = AllowedHosts::parse(["h:443"]).unwrap();
        assert!(
            a.permits(&uri("https://h/")),
            "the scheme's default port counts"
        );
    }

    #[test]
    fn ipv6_literals_parse_with_and_without_ports() {
        let a = AllowedHosts::parse(["[::1]:8080", "fe80::1"]).unwrap();
        assert!(a.permits(&uri("http://[::1]:8080/")));
        assert!(!a.permits(&uri("http://[::1]:8081/")));
        assert!(a.permits(&uri("http://[fe80::1]:1/")));
    }

    #[test]
    fn urls_count_by_their_authority() {
        let a = AllowedHosts::parse(["http://test-domain:9000/download?sha256="]).unwrap();
        assert!(a.permits(&uri("http://test-domain:9000/other")));
    }

    #[test]
    fn nothing_is_granted_by_default() {
        assert!(!AllowedHosts::default().permits(&uri("http://127.0.0.1/")));
    }

    #[test]
    fn rejects_entries_that_are_not_hosts() {
        for bad in [
            "",
            "a b",
            "user@host",
            "host:port",
            "[::1",
            "[::1]x",
            "http://",
        ] {
            assert!(AllowedHosts::parse([bad]).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn s3_grants_its_endpoint_and_the_virtual_host_of_its_bucket() {
        let s3 = |extra: &str| -> AllowedHosts {
            let yaml = format!("s3:\n  region: us-west-1\n  bucket: b\n  username: u\n{extra}");
            let backend: Backend = serde_yaml_ng::from_str(&yaml).unwrap();
            AllowedHosts::for_backend(&backend).unwrap()
        };
        let aws = s3("");
        assert!(aws.permits(&uri("https://s3.us-west-1.amazonaws.com/b/k")));
        assert!(aws.permits(&uri("https://b.s3.us-west-1.amazonaws.com/k")));
        assert!(!aws.permits(&uri("https://other.s3.us-west-1.amazonaws.com/k")));
        let minio = s3("  endpoint: http://minio.internal:9000\n");
        assert!(minio.permits(&uri("http://minio.internal:9000/b/k")));
        assert!(minio.permits(&uri("http://b.minio.internal:9000/k")));
        assert!(!minio.permits(&uri("http://minio.internal:9001/b/k")));
        let path_style = s3("  endpoint: 127.0.0.1:9000\n  force_path_style: true\n");
        assert!(path_style.permits(&uri("http://127.0.0.1:9000/b/k")));
        assert_eq!(path_style.to_string(), "127.0.0.1:9000");
    }

    #[test]
    fn a_backend_grants_the_hosts_its_settings_name() {
        let yaml = "http:\n  download_url: http://blobs.internal:9000/d?sha256=%s\n  allowed_hosts: [cdn.internal]\n";
        let backend: Backend = serde_yaml_ng::from_str(yaml).unwrap();
        let a = AllowedHosts::for_backend(&backend).unwrap();
        assert!(a.permits(&uri("http://blobs.internal:9000/d?sha256=ab")));
        assert!(a.permits(&uri("https://cdn.internal/x")));
        assert!(!a.permits(&uri("http://blobs.internal:9001/")));
        let fs: Backend = serde_yaml_ng::from_str("fs:\n  root: /tmp/x\n").unwrap();
        assert_eq!(
            AllowedHosts::for_backend(&fs).unwrap(),
            AllowedHosts::default()
        );
    }
}
