//! The queue's files: one JSON record per job, written whole to `tmp/`, fsynced, renamed into
//! its folder and the folder fsynced, so a job file is either the old one or the new one after
//! any crash; the journal that applies those writes in order; and the scan at open.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// Where a job file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Area {
    /// Runs when due, with backoff after failures.
    Pending,
    /// Parked after its retries; still retried, rarely.
    Failed,
}

impl Area {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Area::Pending => "pending",
            Area::Failed => "failed",
        }
    }
}

/// What a job file holds: the job and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record<J> {
    /// The work.
    pub job: J,
    /// Failed attempts since the job was (last) queued.
    pub attempts: u32,
    /// When the next attempt is due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// When the job was (last) queued, in milliseconds since the Unix epoch.
    pub queued_ms: u64,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// Milliseconds since the Unix epoch of `t` (0 before it).
pub(crate) fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long from now until `due_ms`, at most `cap` (a clock set back, or a file from far in
/// the future, must not hold a job for longer than its policy would).
pub(crate) fn until(due_ms: u64, cap: Duration) -> Duration {
    Duration::from_millis(due_ms.saturating_sub(millis(SystemTime::now()))).min(cap)
}

/// The queue's folders under its root.
#[derive(Clone, Debug)]
pub(crate) struct Dirs {
    pub root: PathBuf,
}

impl Dirs {
    pub(crate) fn area(&self, area: Area) -> PathBuf {
        self.root.join(area.name())
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn corrupt(&self) -> PathBuf {
        self.root.join("corrupt")
    }

    pub(crate) fn file(&self, area: Area, id: &str) -> PathBuf {
        self.area(area).join(format!("{id}.json"))
    }

    /// Creates the folders and empties `tmp/` (files a crash left half written).
    pub(crate) fn prepare(&self) -> io::Result<()> {
        for dir in [
            self.area(Area::Pending),
            self.area(Area::Failed),
            self.tmp(),
        ] {
            fs::create_dir_all(&dir).map_err(at(&dir))?;
        }
        for entry in fs::read_dir(self.tmp()).map_err(at(&self.tmp()))? {
            let path = entry.map_err(at(&self.tmp()))?.path();
            // Gone already: renamed into place by a writer that was still finishing (a role
            // stopped and started again in one process).
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(at(&path)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// Every record in `area` with its id (the file stem). A file that does not parse is moved
    /// to `corrupt/` and logged; the queue carries on without it.
    pub(crate) fn scan<J: DeserializeOwned>(
        &self,
        area: Area,
    ) -> io::Result<Vec<(String, Record<J>)>> {
        let dir = self.area(area);
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(at(&dir))? {
            let path = entry.map_err(at(&dir))?.path();
            let stem = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|s| !s.is_empty())
                .map(str::to_owned);
            let parsed = match &stem {
                None => Err("not a <id>.json job file".to_owned()),
                Some(_) => match fs::read(&path) {
                    Ok(bytes) => {
                        serde_json::from_slice::<Record<J>>(&bytes).map_err(|e| e.to_string())
                    }
                    // Removed or moved since it was listed: not a job any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => Err(e.to_string()),
                },
            };
            match (stem, parsed) {
                (Some(id), Ok(record)) => out.push((id, record)),
                (_, Err(why)) => self.set_aside(&path, &why)?,
                (None, Ok(_)) => {}
            }
        }
        Ok(out)
    }

    /// Moves a file that is not a job into `corrupt/`, where an operator can look at it.
    fn set_aside(&self, path: &Path, why: &str) -> io::Result<()> {
        let corrupt = self.corrupt();
        fs::create_dir_all(&corrupt).map_err(at(&corrupt))?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_else(|| "unnamed".into());
        let mut to = corrupt.join(&name);
        let mut n = 1;
        while to.exists() {
            to = corrupt.join(format!("{name}.{n}"));
            n += 1;
        }
        tracing::warn!(
            file = %path.display(),
            moved_to = %to.display(),
            reason = why,
            "a queue file is not a job: moved aside"
        );
        fs::rename(path, &to).map_err(at(path))
    }
}

/// One change to the files, applied in the order the queue made it.
pub(crate) enum Op {
    /// Writes `bytes` as job `id` in `area`.
    Write {
        area: Area,
        id: String,
        bytes: Vec<u8>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    },
    /// Writes `bytes` as job `id` in `to`, then removes it from `from`.
    Move {
        from: Area,
        to: Area,
        id: String,
        bytes: Vec<u8>,
        done: Option<oneshot::Sender<io::Result<()>>>,
    },
    /// Removes job `id` from `area` (gone already is fine).
    Remove { area: Area, id: String },
}

/// Ops taken per batch: the folders are fsynced once per batch, so pushes that arrive together
/// share that cost.
const BATCH: usize = 256;

/// Cleared when the journal's future is dropped (its role stopped): a batch still running on
/// its blocking thread then applies nothing more, so a role stopped and started again in the
/// same process never sees files changed behind its back by its former self.
struct Alive(Arc<AtomicBool>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// Applies ops until the sender side is gone, a batch at a time on a blocking thread.
pub(crate) async fn journal(dirs: Dirs, mut ops: mpsc::UnboundedReceiver<Op>) {
    let alive = Alive(Arc::new(AtomicBool::new(true)));
    let mut seq: u64 = 0;
    while let Some(first) = ops.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let (dirs, running) = (dirs.clone(), alive.0.clone());
        let start = seq;
        seq += batch.len() as u64;
        let applied =
            tokio::task::spawn_blocking(move || apply(&dirs, batch, start, &running)).await;
        if let Err(e) = applied {
            tracing::error!(error = %e, "the queue's journal thread failed");
        }
    }
}

/// Applies `batch` in order, then fsyncs the folders it touched. Once `running` is cleared the
/// rest is skipped: its waiters see the journal stopped, which is what happened.
fn apply(dirs: &Dirs, batch: Vec<Op>, seq: u64, running: &AtomicBool) {
    let mut touched = HashSet::new();
    let mut replies = Vec::new();
    for (n, op) in batch.into_iter().enumerate() {
        if !running.load(Ordering::SeqCst) {
            return;
        }
        let tmp = dirs.tmp().join(format!("{}.tmp", seq + n as u64));
        match op {
            Op::Write {
                area,
                id,
                bytes,
                done,
            } => {
                let r = write_atomic(&tmp, &dirs.file(area, &id), &bytes);
                touched.insert(area);
                replies.push((done, r, id));
            }
            Op::Move {
                from,
                to,
                id,
                bytes,
                done,
            } => {
                let r = write_atomic(&tmp, &dirs.file(to, &id), &bytes)
                    .and_then(|()| remove(&dirs.file(from, &id)));
                touched.extend([from, to]);
                replies.push((done, r, id));
            }
            Op::Remove { area, id } => {
                let r = remove(&dirs.file(area, &id));
                touched.insert(area);
                replies.push((None, r, id));
            }
        }
    }
    // The renames are durable once their folders are.
    let mut synced: io::Result<()> = Ok(());
    for area in touched {
        let dir = dirs.area(area);
        if let Err(e) = File::open(&dir).and_then(|d| d.sync_all()) {
            synced = Err(at(&dir)(e));
        }
    }
    for (done, r, id) in replies {
        let r = r.and_then(|()| match &synced {
            Ok(()) => Ok(()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        });
        match done {
            Some(tx) => {
                let _ = tx.send(r);
            }
            None => {
                if let Err(e) = r {
                    tracing::warn!(job = id, error = %e, "updating a queue file failed");
                }
            }
        }
    }
}

fn write_atomic(tmp: &Path, to: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(tmp).map_err(at(tmp))?;
    f.write_all(bytes).map_err(at(tmp))?;
    f.sync_all().map_err(at(tmp))?;
    drop(f);
    fs::rename(tmp, to).map_err(at(to)).inspect_err(|_| {
        let _ = fs::remove_file(tmp);
    })
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(path)(e)),
        _ => Ok(()),
    }
}

/// An I/O error that names the path.
pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}
