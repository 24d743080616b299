//! Listings of a repository's tags at the backend, shared: requests for one repository that
//! arrive while a listing runs wait for it to end and share the next one, which starts after
//! they all arrived. However many agents ask at once, at most two listings of a repository run
//! back to back, and no request is answered with a listing older than itself (a tag written
//! before the request is in its answer).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shoal_registry::{ApiResult, RegistryError, RepoName};

/// What one listing gave: the tags, `None` when the backend cannot list, or its error.
type Listed = Result<Option<Vec<String>>, (shoal_registry::ErrorCode, String)>;

/// A repository's last listing and when it started; its lock is held while a listing runs.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Listed)>>>;

/// The repositories being listed.
#[derive(Default)]
pub(super) struct Listings {
    slots: Mutex<HashMap<RepoName, Slot>>,
}

impl Listings {
    /// `repo`'s tags from `list`, or from a listing another request started after this one
    /// arrived.
    pub(super) async fn list<F, Fut>(
        &self,
        repo: &RepoName,
        list: F,
    ) -> ApiResult<Option<Vec<String>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ApiResult<Option<Vec<String>>>>,
    {
        let arrived = Instant::now();
        let slot = self.slot(repo);
        let listed = {
            let mut last = slot.lock().await;
            match &*last {
                Some((started, listed)) if *started >= arrived => listed.clone(),
                _ => {
                    let started = Instant::now();
                    let listed = list().await.map_err(|e| (e.code, e.message));
                    *last = Some((started, listed.clone()));
                    listed
                }
            }
        };
        self.release(repo, slot);
        listed.map_err(|(code, message)| RegistryError::new(code, message))
    }

    fn slot(&self, repo: &RepoName) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(repo.clone()).or_default().clone()
    }

    /// Forgets `repo`'s slot once nobody else holds it: a listing is only shared by requests
    /// that overlap it.
    fn release(&self, repo: &RepoName, slot: Slot) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        drop(slot);
        if slots.get(repo).is_some_and(|s| Arc::strong_count(s) == 1) {
            slots.remove(repo);
        }
    }

    #[cfg(test)]
    fn held(&self) -> usize {
        self.slots.lock().unwrap().len()
    }

    /// Requests for `repo` under way (running its listing or waiting for one).
    #[cfg(test)]
    fn under_way(&self, repo: &RepoName) -> usize {
        self.slots
            .lock()
            .unwrap()
            .get(repo)
            .map_or(0, |s| Arc::strong_count(s) - 1)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use shoal_registry::ErrorCode;
    use tokio::sync::watch;

    use super::*;

    /// A backend listing that counts its calls and waits until `gate` is open.
    async fn gated(
        calls: &AtomicUsize,
        mut gate: watch::Receiver<bool>,
    ) -> ApiResult<Option<Vec<String>>> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        gate.wait_for(|open| *open).await.unwrap();
        Ok(Some(vec![format!("listing-{n}")]))
    }

    #[tokio::test]
    async fn requests_during_a_listing_share_the_next_one() {
        let listings = Arc::new(Listings::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (open, gate) = watch::channel(false);
        let repo: RepoName = "team/app".parse().unwrap();
        let first = {
            let (listings, calls, gate, repo) =
                (listings.clone(), calls.clone(), gate.clone(), repo.clone());
            tokio::spawn(async move { listings.list(&repo, || gated(&calls, gate)).await })
        };
        // The first listing runs (and waits at the gate) before the others arrive.
        while calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let later: Vec<_> = (0..20)
            .map(|_| {
                let (listings, calls, gate, repo) =
                    (listings.clone(), calls.clone(), gate.clone(), repo.clone());
                tokio::spawn(async move { listings.list(&repo, || gated(&calls, gate)).await })
            })
            .collect();
        while listings.under_way(&repo) < 21 {
            tokio::task::yield_now().await;
        }
        open.send_replace(true);
        assert_eq!(
            first.await.unwrap().unwrap(),
            Some(vec!["listing-1".to_owned()])
        );
        for r in later {
            // Never the listing that started before them: the next one, shared.
            assert_eq!(
                r.await.unwrap().unwrap(),
                Some(vec!["listing-2".to_owned()])
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(listings.held(), 0, "slots are forgotten once nobody waits");
    }

    #[tokio::test]
    async fn a_request_after_a_listing_ended_gets_a_new_one_and_an_error_is_passed_on() {
        let listings = Listings::default();
        let repo: RepoName = "team/app".parse().unwrap();
        let calls = AtomicUsize::new(0);
        let (_open, gate) = watch::channel(true);
        for n in 1..=2 {
            let got = listings.list(&repo, || gated(&calls, gate.clone())).await;
            assert_eq!(got.unwrap(), Some(vec![format!("listing-{n}")]));
        }
        let failed = listings
            .list(&repo, || async {
                Err(RegistryError::new(ErrorCode::Unavailable, "backend down"))
            })
            .await
            .unwrap_err();
        assert_eq!(
            (failed.code, failed.message.as_str()),
            (ErrorCode::Unavailable, "backend down")
        );
    }
}
