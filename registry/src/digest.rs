//! Content digests (`sha256:<hex>`, `sha512:<hex>`) as parsed types, and a streaming hasher.
//!
//! Every blob and manifest in shoal is named by its digest; parsing once at the edge means the
//! store never sees a string it would have to re-check.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest as _, Sha256, Sha512};

/// The hash algorithms shoal accepts for content, as the OCI image spec registers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the canonical algorithm; 64 lowercase hex characters.
    Sha256,
    /// SHA-512; 128 lowercase hex characters.
    Sha512,
}

impl Algorithm {
    /// The name used in a digest string.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex-encoded value.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated content digest: algorithm plus lowercase hex value of the right length.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

/// Why a string is not a digest; the message says what form was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm: expected the form sha256:<64 hex digits>")]
    MissingAlgorithm(String),
    /// An algorithm shoal does not support (or a malformed one).
    #[error("digest algorithm {0:?} is not supported: expected sha256 or sha512")]
    UnsupportedAlgorithm(String),
    /// Encoded part has the wrong length or characters.
    #[error("digest value {value:?} is not valid {algorithm}: expected {len} lowercase hex digits")]
    BadEncoding {
        /// The algorithm named.
        algorithm: &'static str,
        /// The offending encoded part.
        value: String,
        /// Expected length.
        len: usize,
    },
}

impl Digest {
    /// Builds a digest from an algorithm and raw hash bytes.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        Digest {
            algorithm,
            hex: hex::encode(bytes),
        }
    }

    /// SHA-256 of a byte slice; for manifests and other small documents.
    pub fn sha256_of(data: &[u8]) -> Self {
        Digest::from_bytes(Algorithm::Sha256, &Sha256::digest(data))
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, value)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            other => return Err(DigestError::UnsupportedAlgorithm(other.to_owned())),
        };
        let ok = value.len() == algorithm.hex_len()
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !ok {
            return Err(DigestError::BadEncoding {
                algorithm: algorithm.as_str(),
                value: value.to_owned(),
                len: algorithm.hex_len(),
            });
        }
        Ok(Digest {
            algorithm,
            hex: value.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental hasher for one algorithm, fed while a body streams past.
#[derive(Clone)]
pub enum Digester {
    /// SHA-256 state.
    Sha256(Sha256),
    /// SHA-512 state.
    Sha512(Sha512),
}

impl Digester {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Self {
        match algorithm {
            Algorithm::Sha256 => Digester::Sha256(Sha256::new()),
            Algorithm::Sha512 => Digester::Sha512(Sha512::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Digester::Sha256(h) => h.update(data),
            Digester::Sha512(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far (the state is kept, so more can follow).
    pub fn current(&self) -> Digest {
        match self {
            Digester::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.clone().finalize()),
            Digester::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.clone().finalize()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_prints_sha256() {
        let d: Digest = EMPTY256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn sha512_digester_matches_known_value() {
        let mut h = Digester::new(Algorithm::Sha512);
        h.update(b"abc");
        assert!(h.current().hex().starts_with("ddaf35a193617aba"));
        assert_eq!(h.current().to_string().len(), "sha512:".len() + 128);
    }

    #[test]
    fn rejects_bad_digests() {
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855a",
            "sha256:z3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha512:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "SHA256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ] {
            assert!(bad.parse::<Digest>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn streaming_equals_one_shot() {
        let mut h = Digester::new(Algorithm::Sha256);
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.current(), Digest::sha256_of(b"hello world"));
    }

    proptest! {
        #[test]
        fn never_panics(s in ".{0,200}") {
            let _ = s.parse::<Digest>();
        }

        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 32)) {
            let d = Digest::from_bytes(Algorithm::Sha256, &bytes);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        }

        #[test]
        fn chunking_does_not_change_digest(data in proptest::collection::vec(any::<u8>(), 0..2000), cut in 0usize..2000) {
            let cut = cut.min(data.len());
            let mut h = Digester::new(Algorithm::Sha256);
            h.update(&data[..cut]);
            h.update(&data[cut..]);
            prop_assert_eq!(h.current(), Digest::sha256_of(&data));
        }
    }
}
