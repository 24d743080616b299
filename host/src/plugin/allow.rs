//! Outbound HTTP grants: the hosts a backend's own settings name (address, endpoint,
//! download_url, ...) plus its explicit `allowed_hosts:`, parsed once into typed entries and
//! checked in the one `send_request` hook every plugin request passes.

use std::fmt;

use shoal_config::Backend;

/// Hosts a Docker Hub backend needs besides its address: the registry API, the token server
/// its `WWW-Authenticate` names, and the CDN it redirects blob reads to.
const DOCKER_HUB_HOSTS: [&str; 3] = [
    "registry-1.docker.io",
    "auth.docker.io",
    "production.cloudflare.docker.com",
];

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
            Backend::RegistryBlob(c) | Backend::RegistryTag(c) => {
                named.push(c.address.clone());
                // Docker Hub sends clients to its token server and its blob CDN; a registry
                // elsewhere names its own in `allowed_hosts`.
                if parse_entry(&c.address).is_some_and(|g| {
                    matches!(
                        g.host.as_str(),
                        "docker.io" | "index.docker.io" | "registry-1.docker.io"
                    )
                }) {
                    named.extend(DOCKER_HUB_HOSTS.iter().map(|h| (*h).to_owned()));
                }
                if c.security.creds_store.as_deref() == Some("ecr-login") {
                    let region = c
                        .security
                        .ecr
                        .region
                        .clone()
                        .or_else(|| ecr_region(&c.address));
                    match (&c.security.ecr.endpoint, region) {
                        (Some(endpoint), _) => named.push(endpoint.clone()),
                        (None, Some(region)) if region.starts_with("cn-") => {
                            named.push(format!("api.ecr.{region}.amazonaws.com.cn"))
                        }
                        (None, Some(region)) => {
                            named.push(format!("api.ecr.{region}.amazonaws.com"))
                        }
                        // The plugin says what is missing on its first call.
                        (None, None) => {}
                    }
                }
            }
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
            // WebHDFS redirects every read and write to a data node, which the name node
            // picks: those are other hosts, and the operator names them in `allowed_hosts:`
            // (a bare host grants its every port). Nothing is derived from the redirects.
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

/// The region of an ECR registry address, `<account>.dkr.ecr.<region>.amazonaws.com[.cn]`
/// (the plugin parses it the same way), so `ecr-login` may reach that region's ECR API.
fn ecr_region(address: &str) -> Option<String> {
    let host = parse_entry(address)?.host;
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    match rest.split('.').collect::<Vec<_>>()[..] {
        [account, "dkr", "ecr" | "ecr-fips", region]
            if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some(region.to_owned())
        }
        _ => None,
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
    fn gcs_grants_google_and_its_token_endpoint_or_only_the_emulator() {
        let gcs = |extra: &str| -> AllowedHosts {
            let yaml = format!("gcs:\n  bucket: b\n  username: u\n{extra}");
            let backend: Backend = serde_yaml_ng::from_str(&yaml).unwrap();
            AllowedHosts::for_backend(&backend).unwrap()
        };
        let google = gcs("");
        assert!(google.permits(&uri("https://storage.googleapis.com/storage/v1/b/b/o")));
        assert!(google.permits(&uri("https://oauth2.googleapis.com/token")));
        assert!(!google.permits(&uri("https://www.googleapis.com/")));
        let emulator = gcs("  endpoint: http://127.0.0.1:4443\n  allowed_hosts: ['127.0.0.1:9']\n");
        assert!(emulator.permits(&uri("http://127.0.0.1:4443/storage/v1/b")));
        assert!(emulator.permits(&uri("http://127.0.0.1:9/token")));
        assert!(!emulator.permits(&uri("https://oauth2.googleapis.com/token")));
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

    #[test]
    fn hdfs_grants_its_name_nodes_and_the_data_nodes_it_lists() {
        let yaml =
            "hdfs:\n  namenodes: ['nn1:50070', '[::1]:9870']\n  allowed_hosts: [dn1.internal]\n";
        let backend: Backend = serde_yaml_ng::from_str(yaml).unwrap();
        let a = AllowedHosts::for_backend(&backend).unwrap();
        assert!(a.permits(&uri("http://nn1:50070/webhdfs/v1/x?op=OPEN")));
        assert!(a.permits(&uri("http://[::1]:9870/webhdfs/v1/x?op=OPEN")));
        assert!(!a.permits(&uri("http://nn1:50075/webhdfs/v1/x?op=OPEN")));
        assert!(a.permits(&uri("http://dn1.internal:9864/webhdfs/v1/x?op=OPEN")));
        assert!(a.permits(&uri("http://dn1.internal:50075/webhdfs/v1/x?op=CREATE")));
        assert!(!a.permits(&uri("http://dn2.internal:9864/webhdfs/v1/x?op=OPEN")));
    }

    #[test]
    fn docker_hub_grants_its_token_server_and_cdn() {
        let yaml = "registry_blob:\n  address: index.docker.io\n";
        let backend: Backend = serde_yaml_ng::from_str(yaml).unwrap();
        let a = AllowedHosts::for_backend(&backend).unwrap();
        for url in [
            "https://index.docker.io/v2/",
            "https://auth.docker.io/token",
            "https://production.cloudflare.docker.com/x",
        ] {
            assert!(a.permits(&uri(url)), "{url}");
        }
        let other: Backend =
            serde_yaml_ng::from_str("registry_blob:\n  address: ghcr.io\n").unwrap();
        assert!(
            !AllowedHosts::for_backend(&other)
                .unwrap()
                .permits(&uri("https://auth.docker.io/token"))
        );
    }

    #[test]
    fn ecr_login_grants_the_regions_ecr_api() {
        let yaml = "registry_tag:\n  address: 123456789012.dkr.ecr.eu-west-1.amazonaws.com\n  security:\n    credsStore: ecr-login\n";
        let backend: Backend = serde_yaml_ng::from_str(yaml).unwrap();
        let a = AllowedHosts::for_backend(&backend).unwrap();
        assert!(a.permits(&uri(
            "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com/v2/"
        )));
        assert!(a.permits(&uri("https://api.ecr.eu-west-1.amazonaws.com/")));
        assert!(!a.permits(&uri("https://api.ecr.us-east-1.amazonaws.com/")));
        let yaml = "registry_blob:\n  address: 127.0.0.1:5000\n  security:\n    credsStore: ecr-login\n    ecr: {endpoint: 'http://127.0.0.1:9999', region: us-east-1}\n";
        let backend: Backend = serde_yaml_ng::from_str(yaml).unwrap();
        let a = AllowedHosts::for_backend(&backend).unwrap();
        assert!(a.permits(&uri("http://127.0.0.1:9999/")));
        assert!(!a.permits(&uri("https://api.ecr.us-east-1.amazonaws.com/")));
        let plain: Backend = serde_yaml_ng::from_str(
            "registry_blob:\n  address: 123456789012.dkr.ecr.eu-west-1.amazonaws.com\n",
        )
        .unwrap();
        assert!(
            !AllowedHosts::for_backend(&plain)
                .unwrap()
                .permits(&uri("https://api.ecr.eu-west-1.amazonaws.com/"))
        );
    }
}
