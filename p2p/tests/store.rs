//! The piece store through the crate's public API only, as the scheduler and origin use it: an
//! origin imports a blob, a leecher copies it piece by piece (seeding what it has meanwhile),
//! and both survive a restart.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use shoal_config::StoreConfig;
use shoal_p2p::{PieceIndex, PieceStore, StoreError};
use shoal_registry::Digest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_travels_from_an_origin_store_to_a_leecher_store() {
    let origin_dir = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::default();
    let data: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let digest = Digest::sha256_of(&data);

    let origin = PieceStore::open(origin_dir.path(), &config).unwrap();
    let body = stream::iter(
        data.chunks(4096)
            .map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let seed = origin.import(&digest, 8192, body).await.unwrap();
    let metainfo = seed.metainfo().clone();

    let agent = PieceStore::open(agent_dir.path(), &config).unwrap();
    let leech = agent.download(Arc::clone(&metainfo)).await.unwrap();
    // Half the pieces, backwards; the agent can already serve them to another peer.
    let count = metainfo.piece_count();
    for i in (0..count).rev().step_by(2) {
        let piece = seed.read_piece(PieceIndex(i)).await.unwrap();
        assert!(
            leech
                .write_piece(PieceIndex(i), piece.clone())
                .await
                .unwrap()
        );
        assert_eq!(leech.read_piece(PieceIndex(i)).await.unwrap(), piece);
    }
    assert!(matches!(
        leech.finish().await,
        Err(StoreError::Incomplete { .. })
    ));
    drop(leech);
    drop(agent);

    // The agent restarts and picks up where it was.
    let agent = PieceStore::open(agent_dir.path(), &config).unwrap();
    let leech = agent.download(Arc::clone(&metainfo)).await.unwrap();
    assert_eq!(leech.bitfield().count_ones(), count.div_ceil(2));
    for i in 0..count {
        let piece = seed.read_piece(PieceIndex(i)).await.unwrap();
        leech.write_piece(PieceIndex(i), piece).await.unwrap();
    }
    let done = leech.finish().await.unwrap();
    assert_eq!(std::fs::read(done.path()).unwrap(), data);
    assert_eq!(done.metainfo(), &metainfo);
    assert!(agent.complete(&digest).await.unwrap().is_some());
}
