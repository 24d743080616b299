//! Tests of the wire module, kept beside it so the module file stays about one concept.

use super::*;
use proptest::prelude::*;

fn metainfo(len: usize, piece: u64) -> Metainfo {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    Metainfo::from_reader(&data[..], &Digest::sha256_of(&data), piece).unwrap()
}

fn handshake(bits: u32) -> Handshake {
    let mut bitfield = Bitfield::empty(bits);
    bitfield.set(PieceIndex(0), true);
    Handshake {
        peer_id: PeerId([7; 20]),
        info_hash: InfoHash([9; 32]),
        digest: Digest::sha256_of(b"blob"),
        namespace: "library/ubuntu".to_owned(),
        bitfield,
    }
}

fn bytes_of(frame: &Frame) -> Vec<u8> {
    let mut b = BytesMut::new();
    encode(frame, &mut b).unwrap();
    b.to_vec()
}

#[test]
fn round_trips_every_frame_type() {
    let frames = [
        Frame::Handshake(handshake(10)),
        Frame::PieceRequest {
            index: PieceIndex(3),
        },
        Frame::PiecePayload {
            index: PieceIndex(1),
            data: Bytes::from_static(b"abcd"),
        },
        Frame::AnnouncePiece {
            index: PieceIndex(2),
        },
        Frame::CancelPiece {
            index: PieceIndex(4),
        },
        Frame::Error {
            index: PieceIndex(5),
            code: ErrorCode::StorageFailure,
            message: "disk on fire".to_owned(),
        },
        Frame::Complete,
    ];
    for f in frames {
        let b = bytes_of(&f);
        assert_eq!(decode(&b).unwrap(), Some((f, b.len())));
    }
}

#[test]
fn split_decoding_shares_the_payload_and_a_payload_head_is_encodes_prefix() {
    let payload = Bytes::from_static(b"0123456789");
    let frame = Frame::PiecePayload {
        index: PieceIndex(6),
        data: payload.clone(),
    };
    let whole = bytes_of(&frame);
    let mut head = BytesMut::new();
    encode_payload_head(PieceIndex(6), payload.len(), &mut head).unwrap();
    assert_eq!([&head[..], &payload[..]].concat(), whole);

    // Two frames back to back, the second cut short: one comes out, the rest stays.
    let mut buf = BytesMut::from(&whole[..]);
    buf.extend_from_slice(&bytes_of(&Frame::Complete));
    buf.extend_from_slice(&whole[..7]);
    let d = FrameDecoder::default();
    assert_eq!(d.frame_len(&buf), Some(whole.len()));
    let base = buf.as_ptr() as usize;
    let Some(Frame::PiecePayload { index, data }) = d.decode_split(&mut buf).unwrap() else {
        panic!("expected a payload");
    };
    assert_eq!((index, &data[..]), (PieceIndex(6), &payload[..]));
    assert_eq!(
        data.as_ptr() as usize,
        base + 9,
        "the payload is not copied"
    );
    assert_eq!(d.decode_split(&mut buf).unwrap(), Some(Frame::Complete));
    assert_eq!(d.decode_split(&mut buf).unwrap(), None);
    assert_eq!(&buf[..], &whole[..7]);
}

#[test]
fn piece_request_layout_is_as_documented() {
    let b = bytes_of(&Frame::PieceRequest {
        index: PieceIndex(258),
    });
    assert_eq!(b, [0, 0, 0, 5, 2, 0, 0, 1, 2]);
}

#[test]
fn needs_more_bytes_for_a_partial_frame() {
    let b = bytes_of(&Frame::Handshake(handshake(10)));
    for cut in 0..b.len() {
        assert_eq!(decode(&b[..cut]).unwrap(), None, "cut at {cut}");
    }
}

#[test]
fn decodes_back_to_back_frames_one_at_a_time() {
    let mut b = BytesMut::new();
    encode(&Frame::Complete, &mut b).unwrap();
    encode(
        &Frame::CancelPiece {
            index: PieceIndex(1),
        },
        &mut b,
    )
    .unwrap();
    let (first, n) = decode(&b).unwrap().unwrap();
    assert_eq!((first, n), (Frame::Complete, 5));
    let (second, _) = decode(&b[n..]).unwrap().unwrap();
    assert_eq!(
        second,
        Frame::CancelPiece {
            index: PieceIndex(1)
        }
    );
}

#[test]
fn rejects_oversized_length_before_the_body_arrives() {
    let dec = FrameDecoder::new(16);
    let len = (16 + FRAME_HEADROOM + 1) as u32;
    let err = dec.decode(&len.to_be_bytes()).unwrap_err();
    assert!(matches!(err, WireError::FrameTooLong { .. }));
}

#[test]
fn rejects_empty_and_unknown_frames() {
    assert_eq!(decode(&[0, 0, 0, 0]), Err(WireError::EmptyFrame));
    assert_eq!(
        decode(&[0, 0, 0, 1, 0x42]),
        Err(WireError::UnknownFrameType(0x42))
    );
}

#[test]
fn rejects_trailing_bytes_and_truncated_fields() {
    assert_eq!(
        decode(&[0, 0, 0, 2, COMPLETE, 0]),
        Err(WireError::TrailingBytes {
            frame: "complete",
            extra: 1
        })
    );
    assert_eq!(
        decode(&[0, 0, 0, 3, PIECE_REQUEST, 0, 0]),
        Err(WireError::Truncated {
            frame: "piece request",
            field: "index"
        })
    );
}

#[test]
fn rejects_unknown_version_and_error_code() {
    let mut b = bytes_of(&Frame::Handshake(handshake(3)));
    b[5] = 9;
    assert_eq!(decode(&b), Err(WireError::UnsupportedVersion(9)));
    let mut b = bytes_of(&Frame::Error {
        index: PieceIndex(0),
        code: ErrorCode::BadRequest,
        message: String::new(),
    });
    b[9] = 200;
    assert_eq!(decode(&b), Err(WireError::UnknownErrorCode(200)));
}

#[test]
fn rejects_a_bad_digest_and_non_utf8_text() {
    let mut b = bytes_of(&Frame::Handshake(handshake(3)));
    // The digest starts after len(4) type(1) version(1) peer id(20) info hash(32) length(1).
    b[59] = b'x';
    assert!(matches!(
        decode(&b),
        Err(WireError::InvalidField {
            field: "digest",
            ..
        })
    ));
    let mut b = bytes_of(&Frame::Error {
        index: PieceIndex(0),
        code: ErrorCode::BadRequest,
        message: "ab".to_owned(),
    });
    let last = b.len() - 1;
    b[last] = 0xff;
    assert!(matches!(
        decode(&b),
        Err(WireError::InvalidField {
            field: "message",
            ..
        })
    ));
}

#[test]
fn torrent_decoder_checks_bitfield_length_against_piece_count() {
    let m = metainfo(10, 4);
    let dec = FrameDecoder::for_torrent(&m);
    let b = bytes_of(&Frame::Handshake(handshake(3)));
    assert!(dec.decode(&b).unwrap().is_some());
    let b = bytes_of(&Frame::Handshake(handshake(4)));
    assert!(matches!(dec.decode(&b), Err(WireError::Bitfield(_))));
}

#[test]
fn rejects_spare_bits_in_a_handshake_bitfield() {
    let mut b = bytes_of(&Frame::Handshake(handshake(3)));
    let last = b.len() - 1;
    b[last] |= 0x01;
    assert!(matches!(decode(&b), Err(WireError::Bitfield(_))));
}

#[test]
fn torrent_decoder_checks_indices_and_payload_sizes() {
    let m = metainfo(10, 4);
    let dec = FrameDecoder::for_torrent(&m);
    let req = bytes_of(&Frame::PieceRequest {
        index: PieceIndex(3),
    });
    assert_eq!(
        dec.decode(&req),
        Err(WireError::PieceOutOfRange {
            index: PieceIndex(3),
            count: 3
        })
    );
    let short_last = bytes_of(&Frame::PiecePayload {
        index: PieceIndex(2),
        data: Bytes::from_static(b"ab"),
    });
    assert!(dec.decode(&short_last).unwrap().is_some());
    let wrong = bytes_of(&Frame::PiecePayload {
        index: PieceIndex(1),
        data: Bytes::from_static(b"ab"),
    });
    assert_eq!(
        dec.decode(&wrong),
        Err(WireError::PayloadSize {
            index: PieceIndex(1),
            got: 2,
            expected: 4
        })
    );
}

#[test]
fn encode_refuses_overlong_fields_and_leaves_the_buffer_alone() {
    let mut b = BytesMut::from(&b"keep"[..]);
    let frame = Frame::Error {
        index: PieceIndex(0),
        code: ErrorCode::BadRequest,
        message: "x".repeat(70_000),
    };
    assert!(matches!(
        encode(&frame, &mut b),
        Err(WireError::FieldTooLong {
            field: "message",
            ..
        })
    ));
    assert_eq!(&b[..], b"keep");
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    let index = any::<u32>().prop_map(PieceIndex);
    let handshake = (
        any::<[u8; 20]>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        "[a-z0-9/._-]{0,40}",
        0u32..200,
        proptest::collection::vec(any::<u32>(), 0..20),
    )
        .prop_map(|(peer, info, dig, namespace, bits, set)| {
            let mut bitfield = Bitfield::empty(bits);
            for s in set {
                if bits > 0 {
                    bitfield.set(PieceIndex(s % bits), true);
                }
            }
            Frame::Handshake(Handshake {
                peer_id: PeerId(peer),
                info_hash: InfoHash(info),
                digest: Digest::from_bytes(shoal_registry::Algorithm::Sha256, &dig),
                namespace,
                bitfield,
            })
        });
    let code = prop_oneof![
        Just(ErrorCode::PieceUnavailable),
        Just(ErrorCode::StorageFailure),
        Just(ErrorCode::BadRequest)
    ];
    prop_oneof![
        handshake,
        index
            .clone()
            .prop_map(|index| Frame::PieceRequest { index }),
        (
            index.clone(),
            proptest::collection::vec(any::<u8>(), 0..300)
        )
            .prop_map(|(index, d)| Frame::PiecePayload {
                index,
                data: Bytes::from(d)
            }),
        index
            .clone()
            .prop_map(|index| Frame::AnnouncePiece { index }),
        index.clone().prop_map(|index| Frame::CancelPiece { index }),
        (index, code, "\\PC{0,40}").prop_map(|(index, code, message)| Frame::Error {
            index,
            code,
            message
        }),
        Just(Frame::Complete),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode(&bytes);
        let _ = FrameDecoder::new(8).decode(&bytes);
        let _ = FrameDecoder::for_torrent(&metainfo(10, 4)).decode(&bytes);
    }

    #[test]
    fn frames_with_a_valid_prefix_never_panic(kind in 0u8..10, body in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        b.push(kind);
        b.extend_from_slice(&body);
        let _ = decode(&b);
        let _ = FrameDecoder::for_torrent(&metainfo(10, 4)).decode(&b);
    }

    #[test]
    fn encode_decode_round_trips(frame in arb_frame(), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut b = BytesMut::new();
        encode(&frame, &mut b).unwrap();
        let len = b.len();
        for cut in [0, len / 2, len.saturating_sub(1)] {
            if cut < len {
                prop_assert_eq!(decode(&b[..cut]).unwrap(), None);
            }
        }
        b.extend_from_slice(&tail);
        prop_assert_eq!(decode(&b).unwrap(), Some((frame, len)));
    }
}
