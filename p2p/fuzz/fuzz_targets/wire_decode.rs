//! Any bytes from a peer: the decoder must not panic, and whatever it accepts must re-encode to
//! the same bytes (one byte form per frame).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use shoal_p2p::FrameDecoder;
use shoal_p2p::wire::encode;

fuzz_target!(|data: &[u8]| {
    for decoder in [FrameDecoder::default(), FrameDecoder::new(64)] {
        if let Ok(Some((frame, used))) = decoder.decode(data) {
            let mut out = BytesMut::new();
            encode(&frame, &mut out).expect("a decoded frame re-encodes");
            assert_eq!(&out[..], &data[..used]);
        }
    }
});
