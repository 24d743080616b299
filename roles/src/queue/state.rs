//! The queue's memory: every job with its file id, state, due time and generation; the index
//! by key (one job per key) and by due time (what runs next); the pinned blobs. Every change
//! that must reach the files is sent to the journal while the state is locked, so the files
//! change in the order the state did.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::time::SystemTime;

use serde::Serialize;
use shoal_registry::Digest;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Job;
use super::disk::{Area, Op, Record, millis};

pub(super) struct State<J> {
    pub(super) entries: HashMap<String, Entry<J>>,
    pub(super) by_key: HashMap<String, String>,
    /// Idle jobs by due time.
    pub(super) schedule: BTreeSet<(Instant, String)>,
    /// Jobs per pinned blob.
    pub(super) pins: HashMap<Digest, usize>,
    pub(super) next_generation: u64,
    pub(super) journal: mpsc::UnboundedSender<Op>,
}

pub(super) struct Entry<J> {
    pub(super) record: Record<J>,
    pub(super) area: Area,
    pub(super) due: Instant,
    pub(super) running: bool,
    /// Bumped by every push of the key, so a run of an older version does not finish a newer.
    pub(super) generation: u64,
}

impl<J: Job> State<J> {
    pub(super) fn insert(&mut self, id: String, record: Record<J>, area: Area, due: Instant) {
        if let Some(d) = record.job.pins() {
            *self.pins.entry(d.clone()).or_default() += 1;
        }
        self.by_key.insert(record.job.key(), id.clone());
        self.schedule.insert((due, id.clone()));
        self.next_generation += 1;
        let generation = self.next_generation;
        self.entries.insert(
            id,
            Entry {
                record,
                area,
                due,
                running: false,
                generation,
            },
        );
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry<J>> {
        let entry = self.entries.remove(id)?;
        self.schedule.remove(&(entry.due, id.to_owned()));
        self.by_key.remove(&entry.record.job.key());
        if let Some(d) = entry.record.job.pins() {
            unpin(&mut self.pins, d);
        }
        Some(entry)
    }

    pub(super) fn counts(&self) -> (usize, usize) {
        let failed = self
            .entries
            .values()
            .filter(|e| e.area == Area::Failed)
            .count();
        (self.entries.len() - failed, failed)
    }

    /// Takes the first due idle job (marking it running), or says when the next one is due.
    pub(super) fn take_due(&mut self, now: Instant) -> Result<(String, J, u64), Option<Instant>> {
        let Some((due, id)) = self.schedule.first().cloned() else {
            return Err(None);
        };
        if due > now {
            return Err(Some(due));
        }
        self.schedule.remove(&(due, id.clone()));
        let Some(entry) = self.entries.get_mut(&id) else {
            return Err(Some(now));
        };
        entry.running = true;
        Ok((id, entry.record.job.clone(), entry.generation))
    }

    /// Queues `job` (see [`Queue::push`]); the receiver says when its file is on disk.
    pub(super) fn push(&mut self, job: J) -> oneshot::Receiver<io::Result<()>> {
        let (done, wait) = oneshot::channel();
        let now_ms = millis(SystemTime::now());
        let now = Instant::now();
        let record = Record {
            job,
            attempts: 0,
            due_ms: now_ms,
            queued_ms: now_ms,
            last_error: None,
        };
        let bytes = encode(&record);
        let key = record.job.key();
        let Some(id) = self.by_key.get(&key).cloned() else {
            let id = self.fresh_id(&key);
            let _ = self.journal.send(Op::Write {
                area: Area::Pending,
                id: id.clone(),
                bytes,
                done: Some(done),
            });
            self.insert(id, record, Area::Pending, now);
            return wait;
        };
        self.next_generation += 1;
        let generation = self.next_generation;
        let Some(entry) = self.entries.get_mut(&id) else {
            return wait;
        };
        let (old_pin, new_pin) = (entry.record.job.pins().cloned(), record.job.pins().cloned());
        let from = entry.area;
        let was = (entry.due, entry.running);
        entry.record = record;
        entry.area = Area::Pending;
        entry.due = now;
        entry.generation = generation;
        if from == Area::Failed {
            tracing::info!(job = %entry.record.job, "a parked job was pushed again: pending");
            let _ = self.journal.send(Op::Move {
                from,
                to: Area::Pending,
                id: id.clone(),
                bytes,
                done: Some(done),
            });
        } else {
            let _ = self.journal.send(Op::Write {
                area: Area::Pending,
                id: id.clone(),
                bytes,
                done: Some(done),
            });
        }
        if !was.1 {
            // Idle: rescheduled now. Running: scheduled when that run finishes.
            self.schedule.remove(&(was.0, id.clone()));
            self.schedule.insert((now, id));
        }
        if old_pin != new_pin {
            if let Some(d) = &old_pin {
                unpin(&mut self.pins, d);
            }
            if let Some(d) = new_pin {
                *self.pins.entry(d).or_default() += 1;
            }
        }
        wait
    }

    /// A file name for a new job with `key`: derived from the key, so one job keeps one name.
    fn fresh_id(&self, key: &str) -> String {
        use sha2::Digest as _;
        let hash = hex::encode(&sha2::Sha256::digest(key.as_bytes())[..16]);
        let mut id = hash.clone();
        let mut n = 1;
        while self.entries.contains_key(&id) {
            id = format!("{hash}-{n}");
            n += 1;
        }
        id
    }
}

pub(super) fn unpin(pins: &mut HashMap<Digest, usize>, d: &Digest) {
    if let Some(n) = pins.get_mut(d) {
        *n -= 1;
        if *n == 0 {
            pins.remove(d);
        }
    }
}

pub(super) fn encode<J: Serialize>(record: &Record<J>) -> Vec<u8> {
    // A record of strings and numbers always serializes; an empty file would be set aside
    // as corrupt at the next open rather than crash anything.
    serde_json::to_vec_pretty(record).unwrap_or_default()
}
