//! Durations written the way Kraken's YAML writes them: `30s`, `5m`, `6h`, `1h30m`, `500ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What every duration error tells the reader to write instead.
pub const DURATION_FORM: &str = "a duration like 30s, 5m or 6h";

/// A non-negative span of time from the config, kept so it prints back in the same compact form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(StdDuration);

impl Duration {
    /// The zero duration, which some keys use to mean "never".
    pub const ZERO: Duration = Duration(StdDuration::ZERO);

    /// Whole milliseconds, for defaults written as constants.
    pub const fn from_millis(ms: u64) -> Self {
        Duration(StdDuration::from_millis(ms))
    }

    /// Whole seconds, for defaults written as constants.
    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    /// Whole minutes, for defaults written as constants.
    pub const fn from_mins(mins: u64) -> Self {
        Duration(StdDuration::from_secs(mins * 60))
    }

    /// Whole hours, for defaults written as constants.
    pub const fn from_hours(hours: u64) -> Self {
        Duration(StdDuration::from_secs(hours * 3600))
    }

    /// The standard-library value, for timers and deadlines.
    pub const fn get(self) -> StdDuration {
        self.0
    }

    /// True for `0s`, which callers check before dividing or arming a timer.
    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl From<StdDuration> for Duration {
    fn from(d: StdDuration) -> Self {
        Duration(d)
    }
}

impl From<Duration> for StdDuration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// Why a string is not a duration; the message always ends with the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason}, expected {DURATION_FORM}")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl DurationError {
    fn new(input: &str, reason: &'static str) -> Self {
        // Cap what we echo back so a huge scalar does not flood the terminal.
        let input = input.chars().take(64).collect();
        DurationError { input, reason }
    }
}

/// Nanoseconds per unit, longest unit names first so `ms` wins over `m`.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
    ("d", 86_400 * 1_000_000_000),
];

impl FromStr for Duration {
    type Err = DurationError;

    /// Parses Go's `time.ParseDuration` syntax (which Kraken's YAML uses) plus `d` for days,
    /// without signs: a sequence of `<number><unit>` such as `1h30m` or `1.5s`.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| DurationError::new(input, reason);
        if input.is_empty() {
            return Err(err("empty"));
        }
        if input.starts_with('-') {
            return Err(err("durations cannot be negative"));
        }
        // Go accepts a bare zero; any other number needs its unit.
        if input == "0" {
            return Ok(Duration::ZERO);
        }
        let mut rest = input;
        let mut total: u128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            let (whole, after) = rest.split_at(digits);
            let (frac, after) = match after.strip_prefix('.') {
                Some(tail) => {
                    let n = tail
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(tail.len());
                    tail.split_at(n)
                }
                None => ("", after),
            };
            if whole.is_empty() && frac.is_empty() {
                return Err(err(if after.starts_with(char::is_whitespace) {
                    "spaces are not allowed"
                } else {
                    "expected a number"
                }));
            }
            let Some(&(unit, scale)) = UNITS.iter().find(|(name, _)| after.starts_with(name))
            else {
                return Err(err(if after.is_empty() {
                    "missing unit (ns, us, ms, s, m, h or d)"
                } else if after.starts_with(char::is_whitespace) {
                    "spaces are not allowed"
                } else {
                    "unknown unit (use ns, us, ms, s, m, h or d)"
                }));
            };
            total = add_component(total, whole, frac, scale).ok_or_else(|| err("too large"))?;
            rest = &after[unit.len()..];
        }
        let secs = u64::try_from(total / 1_000_000_000).map_err(|_| err("too large"))?;
        // The remainder is below 10^9 and therefore fits in u32.
        let nanos = (total % 1_000_000_000) as u32;
        Ok(Duration(StdDuration::new(secs, nanos)))
    }
}

/// Adds `whole.frac` units of `scale` nanoseconds to `total`, or None on overflow.
fn add_component(total: u128, whole: &str, frac: &str, scale: u128) -> Option<u128> {
    let mut value: u128 = 0;
    for d in whole.bytes() {
        value = value.checked_mul(10)?.checked_add(u128::from(d - b'0'))?;
    }
    let mut nanos = value.checked_mul(scale)?;
    // Digits past nanosecond precision cannot change the result; ignore them rather than
    // overflow on a long fraction.
    let mut place = scale;
    for d in frac.bytes() {
        place /= 10;
        if place == 0 {
            break;
        }
        nanos = nanos.checked_add(u128::from(d - b'0') * place)?;
    }
    total.checked_add(nanos)
}

impl fmt::Display for Duration {
    /// Prints the shortest exact form in h/m/s/ms/us/ns, e.g. `1h30m` or `1s500ms`, so parsing
    /// the output gives back the same value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        let parts = [
            (secs / 3600, "h"),
            ((secs % 3600) / 60, "m"),
            (secs % 60, "s"),
            (u64::from(nanos / 1_000_000), "ms"),
            (u64::from((nanos / 1_000) % 1_000), "us"),
            (u64::from(nanos % 1_000), "ns"),
        ];
        for (n, unit) in parts {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;

        impl Visitor<'_> for DurationVisitor {
            type Value = Duration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_FORM)
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Duration, E> {
                s.parse().map_err(E::custom)
            }
        }

        deserializer.deserialize_str(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_kraken_configs_use() {
        let table: &[(&str, StdDuration)] = &[
            ("0s", StdDuration::ZERO),
            ("0", StdDuration::ZERO),
            ("500ms", StdDuration::from_millis(500)),
            ("3s", StdDuration::from_secs(3)),
            ("60s", StdDuration::from_secs(60)),
            ("5m", StdDuration::from_secs(300)),
            ("6h", StdDuration::from_secs(6 * 3600)),
            ("1h30m", StdDuration::from_secs(5400)),
            ("1.5h", StdDuration::from_secs(5400)),
            ("2d", StdDuration::from_secs(2 * 86_400)),
            ("1s500ms", StdDuration::from_millis(1500)),
            ("10us", StdDuration::from_micros(10)),
            ("10µs", StdDuration::from_micros(10)),
            ("7ns", StdDuration::from_nanos(7)),
            (".5s", StdDuration::from_millis(500)),
        ];
        for (input, want) in table {
            assert_eq!(
                input.parse::<Duration>().map(Duration::get),
                Ok(*want),
                "{input}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input_with_the_expected_form() {
        for input in [
            "", "5", "5 m", " 5m", "-1s", "5x", "m", "1h 30m", "1.s2", "+5s", "5M",
        ] {
            let err = input.parse::<Duration>().expect_err(input);
            assert!(err.to_string().contains(DURATION_FORM), "{input}: {err}");
        }
        let err = "5x".parse::<Duration>().unwrap_err().to_string();
        assert!(err.contains("\"5x\""), "{err}");
    }

    #[test]
    fn rejects_overflow_instead_of_panicking() {
        assert!(
            "99999999999999999999999999999999999999999h"
                .parse::<Duration>()
                .is_err()
        );
        assert!("18446744073709551616s".parse::<Duration>().is_err());
    }

    #[test]
    fn prints_compact_forms() {
        let table = [
            (Duration::ZERO, "0s"),
            (Duration::from_mins(5), "5m"),
            (Duration::from_hours(6), "6h"),
            (Duration::from_secs(5400), "1h30m"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_hours(48), "48h"),
        ];
        for (d, want) in table {
            assert_eq!(d.to_string(), want);
        }
    }
}
