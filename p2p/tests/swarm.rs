//! The modules working together without sockets: a leecher downloads a blob from an honest
//! seeder, a corrupting one and a silent one, with every message going through the wire codec,
//! every piece through the picker and verification. Time is simulated, so nothing waits.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use shoal_config::DispatchConfig;
use shoal_p2p::wire::{self, ErrorCode};
use shoal_p2p::{
    Bitfield, Frame, FrameDecoder, Handshake, Metainfo, PeerId, PickerConfig, PieceIndex,
    PiecePicker, Verified,
};
use shoal_registry::Digest;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    Honest,
    /// Flips a bit in every piece it sends.
    Corrupting,
    /// Accepts requests and never answers.
    Silent,
    /// Has no pieces it claims and answers with errors.
    Refusing,
}

struct Seeder {
    id: PeerId,
    behaviour: Behaviour,
}

fn blob() -> Vec<u8> {
    (0..1000u32).map(|i| (i * 31 % 253) as u8).collect()
}

/// Encodes a frame and decodes it the way the receiving session would.
fn send(frame: &Frame, decoder: &FrameDecoder) -> Frame {
    let mut buf = BytesMut::new();
    wire::encode(frame, &mut buf).unwrap();
    let (decoded, used) = decoder.decode(&buf).unwrap().expect("a whole frame");
    assert_eq!(used, buf.len());
    decoded
}

impl Seeder {
    fn answer(&self, request: &Frame, meta: &Metainfo, data: &[u8]) -> Option<Frame> {
        let Frame::PieceRequest { index } = request else {
            panic!("seeders only get piece requests, got {request:?}");
        };
        let r = meta.piece_range(*index).unwrap();
        let mut piece = data[r.start as usize..r.end as usize].to_vec();
        match self.behaviour {
            Behaviour::Honest => {}
            Behaviour::Corrupting => piece[0] ^= 0x80,
            Behaviour::Silent => return None,
            Behaviour::Refusing => {
                return Some(Frame::Error {
                    index: *index,
                    code: ErrorCode::PieceUnavailable,
                    message: "lost it".to_owned(),
                });
            }
        }
        Some(Frame::PiecePayload {
            index: *index,
            data: Bytes::from(piece),
        })
    }
}

#[test]
fn downloads_despite_corrupting_silent_and_refusing_peers() {
    let data = blob();
    let digest = Digest::sha256_of(&data);
    let meta = Metainfo::from_reader(&data[..], &digest, 64).unwrap();
    assert_eq!(meta.piece_count(), 16);
    // The leecher learns the metainfo from the tracker in its canonical form.
    let meta = Metainfo::decode(&meta.encode()).unwrap();
    let decoder = FrameDecoder::for_torrent(&meta);

    let seeders: Vec<Seeder> = [
        Behaviour::Honest,
        Behaviour::Corrupting,
        Behaviour::Silent,
        Behaviour::Refusing,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, behaviour)| Seeder {
        id: PeerId([i as u8 + 1; 20]),
        behaviour,
    })
    .collect();

    let config = PickerConfig::new(&DispatchConfig { pipeline_limit: 3 }, meta.piece_length());
    let mut picker = PiecePicker::with_seed(Bitfield::empty(meta.piece_count()), config, 42);
    for s in &seeders {
        let hello = Frame::Handshake(Handshake {
            peer_id: s.id,
            info_hash: meta.info_hash(),
            digest: meta.digest().clone(),
            namespace: "library/test".to_owned(),
            bitfield: Bitfield::full(meta.piece_count()),
        });
        let Frame::Handshake(h) = send(&hello, &decoder) else {
            unreachable!()
        };
        assert_eq!(h.info_hash, meta.info_hash());
        picker.add_peer(h.peer_id, h.bitfield).unwrap();
    }

    let mut store: HashMap<PieceIndex, Bytes> = HashMap::new();
    let mut blacklisted: HashSet<PeerId> = HashSet::new();
    let mut refused = 0;
    let mut expired = 0;
    let mut now = Instant::now();
    for _tick in 0..100 {
        if picker.is_complete() {
            break;
        }
        for s in &seeders {
            if blacklisted.contains(&s.id) {
                continue;
            }
            for index in picker.pick(s.id, now) {
                let request = send(&Frame::PieceRequest { index }, &decoder);
                let Some(reply) = s.answer(&request, &meta, &data) else {
                    continue;
                };
                match send(&reply, &decoder) {
                    Frame::PiecePayload { index, data } => {
                        if meta.verify_piece(index, &data).is_ok() {
                            if let Verified::Accepted { .. } =
                                picker.piece_verified(s.id, index).unwrap()
                            {
                                store.insert(index, data);
                            }
                        } else {
                            let bad = picker.piece_failed(s.id, index).unwrap();
                            blacklisted.insert(bad.0);
                            picker.remove_peer(&bad.0);
                            break;
                        }
                    }
                    Frame::Error { index, .. } => {
                        refused += 1;
                        picker.request_refused(s.id, index).unwrap();
                    }
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        }
        now += Duration::from_secs(1);
        expired += picker.expire(now).len();
    }

    assert!(picker.is_complete(), "download did not finish");
    let mut whole = Vec::new();
    for i in 0..meta.piece_count() {
        whole.extend_from_slice(&store[&PieceIndex(i)]);
    }
    assert_eq!(Digest::sha256_of(&whole), digest);
    let corrupting = seeders[1].id;
    assert_eq!(blacklisted, HashSet::from([corrupting]));
    assert!(expired > 0, "the silent peer's requests never timed out");
    assert!(refused > 0, "the refusing peer was never asked");
}
