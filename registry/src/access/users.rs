//! The htpasswd users and their bcrypt check. bcrypt is slow on purpose (tens of milliseconds
//! at cost 10), so it runs on a blocking thread and a success is remembered briefly, keyed by
//! a salted hash of user and password (a client that sends Basic credentials on every request
//! pays once).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use shoal_config::HtpasswdUsers;

/// The cost `hash_password` uses: about 50 ms per check on a current core, slow for a guesser,
/// and the verified cache keeps it off the path of every request.
pub const HASH_COST: u32 = 10;

/// How long a verified user and password are remembered.
const VERIFIED_TTL: Duration = Duration::from_secs(120);

/// Verified logins remembered at once; the cache is emptied when it fills.
const VERIFIED_MAX: usize = 1024;

/// The users of an htpasswd file.
pub(crate) struct Users {
    hashes: HtpasswdUsers,
    /// Per process: the cache keys mean nothing outside it.
    salt: [u8; 16],
    verified: Mutex<HashMap<[u8; 32], Instant>>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("users", &self.hashes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Users {
    /// Users from a parsed htpasswd file.
    pub fn new(hashes: HtpasswdUsers) -> Self {
        Users {
            hashes,
            salt: rand::random(),
            verified: Mutex::new(HashMap::new()),
        }
    }

    /// How many users there are.
    pub(crate) fn len(&self) -> usize {
        self.hashes.len()
    }

    fn key(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// A login verified within the last [`VERIFIED_TTL`].
    pub fn recently_verified(&self, user: &str, password: &str, now: Instant) -> bool {
        let key = self.key(user, password);
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&key).is_some_and(|until| now < *until)
    }

    /// Checks a password against the user's bcrypt hash on a blocking thread; an unknown user
    /// costs the same as a wrong password, so timing does not tell which users exist.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let hash = self.hashes.get(user).cloned();
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| dummy_hash().to_owned());
        let password_owned = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(password_owned, &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && known;
        if ok {
            let key = self.key(user, password);
            let mut cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if cache.len() >= VERIFIED_MAX {
                let now = Instant::now();
                cache.retain(|_, until| now < *until);
                if cache.len() >= VERIFIED_MAX {
                    cache.clear();
                }
            }
            cache.insert(key, Instant::now() + VERIFIED_TTL);
        }
        ok
    }
}

/// A hash no password is checked against successfully in practice, for unknown users.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| {
        // Hashing fails only when the OS has no randomness; a fixed hash of the same cost
        // does the job as well.
        bcrypt::hash("shoal: no such user", HASH_COST).unwrap_or_else(|_| {
            "$2b$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy".to_owned()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn verifies_bcrypt_and_remembers_successes() {
        let mut hashes = HtpasswdUsers::new();
        // Cost 4, the least bcrypt allows, to keep the test quick.
        hashes.insert("alice".into(), bcrypt::hash("secret", 4).unwrap());
        // What Apache's `htpasswd -nbB -C 5 bob hunter2` writes.
        hashes.insert(
            "bob".into(),
            "$2y$05$1L5.rDU3mfVOg72JhMJlKu9TIc30k6xqDTgJAPFBw/2dY95mZVhM6".into(),
        );
        let users = Users::new(hashes);
        let now = Instant::now();
        assert!(!users.recently_verified("alice", "secret", now));
        assert!(users.verify("alice", "secret").await);
        assert!(users.recently_verified("alice", "secret", Instant::now()));
        assert!(!users.recently_verified("alice", "Secret", Instant::now()));
        assert!(
            !users.recently_verified("alice", "secret", Instant::now() + VERIFIED_TTL),
            "a verified login is remembered past its TTL"
        );
        assert!(!users.verify("alice", "wrong").await);
        assert!(!users.verify("mallory", "secret").await);
        assert!(users.verify("bob", "hunter2").await);
        assert!(!users.verify("bob", "hunter3").await);
    }
}
