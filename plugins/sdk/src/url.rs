//! The few URL parts `wasi:http` asks for (scheme, authority, path with query), parsed
//! without a URL crate so plugins stay small. Pure, so it is tested natively.

use std::fmt;

/// `http` or `https`; nothing else reaches the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

/// An absolute http(s) URL split the way `wasi:http/types.outgoing-request` takes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Url {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host`, `host:port` or `[v6]:port`, as written.
    pub authority: String,
    /// Everything from the first `/` or `?` on; `/` when the URL has no path.
    pub path_with_query: String,
}

/// Why a string is not an absolute http(s) URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadUrl(pub String);

impl fmt::Display for BadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an http(s) URL like http://host:port/path",
            self.0
        )
    }
}

impl std::error::Error for BadUrl {}

impl Url {
    /// Parses `http://authority/path?query`.
    pub fn parse(s: &str) -> Result<Url, BadUrl> {
        let bad = || BadUrl(s.to_owned());
        let (scheme, rest) = if let Some(rest) = s.strip_prefix("http://") {
            (Scheme::Http, rest)
        } else if let Some(rest) = s.strip_prefix("https://") {
            (Scheme::Https, rest)
        } else {
            return Err(bad());
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.is_empty()
            || authority.contains('@')
            || authority.contains(char::is_whitespace)
        {
            return Err(bad());
        }
        // A fragment never goes on the wire.
        let tail = tail.split('#').next().unwrap_or("");
        let path_with_query = if tail.starts_with('/') {
            tail.to_owned()
        } else {
            format!("/{tail}")
        };
        Ok(Url {
            scheme,
            authority: authority.to_owned(),
            path_with_query,
        })
    }

    /// The host without the port (brackets of an IPv6 literal kept off).
    pub fn host(&self) -> &str {
        let a = self.authority.as_str();
        if let Some(v6) = a.strip_prefix('[') {
            return v6.split(']').next().unwrap_or(v6);
        }
        a.rsplit_once(':').map_or(a, |(h, _)| h)
    }
}

/// Replaces the single `%s` of a `download_url` template with `value`, percent-encoding the
/// characters that would change the URL's structure (`:` and `/` stay: a name may be a path).
pub fn fill_template(template: &str, value: &str) -> String {
    template.replacen("%s", &percent_encode(value, ":/"), 1)
}

/// Percent-encodes every byte of `value` but RFC 3986's unreserved characters
/// (`A-Z a-z 0-9 - . _ ~`) and the ASCII characters in `keep`, as `%XX` in upper-case hex.
///
/// One encoder for every plugin, because each place a name meets a URL wants the same rule
/// with a different set kept: `""` for one query value or path segment (SigV4's
/// `UriEncode`, a GCS object name), `"/"` for a path whose folders stay folders (an S3 key, a
/// WebHDFS path).
pub fn percent_encode(value: &str, keep: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || keep.as_bytes().contains(&b)
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_scheme_authority_and_path() {
        let u = Url::parse("http://127.0.0.1:9000/download?sha256=ab#frag").unwrap();
        assert_eq!(u.scheme, Scheme::Http);
        assert_eq!(u.authority, "127.0.0.1:9000");
        assert_eq!(u.path_with_query, "/download?sha256=ab");
        assert_eq!(u.host(), "127.0.0.1");
        let u = Url::parse("https://example.com").unwrap();
        assert_eq!((u.scheme, u.path_with_query.as_str()), (Scheme::Https, "/"));
        let u = Url::parse("http://h?x=1").unwrap();
        assert_eq!(u.path_with_query, "/?x=1");
    }

    #[test]
    fn ipv6_hosts_keep_their_colons() {
        let u = Url::parse("http://[::1]:8080/x").unwrap();
        assert_eq!(u.authority, "[::1]:8080");
        assert_eq!(u.host(), "::1");
    }

    #[test]
    fn rejects_what_is_not_http() {
        for bad in [
            "ftp://x/",
            "http://",
            "http:///x",
            "//x",
            "http://user@x/",
            "x",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn template_is_filled_once_and_encoded() {
        assert_eq!(
            fill_template("http://h/d?sha256=%s", "abc"),
            "http://h/d?sha256=abc"
        );
        assert_eq!(fill_template("http://h/%s", "a b&c"), "http://h/a%20b%26c");
        assert_eq!(fill_template("http://h/%s/%s", "x"), "http://h/x/%s");
        assert_eq!(fill_template("http://h/%s", "a:b/c~"), "http://h/a:b/c~");
    }

    #[test]
    fn percent_encoding_keeps_unreserved_and_what_is_asked() {
        assert_eq!(
            percent_encode("repository:library/a:pull", ""),
            "repository%3Alibrary%2Fa%3Apull"
        );
        assert_eq!(percent_encode("A-z_0.9~", ""), "A-z_0.9~");
        assert_eq!(percent_encode("a b/c+d%e=f", "/"), "a%20b/c%2Bd%25e%3Df");
        assert_eq!(percent_encode("a/b c+d%e=f", ""), "a%2Fb%20c%2Bd%25e%3Df");
        assert_eq!(percent_encode("ü/~x", "/"), "%C3%BC/~x");
    }
}
