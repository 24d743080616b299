//! `Range` headers on blob reads and `Content-Range` headers on upload chunks.

/// What a `Range` header asks of a blob of known length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByteRange {
    /// The whole blob (no header, or one we may ignore by RFC 9110: malformed or multi-range).
    Full,
    /// Bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// A well-formed range that lies outside the blob: 416.
    Unsatisfiable,
}

/// Interprets a `Range` header for a blob of `len` bytes.
pub fn parse_range(header: Option<&str>, len: u64) -> ByteRange {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return ByteRange::Full;
    };
    if spec.contains(',') {
        return ByteRange::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return ByteRange::Full;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.trim().is_empty(), num(a), num(b)) {
        // bytes=-N: the last N bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (false, Some(start), None) if b.trim().is_empty() => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: len - 1,
                }
            }
        }
        (false, Some(start), Some(end)) if start <= end => {
            if start >= len {
                ByteRange::Unsatisfiable
            } else {
                ByteRange::Partial {
                    start,
                    end: end.min(len - 1),
                }
            }
        }
        _ => ByteRange::Full,
    }
}

/// Parses an upload chunk's `Content-Range` (`<start>-<end>`, also with a `bytes ` or `bytes=`
/// prefix as some clients send). Returns `(start, end)` inclusive, or `None` if malformed.
pub fn parse_content_range(header: &str) -> Option<(u64, u64)> {
    let h = header.trim();
    let h = h
        .strip_prefix("bytes=")
        .or_else(|| h.strip_prefix("bytes "))
        .unwrap_or(h);
    let h = h.split('/').next()?;
    let (a, b) = h.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() || b.is_empty() || !a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (start, end) = (a.parse().ok()?, b.parse().ok()?);
    (start <= end).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        use ByteRange::*;
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(
            parse_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            Partial { start: 8, end: 9 }
        );
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=a-b"), 10), Full);
    }

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("0-99"), Some((0, 99)));
        assert_eq!(parse_content_range("bytes 100-199/*"), Some((100, 199)));
        assert_eq!(parse_content_range("bytes=5-5"), Some((5, 5)));
        for bad in ["", "-", "5-", "-5", "9-1", "a-b", "1--2", "+1-2"] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn partial_ranges_lie_inside_the_blob(h in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 0u64..5000) {
            if let ByteRange::Partial { start, end } = parse_range(Some(&h), len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn content_range_never_panics(h in ".{0,40}") {
            let _ = parse_content_range(&h);
        }
    }
}
