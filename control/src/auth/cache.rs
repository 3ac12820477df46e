//! Verified session tokens, kept for [`CACHE_TTL`] so a request pays one
//! hash lookup instead of an RSA verification. Bounded: at [`CACHE_MAX`]
//! entries the expired ones go, and if none did, all of them.
//! Deleting an account drops its entries at once ([`TokenCache::forget_uid`]);
//! nothing else can revoke a token, so the TTL bounds every other staleness.
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a verified token is trusted without verifying it again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// At most this many cached tokens.
pub const CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone)]
struct Entry {
    uid: String,
    /// The token's own expiry, Unix seconds.
    exp: u64,
    verified: Instant,
}

/// Token → who it is, for tokens verified recently.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: HashMap<String, Entry>,
}

impl TokenCache {
    /// The uid of a cached token still within its TTL and its own expiry.
    pub fn get(&self, token: &str, now: Instant, unix_now: u64) -> Option<&str> {
        let e = self.entries.get(token)?;
        (now.duration_since(e.verified) < CACHE_TTL && e.exp > unix_now).then_some(e.uid.as_str())
    }

    /// Remembers a token just verified.
    pub fn put(&mut self, token: &str, uid: &str, exp: u64, now: Instant) {
        if self.entries.len() >= CACHE_MAX {
            self.entries
                .retain(|_, e| now.duration_since(e.verified) < CACHE_TTL);
            if self.entries.len() >= CACHE_MAX {
                self.entries.clear();
            }
        }
        self.entries.insert(
            token.to_string(),
            Entry {
                uid: uid.to_string(),
                exp,
                verified: now,
            },
        );
    }

    /// Drops every token of `uid` (the account was deleted).
    pub fn forget_uid(&mut self, uid: &str) {
        self.entries.retain(|_, e| e.uid != uid);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_by_ttl_and_by_token_expiry_and_stay_bounded() {
        let t0 = Instant::now();
        let mut c = TokenCache::default();
        c.put("t1", "alice", 1_000, t0);
        assert_eq!(c.get("t1", t0, 999), Some("alice"));
        assert_eq!(c.get("t1", t0, 1_000), None, "the token itself expired");
        assert_eq!(c.get("t1", t0 + CACHE_TTL, 10), None, "past the TTL");
        c.put("t2", "bob", 1_000, t0);
        c.forget_uid("alice");
        assert_eq!(c.get("t1", t0, 10), None);
        assert_eq!(c.get("t2", t0, 10), Some("bob"));
        for i in 0..CACHE_MAX + 5 {
            c.put(&format!("x{i}"), "u", 1_000, t0);
        }
        assert!(c.len() <= CACHE_MAX);
    }
}
