//! Property tests for the duration parser.

use proptest::prelude::*;
use shoal_config::Duration;

proptest! {
    #[test]
    fn format_then_parse_is_identity(secs in 0u64..=(u64::MAX / 2), nanos in 0u32..1_000_000_000) {
        let d = Duration::from(std::time::Duration::new(secs, nanos));
        let text = d.to_string();
        prop_assert_eq!(text.parse::<Duration>(), Ok(d), "{}", text);
    }

    #[test]
    fn whole_units_round_trip(n in 0u64..100_000, unit in prop::sample::select(vec!["ms", "s", "m", "h"])) {
        let text = format!("{n}{unit}");
        let d: Duration = text.parse().unwrap();
        prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
    }

    #[test]
    fn arbitrary_strings_never_panic(text in ".{0,40}") {
        let _ = text.parse::<Duration>();
    }

    #[test]
    fn duration_like_strings_never_panic(text in "[0-9.µsmhdnu +-]{0,30}") {
        if let Err(e) = text.parse::<Duration>() {
            prop_assert!(e.to_string().contains(shoal_config::DURATION_FORM));
        }
    }

    #[test]
    fn serde_round_trip(secs in 0u64..10_000_000, millis in 0u64..1000) {
        let d = Duration::from(std::time::Duration::from_millis(secs * 1000 + millis));
        let yaml = serde_yaml_ng::to_string(&d).unwrap();
        let back: Duration = serde_yaml_ng::from_str(&yaml).unwrap();
        prop_assert_eq!(back, d);
    }
}
