//! The request id: one per request, on the request's log line, on every other line logged
//! while it is served (a span field), and in the `X-Request-Id` response header, so an
//! operator can find a client's failed request in the logs.
//!
//! A client (or a load balancer in front) may send its own `X-Request-Id`; it is kept when it
//! is short and made of characters that cannot forge a log line, else a new one is made.

use axum::http::{HeaderMap, HeaderName, HeaderValue};

/// The header the id travels in, both ways.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest id taken from a client: a UUID is 36 characters, AWS's ids are shorter.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// One request's id; also in the request's extensions for handlers that pass it on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// The client's `X-Request-Id` when it is well formed (1 to [`MAX_REQUEST_ID_LEN`] of
    /// `A-Z a-z 0-9 - _ . : ~`), else a new one.
    pub fn for_request(headers: &HeaderMap) -> RequestId {
        headers
            .get(X_REQUEST_ID)
            .and_then(|v| RequestId::parse(v.as_bytes()))
            .unwrap_or_else(RequestId::generate)
    }

    /// `text` as an id, if it is well formed.
    pub fn parse(text: &[u8]) -> Option<RequestId> {
        let well_formed = (1..=MAX_REQUEST_ID_LEN).contains(&text.len())
            && text.iter().all(|&b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'~')
            });
        // Checked above: ASCII only.
        well_formed.then(|| RequestId(String::from_utf8_lossy(text).into_owned()))
    }

    /// A new id: 64 random bits in hex, unique enough to find one request in a day of logs.
    pub fn generate() -> RequestId {
        RequestId(format!("{:016x}", rand::random::<u64>()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as a header value.
    pub fn header_value(&self) -> HeaderValue {
        // Only ASCII letters, digits and punctuation: always a valid value.
        HeaderValue::from_str(&self.0).unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_well_formed_client_id_is_kept() {
        let uuid = "0d4c7b9e-2f1a-4c3b-9a8e-5d6f7a8b9c0d";
        assert_eq!(RequestId::for_request(&with(uuid)).as_str(), uuid);
        assert_eq!(
            RequestId::for_request(&with("ci:job.42~a_b")).as_str(),
            "ci:job.42~a_b"
        );
    }

    #[test]
    fn a_bad_or_missing_client_id_is_replaced() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for bad in ["", "two words", "x\"y", "a/b", "é", long.as_str()] {
            let mut h = HeaderMap::new();
            h.insert(
                X_REQUEST_ID,
                HeaderValue::from_bytes(bad.as_bytes()).unwrap(),
            );
            let id = RequestId::for_request(&h);
            assert_ne!(id.as_str(), bad);
            assert_eq!(id.as_str().len(), 16, "{id}");
        }
        let a = RequestId::for_request(&HeaderMap::new());
        let b = RequestId::for_request(&HeaderMap::new());
        assert_ne!(a, b);
    }

    proptest! {
        #[test]
        fn any_id_accepted_is_a_valid_header_and_short(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            if let Some(id) = RequestId::parse(&bytes) {
                prop_assert!(id.as_str().len() <= MAX_REQUEST_ID_LEN);
                prop_assert!(HeaderValue::from_str(id.as_str()).is_ok());
                prop_assert!(!id.as_str().contains(['"', ' ', '\n', '=']));
            }
        }
    }
}
