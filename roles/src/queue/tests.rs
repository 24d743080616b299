//! The queue against a real folder. Backoff is checked on tokio's paused clock: the runner
//! records when each attempt started, and the gaps are exact.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Mutex;

use serde::Deserialize;

use super::disk::Record;
use super::*;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Note {
    key: String,
    version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    blob: Option<Digest>,
}

fn note(key: &str, version: u32) -> Note {
    Note {
        key: key.into(),
        version,
        blob: None,
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "note {} v{}", self.key, self.version)
    }
}

impl Job for Note {
    const KINDS: &'static [&'static str] = &["note"];

    fn kind(&self) -> &'static str {
        "note"
    }

    fn key(&self) -> String {
        self.key.clone()
    }

    fn pins(&self) -> Option<&Digest> {
        self.blob.as_ref()
    }
}

/// Answers attempts from a script (then `Done`), and records each attempt and when it began.
#[derive(Default)]
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    runs: Mutex<Vec<(Instant, Note)>>,
    /// When set, each attempt waits for a permit first.
    gate: Option<Arc<Semaphore>>,
}

impl Script {
    fn new(outcomes: impl IntoIterator<Item = Outcome>) -> Arc<Script> {
        Arc::new(Script {
            outcomes: Mutex::new(outcomes.into_iter().collect()),
            ..Script::default()
        })
    }

    fn runs(&self) -> Vec<(Instant, Note)> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Runner<Note> for Script {
    async fn run(&self, job: &Note) -> Outcome {
        self.runs
            .lock()
            .unwrap()
            .push((Instant::now(), job.clone()));
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        let next = self.outcomes.lock().unwrap().pop_front();
        next.unwrap_or(Outcome::Done)
    }
}

fn policy(retries: u32) -> Policy {
    Policy {
        delay: Duration::from_secs(1),
        retries,
        max_delay: Duration::from_secs(60),
        parked_every: Duration::from_secs(600),
        workers: 4,
    }
}

fn files(dir: &Path, area: &str) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir.join(area)) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Lets the queue's tasks run until `done` holds, for at most 30 s of the test's clock (on a
/// paused clock, time moves only when every task waits, so these polls cost no real time).
async fn until(done: impl FnMut() -> bool) {
    until_within(Duration::from_secs(30), done).await;
}

/// [`until`] with a longer limit, for paused-clock tests that wait out parked retries.
async fn until_within(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn backoff_doubles_from_the_delay_up_to_its_cap() {
    let p = policy(5);
    let waits: Vec<u64> = (1..=8).map(|n| p.backoff(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    assert_eq!(p.backoff(u32::MAX), Duration::from_secs(60));
    let long = Policy {
        delay: Duration::from_secs(600),
        ..p
    };
    assert_eq!(long.backoff(3), Duration::from_secs(600));
}

#[tokio::test]
async fn a_pushed_job_is_on_disk_and_runs_after_the_queue_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tasks = Tasks::new();
        let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
        q.push(note("a", 1)).await.unwrap();
        // Acknowledged: the file is there, whatever happens to the process next.
        assert_eq!(files(dir.path(), "pending").len(), 1);
        tasks.stop();
    }
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
    assert_eq!(q.jobs(), vec![note("a", 1)]);
    let script = Script::new([]);
    q.start(script.clone(), &tasks);
    until(|| q.jobs().is_empty()).await;
    assert_eq!(script.runs().len(), 1);
    // The file goes once the job is done.
    until(|| files(dir.path(), "pending").is_empty()).await;
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_retried_with_doubling_waits_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
    let script = Script::new((0..3).map(|n| Outcome::Retry(format!("failure {n}"))));
    q.start(script.clone(), &tasks);
    q.push(note("a", 1)).await.unwrap();
    until(|| q.jobs().is_empty()).await;
    let runs = script.runs();
    let gaps: Vec<Duration> = runs.windows(2).map(|w| w[1].0 - w[0].0).collect();
    assert_eq!(
        gaps,
        [1, 2, 4].map(Duration::from_secs),
        "attempts at {runs:?}"
    );
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_file_carries_attempts_and_the_last_error_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tasks = Tasks::new();
        let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
        let script = Script::new([Outcome::Retry("backend down".into())]);
        script
            .outcomes
            .lock()
            .unwrap()
            .push_back(Outcome::Retry("still down".into()));
        q.start(script.clone(), &tasks);
        q.push(note("a", 1)).await.unwrap();
        until(|| script.runs().len() == 2).await;
        tasks.shutdown().await;
    }
    let pending = files(dir.path(), "pending");
    let text = std::fs::read_to_string(dir.path().join("pending").join(&pending[0])).unwrap();
    let record: Record<Note> = serde_json::from_str(&text).unwrap();
    assert_eq!(record.attempts, 2, "{text}");
    assert_eq!(record.last_error.as_deref(), Some("still down"), "{text}");
    assert!(record.due_ms > record.queued_ms, "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_retries_is_parked_in_failed_and_still_retried() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(1), &tasks).unwrap();
    let script = Script::new((0..3).map(|_| Outcome::Retry("no".into())));
    q.start(script.clone(), &tasks);
    q.push(note("a", 1)).await.unwrap();
    // The first attempt and one retry fail: parked.
    until(|| q.depth().by_kind == [("note", 0, 1)]).await;
    until(|| files(dir.path(), "failed").len() == 1).await;
    assert!(files(dir.path(), "pending").is_empty());
    let mut out = shoal_metrics::Exposition::new();
    q.depth().write(&mut out, "jobs", "Jobs.");
    let metrics = out.finish();
    assert!(
        metrics.contains("jobs{kind=\"note\",state=\"failed\"} 1\n"),
        "{metrics}"
    );
    // Parked, it is tried every `parked_every`: it fails once more, then succeeds.
    until_within(Duration::from_secs(3600), || q.jobs().is_empty()).await;
    let runs = script.runs();
    assert_eq!(runs.len(), 4);
    assert_eq!(runs[2].0 - runs[1].0, Duration::from_secs(600));
    assert_eq!(runs[3].0 - runs[2].0, Duration::from_secs(600));
    until(|| files(dir.path(), "failed").is_empty()).await;
    tasks.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_does_not_count_as_an_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    // No retries at all: one failure would park it.
    let q = Queue::<Note>::open(dir.path(), policy(0), &tasks).unwrap();
    let script = Script::new((0..5).map(|_| Outcome::Wait("target unhealthy".into())));
    q.start(script.clone(), &tasks);
    q.push(note("a", 1)).await.unwrap();
    until(|| q.jobs().is_empty()).await;
    let runs = script.runs();
    assert_eq!(runs.len(), 6);
    assert!(
        runs.windows(2)
            .all(|w| w[1].0 - w[0].0 == Duration::from_secs(1))
    );
    assert!(files(dir.path(), "failed").is_empty());
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_corrupt_file_is_moved_aside_and_the_rest_load() {
    let dir = tempfile::tempdir().unwrap();
    {
        let tasks = Tasks::new();
        let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
        q.push(note("good", 1)).await.unwrap();
        tasks.shutdown().await;
    }
    let pending = dir.path().join("pending");
    std::fs::write(pending.join("torn.json"), b"{\"job\": {\"key\": ").unwrap();
    std::fs::write(pending.join("stray.txt"), b"hello").unwrap();
    std::fs::write(dir.path().join("tmp").join("7.tmp"), b"half").unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
    assert_eq!(q.jobs(), vec![note("good", 1)]);
    assert_eq!(files(dir.path(), "corrupt"), ["stray.txt", "torn.json"]);
    assert_eq!(files(dir.path(), "pending").len(), 1);
    assert!(files(dir.path(), "tmp").is_empty());
    tasks.shutdown().await;
}

#[tokio::test]
async fn pushing_a_key_again_replaces_the_job_and_runs_after_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    q.start(script.clone(), &tasks);
    q.push(note("tag", 1)).await.unwrap();
    until(|| script.runs().len() == 1).await;
    // v1 is running; v2 replaces it on disk and in memory, and does not start beside it.
    q.push(note("tag", 2)).await.unwrap();
    assert_eq!(q.jobs(), vec![note("tag", 2)]);
    assert_eq!(files(dir.path(), "pending").len(), 1);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(script.runs().len(), 1, "two versions ran at once");
    gate.add_permits(2);
    until(|| q.jobs().is_empty()).await;
    let versions: Vec<u32> = script.runs().iter().map(|r| r.1.version).collect();
    assert_eq!(versions, [1, 2], "the newest version must run last");
    until(|| files(dir.path(), "pending").is_empty()).await;
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_job_pins_its_blob_until_it_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(5), &tasks).unwrap();
    let d = Digest::sha256_of(b"blob");
    let jobs = ["writeback", "replicate"].map(|k| Note {
        blob: Some(d.clone()),
        ..note(k, 1)
    });
    q.push_all(jobs.to_vec()).await.unwrap();
    assert!(q.pins(&d));
    assert!(!q.pins(&Digest::sha256_of(b"other")));
    let gate = Arc::new(Semaphore::new(0));
    let script = Arc::new(Script {
        gate: Some(gate.clone()),
        ..Script::default()
    });
    q.start(script.clone(), &tasks);
    gate.add_permits(1);
    until(|| q.jobs().len() == 1).await;
    assert!(q.pins(&d), "one job still needs the blob");
    gate.add_permits(1);
    until(|| q.jobs().is_empty()).await;
    assert!(!q.pins(&d));
    tasks.shutdown().await;
}

#[tokio::test]
async fn a_panicking_runner_counts_as_a_failed_attempt() {
    struct Panics;
    #[async_trait::async_trait]
    impl Runner<Note> for Panics {
        async fn run(&self, _: &Note) -> Outcome {
            panic!("runner bug")
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let tasks = Tasks::new();
    let q = Queue::<Note>::open(dir.path(), policy(0), &tasks).unwrap();
    q.start(Arc::new(Panics), &tasks);
    q.push(note("a", 1)).await.unwrap();
    until(|| q.depth().by_kind == [("note", 0, 1)]).await;
    tasks.shutdown().await;
}
