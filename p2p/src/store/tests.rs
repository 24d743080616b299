//! The store against a real file system in a temp folder. Times are passed to `cleanup`
//! explicitly; last access is set through the index (or the file's mtime) instead of sleeping.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream;
use shoal_config::StoreConfig;
use shoal_registry::Digest;

use super::*;
use crate::error::StoreError;
use crate::metainfo::Metainfo;
use crate::piece::PieceIndex;

const PIECE: u64 = 1024;

fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 * 31 + u64::from(seed) * 7 % 251) as u8 ^ seed)
        .collect()
}

fn meta_of(data: &[u8], piece_length: u64) -> Arc<Metainfo> {
    Arc::new(Metainfo::from_reader(data, &Digest::sha256_of(data), piece_length).unwrap())
}

fn piece(data: &[u8], m: &Metainfo, i: u32) -> Bytes {
    let r = m.piece_range(PieceIndex(i)).unwrap();
    Bytes::copy_from_slice(&data[r.start as usize..r.end as usize])
}

fn config() -> StoreConfig {
    StoreConfig::default()
}

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

async fn write_all(p: &PartialBlob, data: &[u8]) {
    for i in 0..p.metainfo().piece_count() {
        p.write_piece(PieceIndex(i), piece(data, &p.metainfo(), i))
            .await
            .unwrap();
    }
}

async fn import(store: &PieceStore, data: &[u8]) -> CompleteBlob {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(700)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    store
        .import(&Digest::sha256_of(data), PIECE, stream::iter(chunks))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pieces_written_out_of_order_by_several_tasks_finish_into_the_right_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = Arc::new(blob(20 * PIECE as usize + 123, 1));
    let m = meta_of(&data, PIECE);
    let count = m.piece_count();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..4u32 {
        // Each task gets its own handle from the store, all the same download; their orders
        // differ and overlap, so some pieces are written twice at once.
        let (store, m, data) = (store.clone(), m.clone(), data.clone());
        tasks.spawn(async move {
            let p = store.download(m.clone()).await.unwrap();
            let mut order: Vec<u32> = (0..count).collect();
            order.rotate_left((t * 5) as usize);
            if t % 2 == 1 {
                order.reverse();
            }
            let mut fresh = Vec::new();
            for i in order {
                if p.write_piece(PieceIndex(i), piece(&data, &m, i))
                    .await
                    .unwrap()
                {
                    fresh.push(i);
                }
            }
            fresh
        });
    }
    let mut fresh: Vec<u32> = tasks.join_all().await.into_iter().flatten().collect();
    fresh.sort();
    assert_eq!(
        fresh,
        (0..count).collect::<Vec<_>>(),
        "each piece reported new once"
    );
    let p = store.download(m.clone()).await.unwrap();
    assert!(p.bitfield().is_full());
    let c = p.finish().await.unwrap();
    assert_eq!(std::fs::read(c.path()).unwrap(), *data);
    assert_eq!(c.len(), data.len() as u64);
    assert_eq!(c.metainfo(), &m);
    assert_eq!(
        c.read_piece(PieceIndex(20)).await.unwrap(),
        piece(&data, &m, 20)
    );
    assert_eq!(
        c.read_range(1000, 2000).await.unwrap(),
        Bytes::copy_from_slice(&data[1000..3000])
    );
    let hex = m.digest().hex().to_string();
    assert_eq!(
        files_under(dir.path()),
        vec![
            PathBuf::from(format!("cache/{}/{hex}", &hex[..2])),
            PathBuf::from(format!("cache/{}/{hex}.meta", &hex[..2])),
        ]
    );
    let again = store.complete(m.digest()).await.unwrap().unwrap();
    assert_eq!(again.path(), c.path());
    // A second finish, from another clone, returns the same blob.
    assert_eq!(p.clone().finish().await.unwrap().path(), c.path());
}

#[tokio::test]
async fn a_bad_piece_is_refused_and_not_marked() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(3 * PIECE as usize, 2);
    let m = meta_of(&data, PIECE);
    let p = store.download(m.clone()).await.unwrap();

    let mut wrong = piece(&data, &m, 1).to_vec();
    wrong[10] ^= 0xff;
    let e = p
        .write_piece(PieceIndex(1), wrong.into())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::BadPiece {
                index: PieceIndex(1),
                ..
            }
        ),
        "{e}"
    );
    let short = piece(&data, &m, 1).slice(..10);
    let e = p.write_piece(PieceIndex(1), short).await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::BadPiece {
                index: PieceIndex(1),
                ..
            }
        ),
        "{e}"
    );
    let e = p
        .write_piece(PieceIndex(3), piece(&data, &m, 0))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NoSuchPiece { count: 3, .. }), "{e}");
    assert!(!p.has(PieceIndex(1)));
    assert!(matches!(
        p.read_piece(PieceIndex(1)).await,
        Err(StoreError::MissingPiece(PieceIndex(1)))
    ));
    // Nothing was written where the bad piece would go.
    let on_disk = std::fs::read(dir.path().join("download").join(m.digest().hex())).unwrap();
    assert!(
        on_disk[PIECE as usize..2 * PIECE as usize]
            .iter()
            .all(|&b| b == 0)
    );

    assert!(
        p.write_piece(PieceIndex(1), piece(&data, &m, 1))
            .await
            .unwrap()
    );
    assert!(
        !p.write_piece(PieceIndex(1), piece(&data, &m, 1))
            .await
            .unwrap()
    );
    assert_eq!(
        p.read_piece(PieceIndex(1)).await.unwrap(),
        piece(&data, &m, 1)
    );
    assert!(matches!(
        p.finish().await,
        Err(StoreError::Incomplete {
            missing: 2,
            count: 3
        })
    ));
}

#[tokio::test]
async fn a_restart_resumes_the_bitfield() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(5 * PIECE as usize + 1, 3);
    let m = meta_of(&data, PIECE);
    {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let p = store.download(m.clone()).await.unwrap();
        for i in [4, 0, 2] {
            p.write_piece(PieceIndex(i), piece(&data, &m, i))
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
    }
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    assert!(store.complete(m.digest()).await.unwrap().is_none());
    let p = store.download(m.clone()).await.unwrap();
    let have: Vec<u32> = p.bitfield().ones().map(|i| i.0).collect();
    assert_eq!(have, vec![0, 2, 4]);
    assert_eq!(
        p.read_piece(PieceIndex(2)).await.unwrap(),
        piece(&data, &m, 2)
    );
    write_all(&p, &data).await;
    let c = p.finish().await.unwrap();
    assert_eq!(std::fs::read(c.path()).unwrap(), data);
}

/// A download that began on a prefix of the hashes (an origin still fetching): pieces past it
/// are refused, a restart resumes from the prefix in the sidecar, and the whole metainfo,
/// once learned, lets it finish; a metainfo whose hashes disagree is a conflict.
#[tokio::test]
async fn a_download_on_a_prefix_of_the_hashes_learns_the_rest_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(6 * PIECE as usize + 10, 5);
    let whole = meta_of(&data, PIECE);
    let prefix = Arc::new(
        Metainfo::chained_prefix(
            whole.digest().clone(),
            whole.length(),
            PIECE,
            whole.piece_hashes()[..3].to_vec(),
        )
        .unwrap(),
    );
    {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let p = store.download(prefix.clone()).await.unwrap();
        for i in [1, 0] {
            p.write_piece(PieceIndex(i), piece(&data, &whole, i))
                .await
                .unwrap();
        }
        assert!(matches!(
            p.write_piece(PieceIndex(4), piece(&data, &whole, 4)).await,
            Err(StoreError::BadPiece {
                source: crate::error::MetainfoError::HashUnknown { .. },
                ..
            })
        ));
        assert!(!p.has(PieceIndex(4)));
        p.flush().await.unwrap();
    }
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    // Asked for with the prefix again: the pieces on disk are kept.
    let p = store.download(prefix.clone()).await.unwrap();
    assert_eq!(p.bitfield().ones().map(|i| i.0).collect::<Vec<_>>(), [0, 1]);
    assert_eq!(p.metainfo().known(), 3);
    // Hashes that disagree with those known are refused.
    let mut lying = whole.piece_hashes().to_vec();
    lying[0][0] ^= 1;
    let lie = Arc::new(
        Metainfo::chained_prefix(
            whole.digest().clone(),
            whole.length(),
            PIECE,
            lying[..5].to_vec(),
        )
        .unwrap(),
    );
    assert!(matches!(
        p.learn(&lie),
        Err(StoreError::MetainfoConflict { .. })
    ));
    assert!(p.learn(&whole).unwrap());
    assert!(
        !p.learn(&prefix).unwrap(),
        "a shorter prefix is not adopted"
    );
    write_all(&p, &data).await;
    let c = p.finish().await.unwrap();
    assert_eq!(std::fs::read(c.path()).unwrap(), data);
    assert!(c.metainfo().is_complete());
    assert_eq!(c.metainfo().info_hash(), prefix.info_hash());
}

#[tokio::test]
async fn a_corrupt_sidecar_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(4 * PIECE as usize, 4);
    let m = meta_of(&data, PIECE);
    let side = dir
        .path()
        .join("download")
        .join(format!("{}.meta", m.digest().hex()));
    {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let p = store.download(m.clone()).await.unwrap();
        p.write_piece(PieceIndex(1), piece(&data, &m, 1))
            .await
            .unwrap();
    }
    let mut bytes = std::fs::read(&side).unwrap();
    // The bitfield's one byte sits just before the 32-byte checksum; claim piece 0 too.
    let bits = bytes.len() - 33;
    bytes[bits] ^= 0x80;
    std::fs::write(&side, &bytes).unwrap();

    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let p = store.download(m.clone()).await.unwrap();
    assert_eq!(p.bitfield().count_ones(), 0);
    write_all(&p, &data).await;
    assert_eq!(
        std::fs::read(p.finish().await.unwrap().path()).unwrap(),
        data
    );

    // Garbage and an empty file fare the same.
    for junk in [
        &b""[..],
        b"not a sidecar at all, not even close................",
    ] {
        let d2 = blob(2 * PIECE as usize, 5 + junk.len() as u8);
        let m2 = meta_of(&d2, PIECE);
        let dl = dir.path().join("download").join(m2.digest().hex());
        std::fs::write(&dl, &d2).unwrap();
        std::fs::write(super::with_suffix(&dl, ".meta"), junk).unwrap();
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let p = store.download(m2).await.unwrap();
        assert_eq!(p.bitfield().count_ones(), 0);
    }
}

#[tokio::test]
async fn a_sidecar_with_another_metainfo_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(4 * PIECE as usize, 6);
    {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let m = meta_of(&data, PIECE);
        let p = store.download(m.clone()).await.unwrap();
        p.write_piece(PieceIndex(0), piece(&data, &m, 0))
            .await
            .unwrap();
    }
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let halves = meta_of(&data, 2 * PIECE);
    let p = store.download(halves.clone()).await.unwrap();
    assert_eq!(p.bitfield().count_ones(), 0);
    assert_eq!(p.bitfield().len(), 2);
    write_all(&p, &data).await;
    let c = p.finish().await.unwrap();
    assert_eq!(c.metainfo(), &halves);
}

/// A piece read for a peer is a map of the piece file, which the connection may still hold
/// when the download is dropped and started over with another metainfo: the new download
/// writes a new file, so the old map keeps its bytes (a truncated file would fault it).
#[tokio::test]
async fn a_piece_read_outlives_a_download_that_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(4 * PIECE as usize, 8);
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let m = meta_of(&data, PIECE);
    let sent = {
        let p = store.download(m.clone()).await.unwrap();
        p.write_piece(PieceIndex(1), piece(&data, &m, 1))
            .await
            .unwrap();
        p.read_piece(PieceIndex(1)).await.unwrap()
    };
    let halves = meta_of(&data, 2 * PIECE);
    let p = store.download(halves.clone()).await.unwrap();
    assert_eq!(p.bitfield().count_ones(), 0);
    assert_eq!(sent, piece(&data, &m, 1));
    write_all(&p, &data).await;
    assert_eq!(p.finish().await.unwrap().metainfo(), &halves);
    assert_eq!(sent, piece(&data, &m, 1));
}

#[tokio::test]
async fn finish_with_the_wrong_data_is_a_mismatch_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(3 * PIECE as usize, 7);
    let honest = meta_of(&data, PIECE);
    // A lying metainfo: the (independent) piece hashes of `data`, the digest of something
    // else. A chained metainfo cannot lie so: its last hash is its digest.
    let liar = Arc::new(
        Metainfo::new(
            Digest::sha256_of(b"something else"),
            honest.length(),
            PIECE,
            data.chunks(PIECE as usize)
                .map(|c| <sha2::Sha256 as sha2::Digest>::digest(c).into())
                .collect(),
        )
        .unwrap(),
    );
    let p = store.download(liar.clone()).await.unwrap();
    write_all(&p, &data).await;
    let e = p.finish().await.unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    assert!(
        files_under(dir.path()).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
    assert!(store.complete(liar.digest()).await.unwrap().is_none());
    assert!(matches!(
        p.write_piece(PieceIndex(0), piece(&data, &honest, 0)).await,
        Err(StoreError::Discarded { .. }) | Ok(false)
    ));
    assert!(matches!(
        p.finish().await,
        Err(StoreError::Discarded { .. })
    ));
    // A new download of the digest starts from nothing.
    let fresh = store.download(liar).await.unwrap();
    assert_eq!(fresh.bitfield().count_ones(), 0);
}

#[tokio::test]
async fn import_writes_the_blob_and_its_metainfo_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(7 * PIECE as usize + 5, 8);
    let c = import(&store, &data).await;
    assert_eq!(c.metainfo(), &meta_of(&data, PIECE));
    assert_eq!(std::fs::read(c.path()).unwrap(), data);
    assert_eq!(
        c.read_piece(PieceIndex(7)).await.unwrap(),
        piece(&data, c.metainfo(), 7)
    );
    assert!(matches!(
        c.read_range(data.len() as u64 - 2, 3).await,
        Err(StoreError::OutOfRange { .. })
    ));
    assert!(files_under(&dir.path().join("download")).is_empty());
    drop(c);
    // After a restart it is still there, sidecar and all.
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let c = store
        .complete(&Digest::sha256_of(&data))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.metainfo(), &meta_of(&data, PIECE));
    // Importing it again returns the cached blob.
    assert_eq!(import(&store, &data).await.path(), c.path());
}

#[tokio::test]
async fn an_import_that_fails_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(3 * PIECE as usize, 9);
    let wrong = Digest::sha256_of(b"not this");
    let body = stream::iter(vec![Ok(Bytes::from(data.clone()))]);
    let e = store.import(&wrong, PIECE, body).await.unwrap_err();
    assert!(matches!(e, StoreError::DigestMismatch { .. }), "{e}");
    assert!(files_under(dir.path()).is_empty());
    assert!(store.complete(&wrong).await.unwrap().is_none());

    let body = stream::iter(vec![
        Ok(Bytes::from(data.clone())),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "backend hung up",
        )),
    ]);
    let e = store
        .import(&Digest::sha256_of(&data), PIECE, body)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Body(_)), "{e}");
    assert!(files_under(dir.path()).is_empty());

    let e = store
        .import(
            &Digest::sha256_of(&data),
            0,
            stream::iter(Vec::<io::Result<Bytes>>::new()),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Metainfo(_)), "{e}");
}

#[tokio::test]
async fn a_partial_blob_is_never_visible_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(3 * PIECE as usize, 10);
    let m = meta_of(&data, PIECE);
    let p = store.download(m.clone()).await.unwrap();
    for i in 0..3 {
        assert!(files_under(&dir.path().join("cache")).is_empty());
        assert!(store.complete(m.digest()).await.unwrap().is_none());
        p.write_piece(PieceIndex(i), piece(&data, &m, i))
            .await
            .unwrap();
    }
    // Every piece, but not finished: still not in the cache.
    assert!(files_under(&dir.path().join("cache")).is_empty());
    assert!(store.complete(m.digest()).await.unwrap().is_none());
    p.finish().await.unwrap();
    assert!(store.complete(m.digest()).await.unwrap().is_some());
}

#[tokio::test]
async fn every_caller_gets_the_one_download_of_a_digest() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(2 * PIECE as usize, 11);
    let m = meta_of(&data, PIECE);
    let a = store.download(m.clone()).await.unwrap();
    let b = store.download(m.clone()).await.unwrap();
    a.write_piece(PieceIndex(0), piece(&data, &m, 0))
        .await
        .unwrap();
    assert!(b.has(PieceIndex(0)));
    assert!(
        !b.write_piece(PieceIndex(0), piece(&data, &m, 0))
            .await
            .unwrap()
    );
    let other = meta_of(&data, 2 * PIECE);
    assert!(matches!(
        store.download(other).await,
        Err(StoreError::MetainfoConflict { .. })
    ));
}

#[tokio::test]
async fn a_live_download_tells_how_many_bytes_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    // Three pieces, the last one short.
    let data = blob(2 * PIECE as usize + 100, 14);
    let m = meta_of(&data, PIECE);
    assert_eq!(store.bytes_downloading(m.digest()).await, None);
    let p = store.download(m.clone()).await.unwrap();
    assert_eq!(store.bytes_downloading(m.digest()).await, Some(0));
    p.write_piece(PieceIndex(2), piece(&data, &m, 2))
        .await
        .unwrap();
    assert_eq!(store.bytes_downloading(m.digest()).await, Some(100));
    p.write_piece(PieceIndex(0), piece(&data, &m, 0))
        .await
        .unwrap();
    assert_eq!(store.bytes_downloading(m.digest()).await, Some(PIECE + 100));
    // Finished and its handle dropped: no download is live.
    write_all(&p, &data).await;
    p.finish().await.unwrap();
    drop(p);
    assert_eq!(store.bytes_downloading(m.digest()).await, None);
}

#[tokio::test]
async fn downloading_a_complete_blob_gives_a_full_handle() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(2 * PIECE as usize + 9, 12);
    let c = import(&store, &data).await;
    let p = store.download(c.metainfo().clone()).await.unwrap();
    assert!(p.bitfield().is_full());
    assert!(
        !p.write_piece(PieceIndex(1), piece(&data, c.metainfo(), 1))
            .await
            .unwrap()
    );
    assert_eq!(
        p.read_piece(PieceIndex(2)).await.unwrap(),
        piece(&data, c.metainfo(), 2)
    );
    assert_eq!(p.finish().await.unwrap().path(), c.path());
    assert!(files_under(&dir.path().join("download")).is_empty());
}

#[tokio::test]
async fn remove_deletes_cache_and_download_and_kills_live_downloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let a = blob(2 * PIECE as usize, 13);
    let c = import(&store, &a).await;
    assert!(store.remove(c.metainfo().digest()).await.unwrap());
    // The open handle still reads the unlinked file.
    assert_eq!(
        c.read_range(0, 10).await.unwrap(),
        Bytes::copy_from_slice(&a[..10])
    );
    assert!(
        store
            .complete(c.metainfo().digest())
            .await
            .unwrap()
            .is_none()
    );

    let b = blob(2 * PIECE as usize, 14);
    let m = meta_of(&b, PIECE);
    let p = store.download(m.clone()).await.unwrap();
    p.write_piece(PieceIndex(0), piece(&b, &m, 0))
        .await
        .unwrap();
    assert!(store.remove(m.digest()).await.unwrap());
    assert!(matches!(
        p.write_piece(PieceIndex(1), piece(&b, &m, 1)).await,
        Err(StoreError::Discarded { .. })
    ));
    assert!(files_under(dir.path()).is_empty());
    assert!(!store.remove(m.digest()).await.unwrap());
}

fn hours(h: u64) -> Duration {
    Duration::from_secs(h * 3600)
}

#[tokio::test]
async fn cleanup_removes_cache_and_downloads_idle_past_their_tti() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cache_cleanup.tti = hours(6).into();
    cfg.download_cleanup.tti = hours(1).into();
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let cached = blob(2 * PIECE as usize, 15);
    let digest = import(&store, &cached).await.metainfo().digest().clone();
    let partial = blob(2 * PIECE as usize, 16);
    let m = meta_of(&partial, PIECE);
    {
        let p = store.download(m.clone()).await.unwrap();
        p.write_piece(PieceIndex(0), piece(&partial, &m, 0))
            .await
            .unwrap();
    }
    let now = SystemTime::now();
    assert_eq!(store.cleanup(now).await.unwrap(), CleanupReport::default());

    let r = store.cleanup(now + hours(2)).await.unwrap();
    assert_eq!(
        r,
        CleanupReport {
            removed_cache: 0,
            removed_downloads: 1,
            bytes_freed: 2 * PIECE
        }
    );
    assert!(files_under(&dir.path().join("download")).is_empty());
    assert!(store.complete(&digest).await.unwrap().is_some());

    // `complete` above was an access: six hours from it, not from the import.
    let r = store.cleanup(SystemTime::now() + hours(7)).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert!(files_under(dir.path()).is_empty());
    // Evicted: the caller fetches it again.
    assert!(store.complete(&digest).await.unwrap().is_none());
    import(&store, &cached).await;
    assert!(store.complete(&digest).await.unwrap().is_some());
}

#[tokio::test]
async fn a_zero_tti_never_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cache_cleanup.tti = Duration::ZERO.into();
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    import(&store, &blob(100, 17)).await;
    let r = store
        .cleanup(SystemTime::now() + hours(10_000))
        .await
        .unwrap();
    assert_eq!(r.removed_cache, 0);
}

#[tokio::test]
async fn capacity_by_count_evicts_the_least_recently_accessed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.capacity = 2;
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let now = SystemTime::now();
    let mut digests = Vec::new();
    for (seed, age) in [(20u8, 30u64), (21, 10), (22, 20)] {
        let d = import(&store, &blob(PIECE as usize, seed))
            .await
            .metainfo()
            .digest()
            .clone();
        store
            .set_last_access(&d, now - Duration::from_secs(age))
            .await;
        digests.push(d);
    }
    let r = store.cleanup(now).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert_eq!(r.bytes_freed, PIECE);
    assert!(store.complete(&digests[0]).await.unwrap().is_none());
    assert!(store.complete(&digests[1]).await.unwrap().is_some());
    assert!(store.complete(&digests[2]).await.unwrap().is_some());
}

#[tokio::test]
async fn capacity_by_bytes_evicts_the_least_recently_accessed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.capacity_bytes = Some(5 * PIECE);
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let now = SystemTime::now();
    let mut digests = Vec::new();
    // 2 + 2 + 3 pieces is 7 against a cap of 5: the least recent (2 pieces) goes and 5 fit;
    // the larger blob stays although it is older than the last one.
    for (seed, pieces, age) in [(30u8, 2usize, 50u64), (31, 2, 10), (32, 3, 40)] {
        let data = blob(pieces * PIECE as usize, seed);
        let d = import(&store, &data).await.metainfo().digest().clone();
        store
            .set_last_access(&d, now - Duration::from_secs(age))
            .await;
        digests.push(d);
    }
    let r = store.cleanup(now).await.unwrap();
    assert_eq!(
        r,
        CleanupReport {
            removed_cache: 1,
            removed_downloads: 0,
            bytes_freed: 2 * PIECE
        }
    );
    assert!(store.complete(&digests[0]).await.unwrap().is_none());
    assert!(store.complete(&digests[1]).await.unwrap().is_some());
    assert!(store.complete(&digests[2]).await.unwrap().is_some());
}

#[tokio::test]
async fn open_handles_survive_cleanup() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.capacity = 1;
    cfg.capacity_bytes = Some(1);
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let a = blob(2 * PIECE as usize, 40);
    let b = blob(2 * PIECE as usize, 41);
    let ca = import(&store, &a).await;
    let cb = import(&store, &b).await;
    let partial = blob(2 * PIECE as usize, 42);
    let m = meta_of(&partial, PIECE);
    let p = store.download(m.clone()).await.unwrap();
    p.write_piece(PieceIndex(1), piece(&partial, &m, 1))
        .await
        .unwrap();

    let far = SystemTime::now() + hours(24 * 365);
    assert_eq!(store.cleanup(far).await.unwrap(), CleanupReport::default());
    assert_eq!(
        ca.read_range(0, 4).await.unwrap(),
        Bytes::copy_from_slice(&a[..4])
    );
    assert!(p.has(PieceIndex(1)));

    drop(ca);
    let r = store.cleanup(far).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert!(store.complete(m.digest()).await.unwrap().is_none());
    drop((cb, p));
    let r = store.cleanup(far).await.unwrap();
    assert_eq!((r.removed_cache, r.removed_downloads), (1, 1));
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn open_seeds_last_access_from_mtime_and_removes_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cache_cleanup.tti = hours(1).into();
    let (old, young) = {
        let store = PieceStore::open(dir.path(), &cfg).unwrap();
        let old = import(&store, &blob(100, 50)).await;
        let young = import(&store, &blob(100, 51)).await;
        let f = std::fs::File::options()
            .write(true)
            .open(old.path())
            .unwrap();
        f.set_modified(SystemTime::now() - hours(2)).unwrap();
        (
            old.metainfo().digest().clone(),
            young.metainfo().digest().clone(),
        )
    };
    // Leftovers of a crash: temp files, a sidecar without data, data without a sidecar.
    let dl = dir.path().join("download");
    std::fs::write(dl.join("abc.1234.import.tmp"), b"half").unwrap();
    let orphan = Digest::sha256_of(b"orphan");
    std::fs::write(dl.join(format!("{}.meta", orphan.hex())), b"x").unwrap();
    let lonely = Digest::sha256_of(b"lonely");
    let shard = dir.path().join("cache").join(&lonely.hex()[..2]);
    std::fs::create_dir_all(&shard).unwrap();
    std::fs::write(shard.join(lonely.hex()), b"lonely").unwrap();
    std::fs::write(shard.join(format!("{}.meta.tmp", lonely.hex())), b"x").unwrap();

    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    assert!(files_under(&dl).is_empty());
    assert!(!shard.join(lonely.hex()).exists());
    assert!(store.complete(&lonely).await.unwrap().is_none());
    let r = store.cleanup(SystemTime::now()).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert!(store.complete(&old).await.unwrap().is_none());
    assert!(store.complete(&young).await.unwrap().is_some());
}

#[tokio::test]
async fn a_corrupt_cache_sidecar_drops_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let data = blob(3 * PIECE as usize, 60);
    let d = Digest::sha256_of(&data);
    let side = {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let c = import(&store, &data).await;
        super::with_suffix(c.path(), ".meta")
    };
    std::fs::write(&side, b"SHOALSC\x01garbage").unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    assert!(store.complete(&d).await.unwrap().is_none());
    assert!(files_under(dir.path()).is_empty());
    import(&store, &data).await;
    assert!(store.complete(&d).await.unwrap().is_some());
}

#[tokio::test]
async fn the_cleanup_task_runs_on_its_interval_and_stops_with_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cache_cleanup.tti = shoal_config::Duration::from_millis(1);
    cfg.cache_cleanup.interval = shoal_config::Duration::from_millis(1);
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let d = import(&store, &blob(100, 70))
        .await
        .metainfo()
        .digest()
        .clone();
    let task = store.spawn_cleanup();
    let path = dir.path().join("cache").join(&d.hex()[..2]).join(d.hex());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "cleanup never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(store);
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the task stops once the store is gone")
        .unwrap();
}

/// `download_cleanup.interval` shorter than `cache_cleanup.interval` sets the loop's period:
/// a stale partial download goes at the first, long before the second. Tokio's clock is
/// paused and moves only when the test waits, so "before" and "after" are exact.
#[tokio::test(start_paused = true)]
async fn download_cleanup_interval_removes_a_stale_download_on_its_own_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.cache_cleanup.interval = hours(1).into();
    cfg.download_cleanup.interval = Duration::from_secs(10).into();
    cfg.download_cleanup.tti = Duration::from_secs(60).into();
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let data = blob(2 * PIECE as usize, 71);
    let m = meta_of(&data, PIECE);
    {
        let p = store.download(m.clone()).await.unwrap();
        p.write_piece(PieceIndex(0), piece(&data, &m, 0))
            .await
            .unwrap();
    }
    // Idle for an hour by its index entry: past its tti at the loop's first run.
    let d = m.digest().clone();
    store
        .set_last_access(&d, SystemTime::now() - hours(1))
        .await;
    let path = dir.path().join("download").join(d.hex());
    assert!(path.exists());
    let task = store.spawn_cleanup();

    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(path.exists(), "removed before download_cleanup.interval");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20 * 60);
    while path.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale download was still there after 20 minutes, so the loop ran on \
             cache_cleanup.interval (1h) rather than download_cleanup.interval (10s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    task.abort();
}

#[tokio::test]
async fn pinned_blobs_survive_cleanup_until_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.capacity = 1;
    cfg.cache_cleanup.tti = hours(1).into();
    let store = PieceStore::open(dir.path(), &cfg).unwrap();
    let kept = import(&store, &blob(100, 60))
        .await
        .metainfo()
        .digest()
        .clone();
    let other = import(&store, &blob(100, 61))
        .await
        .metainfo()
        .digest()
        .clone();
    let pins = Arc::new(std::sync::Mutex::new(vec![kept.clone()]));
    let held = pins.clone();
    store.pin_with(move |d| held.lock().unwrap().contains(d));

    // Idle past the TTI and over capacity: only the unpinned one goes.
    let far = SystemTime::now() + hours(24);
    let r = store.cleanup(far).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert!(store.complete(&other).await.unwrap().is_none());
    assert!(store.complete(&kept).await.unwrap().is_some());

    pins.lock().unwrap().clear();
    let r = store.cleanup(far + hours(24)).await.unwrap();
    assert_eq!(r.removed_cache, 1);
    assert!(store.complete(&kept).await.unwrap().is_none());
}

/// Imports `data` under `d`, fed chunk by chunk through a channel the test holds, while a
/// follower reads it: what the follower has after each chunk, and its end.
struct FollowedImport {
    feed: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    import: tokio::task::JoinHandle<Result<CompleteBlob, StoreError>>,
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = io::Result<Bytes>> + Send>>,
    got: Vec<u8>,
}

impl FollowedImport {
    async fn start(store: &PieceStore, d: Digest) -> FollowedImport {
        let (feed, rx) = tokio::sync::mpsc::channel(4);
        let (progress, mut watch) = tokio::sync::watch::channel(ImportProgress::default());
        let store = store.clone();
        let import = tokio::spawn(async move {
            let body = Box::pin(stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            }));
            store
                .import_followed(&d, PIECE, body, Some(&progress))
                .await
        });
        let path = loop {
            if let Some(p) = watch.borrow_and_update().file.clone() {
                break p;
            }
            watch.changed().await.unwrap();
        };
        let file = std::fs::File::open(&path).unwrap();
        FollowedImport {
            feed,
            import,
            body: Box::pin(follow(file, watch)),
            got: Vec::new(),
        }
    }

    /// Reads until the follower has `n` bytes.
    async fn read_to(&mut self, n: usize) {
        while self.got.len() < n {
            let chunk = self.body.next().await.expect("more").expect("a chunk");
            self.got.extend_from_slice(&chunk);
        }
        assert_eq!(self.got.len(), n, "the follower got more than was written");
    }

    /// The rest of the body: `Ok` with everything when it ended cleanly.
    async fn rest(mut self) -> (Result<Vec<u8>, io::Error>, Result<CompleteBlob, StoreError>) {
        drop(self.feed);
        let mut end = Ok(());
        while let Some(chunk) = self.body.next().await {
            match chunk {
                Ok(c) => self.got.extend_from_slice(&c),
                Err(e) => {
                    end = Err(e);
                    break;
                }
            }
        }
        let import = self.import.await.unwrap();
        (end.map(|()| self.got), import)
    }
}

#[tokio::test]
async fn a_follower_reads_an_import_as_it_lands_and_its_last_byte_once_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(5 * PIECE as usize / 2, 21);
    let mut f = FollowedImport::start(&store, Digest::sha256_of(&data)).await;
    // Everything written so far but the last byte, chunk by chunk, while the import runs.
    let half = data.len() / 2;
    f.feed
        .send(Ok(Bytes::copy_from_slice(&data[..half])))
        .await
        .unwrap();
    f.read_to(half - 1).await;
    f.feed
        .send(Ok(Bytes::copy_from_slice(&data[half..])))
        .await
        .unwrap();
    f.read_to(data.len() - 1).await;
    assert!(
        store
            .complete(&Digest::sha256_of(&data))
            .await
            .unwrap()
            .is_none()
    );
    let (body, import) = f.rest().await;
    assert_eq!(body.unwrap(), data, "the follower got the blob");
    assert_eq!(std::fs::read(import.unwrap().path()).unwrap(), data);
}

#[tokio::test]
async fn a_follower_of_an_import_that_fails_its_digest_never_gets_the_whole_body() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(3 * PIECE as usize, 22);
    let mut f = FollowedImport::start(&store, Digest::sha256_of(b"something else")).await;
    f.feed.send(Ok(Bytes::from(data.clone()))).await.unwrap();
    f.read_to(data.len() - 1).await;
    let (body, import) = f.rest().await;
    assert!(
        body.is_err(),
        "the body ends in an error, not in a whole blob"
    );
    assert!(matches!(import, Err(StoreError::DigestMismatch { .. })));
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn a_follower_of_a_broken_body_ends_in_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let data = blob(2 * PIECE as usize, 23);
    let mut f = FollowedImport::start(&store, Digest::sha256_of(&data)).await;
    f.feed
        .send(Ok(Bytes::copy_from_slice(&data[..PIECE as usize])))
        .await
        .unwrap();
    f.read_to(PIECE as usize - 1).await;
    f.feed
        .send(Err(io::Error::new(io::ErrorKind::ConnectionReset, "gone")))
        .await
        .unwrap();
    let (body, import) = f.rest().await;
    assert!(body.is_err());
    assert!(matches!(import, Err(StoreError::Body(_))));
}

/// Bytes of the file at `path` in the page cache, as util-linux's `fincore` counts them.
fn resident(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux-extra; scripts/install-test-deps installs it)");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// A download whose pieces start on page boundaries goes around the page cache: pieces
/// written out of order, read back for peers before and after a restart and after `finish`,
/// leave only the page of the blob's unaligned end cached, and the finished file is the blob.
#[tokio::test]
async fn a_download_in_aligned_pieces_writes_and_reads_around_the_page_cache() {
    const ALIGNED: u64 = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let data = blob(5 * ALIGNED as usize + 1000, 9);
    let m = meta_of(&data, ALIGNED);
    let path = {
        let store = PieceStore::open(dir.path(), &config()).unwrap();
        let p = store.download(m.clone()).await.unwrap();
        for i in [3, 5, 0] {
            p.write_piece(PieceIndex(i), piece(&data, &m, i))
                .await
                .unwrap();
        }
        for i in [0, 3, 5] {
            assert_eq!(
                p.read_piece(PieceIndex(i)).await.unwrap(),
                piece(&data, &m, i)
            );
        }
        p.flush().await.unwrap();
        p.path().to_owned()
    };
    assert!(
        resident(&path) <= direct::ALIGN as u64,
        "{}",
        resident(&path)
    );

    let store = PieceStore::open(dir.path(), &config()).unwrap();
    let p = store.download(m.clone()).await.unwrap();
    assert_eq!(
        p.read_piece(PieceIndex(3)).await.unwrap(),
        piece(&data, &m, 3)
    );
    write_all(&p, &data).await;
    let c = p.finish().await.unwrap();
    for i in 0..m.piece_count() {
        assert_eq!(
            c.read_piece(PieceIndex(i)).await.unwrap(),
            piece(&data, &m, i)
        );
    }
    let cached = resident(c.path());
    assert!(cached <= direct::ALIGN as u64, "{cached} bytes cached");
    assert_eq!(std::fs::read(c.path()).unwrap(), data);
    // The same download in 1000-byte pieces goes through the page cache (this check can fail).
    let unaligned = meta_of(&blob(5000, 4), 1000);
    let q = store.download(unaligned.clone()).await.unwrap();
    write_all(&q, &blob(5000, 4)).await;
    assert!(resident(q.path()) >= 5000);
}
