//! Property tests for every parser the config uses, and for the loader as a whole: round trips
//! where a value prints, and no panic on any input.

use proptest::prelude::*;
use shoal_config::{
    Cidr, DURATION_FORM, Duration, HostPort, OriginConfig, TrackerConfig, load_str,
};

fn no_env(_: &str) -> Option<String> {
    None
}

proptest! {
    #[test]
    fn duration_format_then_parse_is_identity(secs in 0u64..=(u64::MAX / 2), nanos in 0u32..1_000_000_000) {
        let d = Duration::from(std::time::Duration::new(secs, nanos));
        let text = d.to_string();
        prop_assert_eq!(text.parse::<Duration>(), Ok(d), "{}", text);
    }

    #[test]
    fn duration_whole_units_round_trip(n in 0u64..100_000, unit in prop::sample::select(vec!["ms", "s", "m", "h", "d"])) {
        let text = format!("{n}{unit}");
        let d: Duration = text.parse().unwrap();
        prop_assert_eq!(d.to_string().parse::<Duration>(), Ok(d));
    }

    #[test]
    fn duration_arbitrary_strings_never_panic(text in ".{0,40}") {
        let _ = text.parse::<Duration>();
    }

    #[test]
    fn duration_like_strings_fail_with_the_expected_form(text in "[0-9.µsmhdnu +-]{0,30}") {
        if let Err(e) = text.parse::<Duration>() {
            prop_assert!(e.to_string().contains(DURATION_FORM));
        }
    }

    #[test]
    fn duration_serde_round_trip(secs in 0u64..10_000_000, millis in 0u64..1000) {
        let d = Duration::from(std::time::Duration::from_millis(secs * 1000 + millis));
        let yaml = serde_yaml_ng::to_string(&d).unwrap();
        let back: Duration = serde_yaml_ng::from_str(&yaml).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn host_port_round_trips(host in "[a-z][a-z0-9.-]{0,20}", port in 1u16..) {
        let hp = HostPort::new(host, port);
        prop_assert_eq!(hp.to_string().parse::<HostPort>(), Ok(hp));
    }

    #[test]
    fn host_port_ipv6_round_trips(segments in prop::array::uniform8(any::<u16>()), port in 1u16..) {
        let ip = std::net::Ipv6Addr::from(segments);
        let hp = HostPort::new(ip.to_string(), port);
        prop_assert_eq!(hp.to_string().parse::<HostPort>(), Ok(hp));
    }

    #[test]
    fn host_port_and_cidr_never_panic(text in ".{0,40}") {
        let _ = text.parse::<HostPort>();
        let _ = text.parse::<Cidr>();
    }

    #[test]
    fn cidr_contains_its_own_address(octets in any::<[u8; 4]>(), prefix in 0u8..=32) {
        let cidr: Cidr = format!("{}/{prefix}", std::net::Ipv4Addr::from(octets)).parse().unwrap();
        prop_assert!(cidr.contains(std::net::Ipv4Addr::from(octets).into()));
    }

    #[test]
    fn loader_never_panics_on_arbitrary_text(text in ".{0,200}") {
        let _ = load_str::<OriginConfig>(&text, &no_env);
    }

    #[test]
    fn loader_never_panics_on_yaml_shaped_text(
        lines in prop::collection::vec(
            "( {0,6})(listen|peerstore|redis|memory|backends|- namespace|backend|s3|cluster|hosts|static|dns|\\$\\{X\\}|extends|[a-z_]{1,8})(: ?)([a-z0-9:./%${}\\[\\]-]{0,12})",
            0..12,
        )
    ) {
        let text = lines.join("\n");
        let _ = load_str::<TrackerConfig>(&text, &no_env);
        let _ = load_str::<OriginConfig>(&text, &no_env);
    }
}
