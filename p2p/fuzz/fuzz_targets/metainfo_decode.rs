//! Any bytes as metainfo (it comes from a tracker or origin): no panic, and an accepted input is
//! canonical (re-encodes to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_p2p::Metainfo;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Metainfo::decode(data) {
        assert_eq!(m.encode(), data);
    }
});
