//! Sizes written the way Kraken's YAML writes them (Go's `datasize`): `4MB`, `2GB`, `512KB`,
//! `100B`, or a plain number of bytes. Units are powers of 1024, as in `datasize`; `KiB`,
//! `MiB`, ... are accepted as the same.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What every size error tells the reader to write instead.
pub const SIZE_FORM: &str = "a size like 4MB, 512KB or 1GB, or a number of bytes";

/// A number of bytes from the config, printed back in the largest exact unit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }
}

/// Why a string is not a size.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {input:?}: {reason}, expected {SIZE_FORM}")]
pub struct ByteSizeError {
    input: String,
    reason: &'static str,
}

const UNITS: &[(&str, u64)] = &[
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("TB", 1 << 40),
    ("GB", 1 << 30),
    ("MB", 1 << 20),
    ("KB", 1 << 10),
    ("B", 1),
];

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ByteSizeError {
            input: input.chars().take(64).collect(),
            reason,
        };
        let digits = input
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(input.len());
        let (number, unit) = input.split_at(digits);
        if number.is_empty() {
            return Err(err("expected a number first"));
        }
        let n: u64 = number.parse().map_err(|_| err("the number is too large"))?;
        let scale = if unit.is_empty() {
            1
        } else {
            UNITS
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(unit))
                .map(|&(_, s)| s)
                .ok_or_else(|| err("unknown unit (use B, KB, MB, GB or TB)"))?
        };
        n.checked_mul(scale)
            .map(ByteSize)
            .ok_or_else(|| err("the size is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &(name, scale) in &UNITS[4..] {
            if self.0 != 0 && self.0.is_multiple_of(scale) {
                return write!(f, "{}{name}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(SIZE_FORM)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| {
                    E::custom(format!("a size cannot be negative, expected {SIZE_FORM}"))
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kraken_sizes_and_prints_them_back() {
        for (text, bytes, back) in [
            ("4MB", 4 << 20, "4MB"),
            ("2GB", 2 << 30, "2GB"),
            ("512KB", 512 << 10, "512KB"),
            ("4MiB", 4 << 20, "4MB"),
            ("100B", 100, "100B"),
            ("1536KB", 1536 << 10, "1536KB"),
            ("0", 0, "0B"),
            ("4096", 4096, "4KB"),
        ] {
            let s: ByteSize = text.parse().unwrap();
            assert_eq!(s.get(), bytes, "{text}");
            assert_eq!(s.to_string(), back, "{text}");
        }
    }

    #[test]
    fn bad_sizes_say_what_to_write() {
        for bad in [
            "",
            "MB",
            "4 MB",
            "4XB",
            "-1MB",
            "99999999999999999999",
            "20000000TB",
        ] {
            let e = bad.parse::<ByteSize>().unwrap_err().to_string();
            assert!(e.contains(SIZE_FORM), "{bad}: {e}");
        }
    }
}
