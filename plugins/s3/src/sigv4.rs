//! AWS Signature Version 4 for S3, written out here rather than taken from aws-sdk-s3.
//!
//! Why: the SDK reads every body it sends and receives through its own client, so a blob
//! would cross guest memory (measured at about half native speed, DESIGN.md "Measured"). With
//! the signature computed here over `UNSIGNED-PAYLOAD`, the plugin signs only the request
//! head, splices the host's upload stream into the `wasi:http` body and hands download bodies
//! back to the host untouched. It also keeps the component small (`hmac` + `sha2`).
//!
//! Pure functions over strings and a clock reading, tested natively against the worked
//! example in the S3 documentation.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The payload hash S3 accepts in place of the body's SHA-256 (`x-amz-content-sha256`).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// An access key pair, with a session token for temporary credentials.
#[derive(Clone)]
pub struct Credentials {
    /// `aws_access_key_id`.
    pub access_key_id: String,
    /// `aws_secret_access_key`.
    pub secret_access_key: String,
    /// `aws_session_token`, sent as `x-amz-security-token`.
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

/// One request's head, as it goes on the wire.
#[derive(Debug)]
pub struct Unsigned<'a> {
    /// `GET`, `PUT`, ...
    pub method: &'a str,
    /// The path, already percent-encoded exactly as sent (see [`encode_path`]).
    pub path: &'a str,
    /// Query parameters, not encoded; signed in sorted, encoded form.
    pub query: &'a [(String, String)],
    /// `host` (the authority as sent) and every other header to sign, names in any case.
    pub headers: &'a [(String, String)],
    /// Hex SHA-256 of the body, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
}

/// `20130524T000000Z` and `20130524` for a Unix time in seconds.
pub fn timestamps(unix_seconds: u64) -> (String, String) {
    let days = (unix_seconds / 86_400) as i64;
    let secs = unix_seconds % 86_400;
    let (y, m, d) = civil_from_days(days);
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    (stamp, date)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The `Authorization` header value for `request`, signed at `amz_date`
/// (`YYYYMMDDTHHMMSSZ`, which must also be sent and signed as `x-amz-date`).
pub fn authorization(
    request: &Unsigned<'_>,
    credentials: &Credentials,
    region: &str,
    amz_date: &str,
) -> String {
    let date = &amz_date[..8.min(amz_date.len())];
    let scope = format!("{date}/{region}/s3/aws4_request");
    let (canonical, signed_headers) = canonical_request(request);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = hmac(
        format!("AWS4{}", credentials.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    for part in [region, "s3", "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex::encode(hmac(&key, string_to_sign.as_bytes()));
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        credentials.access_key_id
    )
}

/// The canonical request and the `SignedHeaders` list.
fn canonical_request(request: &Unsigned<'_>) -> (String, String) {
    let mut query: Vec<(String, String)> = request
        .query
        .iter()
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    query.sort();
    let query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed = headers
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical = format!(
        "{}\n{}\n{query}\n{canonical_headers}\n{signed}\n{}",
        request.method, request.path, request.payload_hash
    );
    (canonical, signed)
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Percent-encodes everything but the unreserved characters (`A-Z a-z 0-9 - . _ ~`), and `/`
/// too unless `slash` is false: SigV4's `UriEncode`.
pub fn encode(value: &str, slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// An object path as S3 wants it on the wire and in the signature: each segment encoded
/// once, slashes kept.
pub fn encode_path(path: &str) -> String {
    encode(path, false)
}

/// The query string as sent: the same encoding and order as the signature uses.
pub fn encode_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<(String, String)> = query
        .iter()
        .map(|(k, v)| (encode(k, true), encode(v, true)))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Hex SHA-256 of a small body held in memory (XML requests).
pub fn sha256_hex(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        Credentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// "Example: GET Object" of the S3 SigV4 header-signing documentation.
    #[test]
    fn signs_the_documented_get_object_example() {
        let empty = sha256_hex(b"");
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("Range", "bytes=0-9"),
            ("x-amz-content-sha256", &empty),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let request = Unsigned {
            method: "GET",
            path: "/test.txt",
            query: &[],
            headers: &headers,
            payload_hash: &empty,
        };
        let auth = authorization(
            &request,
            &example_credentials(),
            "us-east-1",
            "20130524T000000Z",
        );
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    /// "Example: GET Bucket Lifecycle" (a query parameter without a value).
    #[test]
    fn signs_the_documented_lifecycle_example() {
        let empty = sha256_hex(b"");
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", &empty),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let query = h(&[("lifecycle", "")]);
        let request = Unsigned {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_hash: &empty,
        };
        let auth = authorization(
            &request,
            &example_credentials(),
            "us-east-1",
            "20130524T000000Z",
        );
        assert!(
            auth.ends_with(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
            ),
            "{auth}"
        );
    }

    /// "Example: GET Bucket (List Objects)": two parameters, sorted.
    #[test]
    fn signs_the_documented_list_example() {
        let empty = sha256_hex(b"");
        let headers = h(&[
            ("Host", "examplebucket.s3.amazonaws.com"),
            ("x-amz-content-sha256", &empty),
            ("x-amz-date", "20130524T000000Z"),
        ]);
        let query = h(&[("prefix", "J"), ("max-keys", "2")]);
        let request = Unsigned {
            method: "GET",
            path: "/",
            query: &query,
            headers: &headers,
            payload_hash: &empty,
        };
        let auth = authorization(
            &request,
            &example_credentials(),
            "us-east-1",
            "20130524T000000Z",
        );
        assert!(
            auth.ends_with(
                "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
            ),
            "{auth}"
        );
        assert_eq!(encode_query(&query), "max-keys=2&prefix=J");
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(
            timestamps(1_369_353_600),
            ("20130524T000000Z".into(), "20130524".into())
        );
        assert_eq!(
            timestamps(0),
            ("19700101T000000Z".into(), "19700101".into())
        );
        // 2024-02-29T23:59:59Z, a leap day.
        assert_eq!(timestamps(1_709_251_199).0, "20240229T235959Z");
    }

    #[test]
    fn paths_encode_each_byte_once_and_keep_slashes() {
        assert_eq!(encode_path("a b/c+d%e=f"), "a%20b/c%2Bd%25e%3Df");
        assert_eq!(encode_path("ü/~x"), "%C3%BC/~x");
        assert_eq!(encode("a/b", true), "a%2Fb");
    }
}
