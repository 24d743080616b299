//! Names as Kraken hands them to a registry backend, and the bits of the Distribution API's
//! headers this plugin reads. Pure, so it is tested natively.

use std::fmt;

/// The kind of backend one instance of the component serves; the host writes it into the
/// config as `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub enum Kind {
    /// `registry_blob`: layers (and manifests) by digest, in a repository.
    #[serde(rename = "registry_blob")]
    Blob,
    /// `registry_tag`: `<repo>:<tag>` to the manifest digest.
    #[serde(rename = "registry_tag")]
    Tag,
}

/// Every manifest media type the plugin accepts, as Kraken's `GetSupportedManifestTypes`
/// plus the OCI types: a registry serves a tag in whichever of these it was pushed as.
pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// A content digest, `<algorithm>:<hex>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Digest(String);

impl Digest {
    /// Kraken passes a blob's name as the bare hex of its SHA-256 (`digest.Hex()`); the
    /// prefixed form `sha256:<hex>` (and `sha512:`) is taken too.
    pub fn from_name(name: &str) -> Result<Digest, String> {
        let bad = || {
            format!("{name:?} is not a digest: expected 64 hex digits or sha256:<64 hex digits>")
        };
        let (algorithm, hex) = match name.split_once(':') {
            Some((a, h)) => (a, h),
            None => ("sha256", name),
        };
        let len = match algorithm {
            "sha256" => 64,
            "sha512" => 128,
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad());
        }
        Ok(Digest(format!("{algorithm}:{hex}")))
    }

    /// The digest of `bytes` with SHA-256, as a registry computes a manifest's.
    pub fn sha256_of(bytes: &[u8]) -> Digest {
        use sha2::{Digest as _, Sha256};
        Digest(format!("sha256:{}", hex(&Sha256::digest(bytes))))
    }

    /// `<algorithm>:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks a repository name against the Distribution grammar (lowercase path components
/// joined by `/`, separators `.`, `_`, `__`, `-` inside a component), so nothing else reaches
/// a URL path.
pub fn check_repository(repo: &str) -> Result<(), String> {
    let ok = !repo.is_empty()
        && repo.len() <= 255
        && repo.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
                && part.as_bytes()[0].is_ascii_alphanumeric()
                && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric()
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{repo:?} is not a repository name like library/alpine (lowercase letters, digits, . _ - and /)"
        ))
    }
}

/// Splits a `registry_tag` name `<repo>:<tag>`. A repository never holds a `:` (the registry
/// host is not part of it), so the last `:` is the separator.
pub fn split_tag(name: &str) -> Result<(&str, &str), String> {
    let (repo, tag) = name
        .rsplit_once(':')
        .ok_or_else(|| format!("{name:?} is not <repo>:<tag>, like library/alpine:3.19"))?;
    check_repository(repo)?;
    check_tag(tag)?;
    Ok((repo, tag))
}

/// A tag is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.as_bytes()[0] != b'.'
        && tag.as_bytes()[0] != b'-'
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a tag (letters, digits, _ . -, at most 128)"
        ))
    }
}

/// True for the hosts that serve Docker Hub, where a one-segment name means `library/<name>`.
pub fn is_docker_hub(host: &str) -> bool {
    matches!(
        host.to_ascii_lowercase().as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The repository as the registry at `host` names it: Docker Hub keeps official images under
/// `library/`, which clients leave out (`alpine` is `library/alpine`).
pub fn upstream_repository(host: &str, repo: &str) -> String {
    if is_docker_hub(host) && !repo.contains('/') {
        format!("library/{repo}")
    } else {
        repo.to_owned()
    }
}

/// The region of an ECR registry host, `<account>.dkr.ecr.<region>.amazonaws.com` (or
/// `.amazonaws.com.cn`, or `dkr.ecr-fips`).
pub fn ecr_region(host: &str) -> Option<String> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let mut parts = rest.split('.');
    let account = parts.next()?;
    let (dkr, ecr, region) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && dkr == "dkr"
        && (ecr == "ecr" || ecr == "ecr-fips")
        && !region.is_empty();
    ok.then(|| region.to_owned())
}

/// One `WWW-Authenticate` challenge: its scheme and parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// `bearer` or `basic`, lowercased.
    pub scheme: String,
    /// `realm`, `service`, `scope`, ... with their values unquoted; names lowercased.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Parses `Bearer realm="https://auth/token",service="registry",scope="repository:x:pull"`.
    /// Quoted values may hold commas (a scope with `pull,push` does).
    pub fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, rest) = match header.split_once(char::is_whitespace) {
            Some((s, r)) => (s, r),
            None => (header, ""),
        };
        if scheme.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let mut name = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' || c == ',' {
                    break;
                }
                name.push(c);
                chars.next();
            }
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                break;
            }
            if chars.next() != Some('=') {
                return None;
            }
            let mut value = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => value.extend(chars.next()),
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                if !closed {
                    return None;
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
            params.push((name, value));
        }
        Some(Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params,
        })
    }

    /// The value of parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The target of the `rel="next"` entry of a `Link` header (`</v2/x/tags/list?n=2&last=b>;
/// rel="next"`), as the registry wrote it (a path or an absolute URL).
pub fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|entry| {
        let (target, params) = entry.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        let next = params.split(';').any(|p| {
            let p = p.trim().to_ascii_lowercase();
            p == "rel=\"next\"" || p == "rel=next"
        });
        next.then(|| target.to_owned())
    })
}

/// The value of query parameter `name` in a URL or path, percent-decoded.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' && i + 2 < bytes.len() {
            let digit = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (digit(bytes[i + 1]), digit(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn digests_are_taken_bare_or_prefixed() {
        assert_eq!(
            Digest::from_name(HEX).unwrap().as_str(),
            format!("sha256:{HEX}")
        );
        assert_eq!(
            Digest::from_name(&format!("sha256:{HEX}")).unwrap(),
            Digest::from_name(HEX).unwrap()
        );
        for bad in [
            "",
            "abc",
            &HEX.to_uppercase(),
            &format!("md5:{HEX}"),
            &format!("sha256:{HEX}0"),
            "../../etc/passwd",
        ] {
            assert!(Digest::from_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(Digest::sha256_of(b"").as_str(), format!("sha256:{HEX}"));
    }

    #[test]
    fn tag_names_split_at_the_last_colon() {
        assert_eq!(
            split_tag("library/alpine:3.19").unwrap(),
            ("library/alpine", "3.19")
        );
        for bad in [
            "alpine", "alpine:", ":x", "Alpine:x", "a/../b:x", "a:.x", "a:b/c",
        ] {
            assert!(split_tag(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn docker_hub_gets_library_for_one_segment_names() {
        assert_eq!(
            upstream_repository("index.docker.io", "alpine"),
            "library/alpine"
        );
        assert_eq!(
            upstream_repository("registry-1.docker.io", "me/app"),
            "me/app"
        );
        assert_eq!(upstream_repository("ghcr.io", "alpine"), "alpine");
    }

    #[test]
    fn ecr_hosts_name_their_region() {
        assert_eq!(
            ecr_region("123456789012.dkr.ecr.us-west-2.amazonaws.com").as_deref(),
            Some("us-west-2")
        );
        assert_eq!(
            ecr_region("123456789012.dkr.ecr-fips.us-east-1.amazonaws.com").as_deref(),
            Some("us-east-1")
        );
        assert_eq!(
            ecr_region("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn").as_deref(),
            Some("cn-north-1")
        );
        for other in [
            "index.docker.io",
            "12345.dkr.ecr.us-west-2.amazonaws.com",
            "123456789012.dkr.ecr..amazonaws.com",
            "127.0.0.1",
        ] {
            assert_eq!(ecr_region(other), None, "{other}");
        }
    }

    #[test]
    fn challenges_parse_with_commas_inside_quotes() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/alpine:pull,push")
        );
        let b = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(
            (b.scheme.as_str(), b.param("realm")),
            ("basic", Some("Registry Realm"))
        );
        let spaced = Challenge::parse(r#"Bearer realm = x , service="s""#);
        assert!(spaced.is_some());
        assert_eq!(Challenge::parse(r#"Bearer realm="open"#), None);
        assert_eq!(Challenge::parse("Bearer").unwrap().params, []);
    }

    #[test]
    fn link_headers_yield_the_next_page() {
        let h = r#"</v2/app/tags/list?last=b&n=2>; rel="next""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("/v2/app/tags/list?last=b&n=2")
        );
        assert_eq!(
            query_param(&next_link(h).unwrap(), "last").as_deref(),
            Some("b")
        );
        assert_eq!(next_link(r#"</x>; rel="prev""#), None);
        assert_eq!(
            query_param("/x?last=a%2Fb&n=1", "last").as_deref(),
            Some("a/b")
        );
    }
}
