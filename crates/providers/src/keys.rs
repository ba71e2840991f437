//! Key pools: several keys per provider, used in turn; a refused key is quarantined, a
//! rate-limited key rests until its reset, and the pool can be replaced at run time (key
//! rotation) while calls in flight finish on the key they started with.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use aetherflow_provider::{ApiKey, ProviderError};
use tokio::time::Instant;

use crate::http::ConfigError;

/// Shows a key for humans: the first and last four characters of keys longer than eight,
/// `***` otherwise.
pub fn mask_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    if chars.len() > 8 {
        let head: String = chars[..4].iter().collect();
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{head}***{tail}")
    } else {
        "***".to_owned()
    }
}

/// Replaces every occurrence of `secret` in `text` with its mask (providers sometimes echo
/// part or all of a key in error messages).
pub fn redact(text: &str, secret: &str) -> String {
    if secret.len() < 4 || !text.contains(secret) {
        return text.to_owned();
    }
    text.replace(secret, &mask_key(secret))
}

/// How long a rate-limited key rests when the provider gave no hint.
pub const DEFAULT_REST: Duration = Duration::from_secs(1);

struct Slot {
    key: ApiKey,
    /// Names the key across processes without revealing it (see [`fingerprint`]).
    fingerprint: String,
    quarantined: Option<String>,
    resting_until: Option<Instant>,
    pace: Option<Arc<governor::DefaultDirectRateLimiter>>,
    tokens: Option<Arc<governor::DefaultDirectRateLimiter>>,
}

/// What one attempt to pick a key found.
enum Pick {
    Key(ApiKey),
    /// Every usable key is paced by the client-side limit; the soonest is free after this.
    Paced(Duration),
    Fail(ProviderError),
}

struct PoolState {
    slots: Vec<Slot>,
    next: usize,
}

/// The keys of one provider.
pub struct KeyPool {
    provider: String,
    state: Mutex<PoolState>,
    requests_per_minute: Option<NonZeroU32>,
    tokens_per_minute: Option<NonZeroU32>,
    /// Where quarantines and rests are told to the other processes using the same keys.
    sink: OnceLock<Arc<dyn KeyStateSink>>,
    /// Client-side limits shared with the other processes using the same keys.
    pacer: OnceLock<Arc<dyn SharedPacer>>,
    /// Calls paced by this process's own limits because the shared ones could not decide.
    local_fallbacks: std::sync::atomic::AtomicU64,
}

/// Per-key limits shared by every process using the same keys (GCRA in Redis, in
/// `aetherflow-redis`), so N replicas together send a key what one would.
#[async_trait::async_trait]
pub trait SharedPacer: std::fmt::Debug + Send + Sync {
    /// Counts one call of `tokens` prompt tokens against the key named `name` (its provider
    /// and fingerprint) — at most `requests_per_minute` calls a minute, evenly spaced, and
    /// `tokens_per_minute` tokens a minute — both or neither: `Ok(None)` when granted,
    /// `Ok(Some(wait))` when refused (it fits after `wait`, nothing was counted), `Err` when the
    /// shared store cannot decide (the pool's own limits decide then).
    async fn take(
        &self,
        name: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
        tokens: u32,
    ) -> Result<Option<Duration>, String>;
}

/// A key's name across processes: the first 64 bits of the SHA-256 of its secret, in hex. The
/// same key gets the same fingerprint in every replica whatever its position in each one's
/// configuration; a 64-bit prefix of the hash of a random secret reveals nothing of it.
pub fn fingerprint(key: &ApiKey) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key.expose().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a key pool tells other processes that a key was refused or must rest (Redis in
/// `aetherflow-redis`), so every replica avoids it, not only the one that saw the error.
pub trait KeyStateSink: std::fmt::Debug + Send + Sync {
    /// The key with `fingerprint` was refused for good (`kind`: `auth`, `insufficient_balance`).
    fn quarantined(&self, provider: &str, fingerprint: &str, kind: &str);
    /// The key with `fingerprint` rests until `until` (a rate limit).
    fn resting(&self, provider: &str, fingerprint: &str, until: SystemTime);
}

/// A key's state as another process reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedKeyState {
    /// Refused for good, with the error's kind.
    Quarantined(String),
    /// Rate limited until then.
    RestingUntil(SystemTime),
}

impl std::fmt::Debug for KeyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPool")
            .field("provider", &self.provider)
            .field("keys", &self.ids())
            .finish()
    }
}

/// A key's state, for `providers list` and metrics (the key itself is masked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The key's id.
    pub id: String,
    /// The key, masked.
    pub masked: String,
    /// Why it is quarantined, if it is.
    pub quarantined: Option<String>,
    /// How long it still rests after a rate limit.
    pub resting_for: Option<Duration>,
}

impl KeyPool {
    /// A pool over `keys`; at least one is needed.
    pub fn new(provider: &str, keys: Vec<ApiKey>) -> Result<Self, ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::NoKey {
                provider: provider.to_owned(),
            });
        }
        Ok(KeyPool {
            provider: provider.to_owned(),
            state: Mutex::new(PoolState {
                slots: keys.into_iter().map(|k| Slot::fresh(k, None)).collect(),
                next: 0,
            }),
            requests_per_minute: None,
            tokens_per_minute: None,
            sink: OnceLock::new(),
            pacer: OnceLock::new(),
            local_fallbacks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The provider these keys are for.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// From now on, tells `sink` about quarantines and rests (once; later calls are ignored).
    pub fn share_with(&self, sink: Arc<dyn KeyStateSink>) {
        let _ = self.sink.set(sink);
    }

    /// How many calls this process's own limits paced because the shared ones could not decide
    /// (a metric).
    pub fn local_fallbacks(&self) -> u64 {
        self.local_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// From now on, the per-key request and token limits are counted in `pacer`, shared with
    /// every process using the same keys (once; later calls are ignored). While `pacer` cannot
    /// decide, each process's own limits do.
    pub fn pace_with(&self, pacer: Arc<dyn SharedPacer>) {
        let _ = self.pacer.set(pacer);
    }

    /// Applies a state another process reported for the key with `fingerprint` (unknown
    /// fingerprints, keys this process does not have, are ignored). Never reported back.
    pub fn apply_shared(&self, fingerprint: &str, shared: &SharedKeyState) {
        let mut state = self.lock();
        let Some(slot) = state
            .slots
            .iter_mut()
            .find(|s| s.fingerprint == fingerprint)
        else {
            return;
        };
        match shared {
            SharedKeyState::Quarantined(kind) => {
                if slot.quarantined.is_none() {
                    tracing::warn!(provider = %self.provider, key = slot.key.id(), kind = %kind, "key quarantined (reported by another process)");
                    slot.quarantined = Some(kind.clone());
                }
            }
            SharedKeyState::RestingUntil(until) => {
                if let Ok(left) = until.duration_since(SystemTime::now()) {
                    let until = Instant::now() + left;
                    slot.resting_until = Some(slot.resting_until.map_or(until, |u| u.max(until)));
                }
            }
        }
    }

    /// Paces each key to at most `requests_per_minute` calls, spread evenly (client-side, so
    /// AetherFlow slows down before the provider answers 429).
    pub fn with_rate_limit(mut self, requests_per_minute: Option<NonZeroU32>) -> Self {
        self.requests_per_minute = requests_per_minute;
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in &mut state.slots {
            slot.pace = pacer(requests_per_minute);
        }
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The ids of the keys, in order.
    pub fn ids(&self) -> Vec<String> {
        self.lock()
            .slots
            .iter()
            .map(|s| s.key.id().to_owned())
            .collect()
    }

    /// Each key's state.
    pub fn status(&self) -> Vec<KeyStatus> {
        let now = Instant::now();
        self.lock()
            .slots
            .iter()
            .map(|s| KeyStatus {
                id: s.key.id().to_owned(),
                masked: mask_key(s.key.expose()),
                quarantined: s.quarantined.clone(),
                resting_for: s
                    .resting_until
                    .and_then(|until| until.checked_duration_since(now))
                    .filter(|d| !d.is_zero()),
            })
            .collect()
    }

    /// Limits each key to about `tokens_per_minute` prompt tokens (estimated by the caller),
    /// so a burst of large requests waits on our side instead of earning 429s.
    pub fn with_token_limit(mut self, tokens_per_minute: Option<NonZeroU32>) -> Self {
        self.tokens_per_minute = tokens_per_minute;
        let state = self
            .state
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for slot in &mut state.slots {
            slot.tokens = token_bucket(tokens_per_minute);
        }
        self
    }

    /// The next usable key, in turn. When none is usable the error says why: every key refused
    /// (auth), all resting (rate limited, with the shortest wait), or all paced by the
    /// client-side limit (use [`KeyPool::acquire_paced`] to wait for one instead).
    pub fn acquire(&self) -> Result<ApiKey, ProviderError> {
        match self.pick(0) {
            Pick::Key(k) => Ok(k),
            Pick::Paced(wait) => Err(ProviderError::RateLimited {
                retry_after: Some(wait),
                message: format!(
                    "every key of {} is at its client-side rate limit",
                    self.provider
                ),
            }),
            Pick::Fail(e) => Err(e),
        }
    }

    /// As [`KeyPool::acquire`], but waits (up to `max_wait`) for a key paced by the client-side
    /// limit instead of failing.
    pub async fn acquire_paced(
        &self,
        max_wait: Duration,
        tokens: u32,
    ) -> Result<ApiKey, ProviderError> {
        let deadline = Instant::now() + max_wait;
        if let Some(pacer) = self.pacer.get()
            && (self.requests_per_minute.is_some() || self.tokens_per_minute.is_some())
        {
            match self.acquire_shared(pacer.as_ref(), deadline, tokens).await {
                Ok(picked) => return picked,
                Err(e) => {
                    self.local_fallbacks
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(provider = %self.provider, error = %e, "shared key limits unavailable; this process's own limits decide");
                }
            }
        }
        loop {
            match self.pick(tokens) {
                Pick::Key(k) => return Ok(k),
                Pick::Fail(e) => return Err(e),
                Pick::Paced(wait) => {
                    if Instant::now() + wait > deadline {
                        return Err(ProviderError::RateLimited {
                            retry_after: Some(wait),
                            message: format!(
                                "every key of {} is at its client-side rate limit",
                                self.provider
                            ),
                        });
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// The next usable key whose shared limits grant the call, in turn, waiting (until
    /// `deadline`) when every usable key is at its limit. `Err` when the shared store cannot
    /// decide.
    async fn acquire_shared(
        &self,
        pacer: &dyn SharedPacer,
        deadline: Instant,
        tokens: u32,
    ) -> Result<Result<ApiKey, ProviderError>, String> {
        loop {
            let now = Instant::now();
            let candidates: Vec<(usize, ApiKey, String)> = {
                let state = self.lock();
                let n = state.slots.len();
                (0..n)
                    .map(|offset| (state.next + offset) % n)
                    .filter(|&i| {
                        let slot = &state.slots[i];
                        slot.quarantined.is_none()
                            && slot.resting_until.is_none_or(|until| until <= now)
                    })
                    .map(|i| {
                        let slot = &state.slots[i];
                        (i, slot.key.clone(), slot.fingerprint.clone())
                    })
                    .collect()
            };
            if candidates.is_empty() {
                // Refused or resting: the local pick says which, with the wait.
                return Ok(self.acquire());
            }
            let mut soonest: Option<Duration> = None;
            for (i, key, fingerprint) in candidates {
                // A request too large for a whole minute's tokens is left to the provider.
                let tpm = self
                    .tokens_per_minute
                    .map(NonZeroU32::get)
                    .filter(|&tpm| tokens > 0 && tokens <= tpm);
                let wait = pacer
                    .take(
                        &format!("{}:{fingerprint}", self.provider),
                        self.requests_per_minute.map(NonZeroU32::get),
                        tpm,
                        tokens,
                    )
                    .await?;
                match wait {
                    None => {
                        let mut state = self.lock();
                        let n = state.slots.len();
                        state.next = (i + 1) % n;
                        state.slots[i].resting_until = None;
                        return Ok(Ok(key));
                    }
                    Some(w) => soonest = Some(soonest.map_or(w, |s| s.min(w))),
                }
            }
            let wait = soonest.unwrap_or(Duration::from_millis(1));
            if Instant::now() + wait > deadline {
                return Ok(Err(ProviderError::RateLimited {
                    retry_after: Some(wait),
                    message: format!(
                        "every key of {} is at its client-side rate limit (shared by every process using it)",
                        self.provider
                    ),
                }));
            }
            tokio::time::sleep(wait).await;
        }
    }

    fn pick(&self, tokens: u32) -> Pick {
        let now = Instant::now();
        let mut state = self.lock();
        let n = state.slots.len();
        let mut paced: Option<Duration> = None;
        for offset in 0..n {
            let i = (state.next + offset) % n;
            let slot = &mut state.slots[i];
            if slot.quarantined.is_some() {
                continue;
            }
            if slot.resting_until.is_some_and(|until| until > now) {
                continue;
            }
            // A request larger than a whole minute's budget cannot ever fit: let the provider
            // judge it (it answers 413 or similar) rather than wait forever.
            if let (Some(bucket), Some(n)) = (&slot.tokens, NonZeroU32::new(tokens))
                && let Ok(Err(not_until)) = bucket.check_n(n)
            {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                paced = Some(paced.map_or(wait, |p| p.min(wait)));
                continue;
            }
            if let Some(pace) = &slot.pace
                && let Err(not_until) = pace.check()
            {
                let wait = not_until.wait_time_from(governor::clock::Clock::now(
                    &governor::clock::DefaultClock::default(),
                ));
                paced = Some(paced.map_or(wait, |p| p.min(wait)));
                continue;
            }
            slot.resting_until = None;
            let key = slot.key.clone();
            state.next = (i + 1) % n;
            return Pick::Key(key);
        }
        if let Some(wait) = paced {
            return Pick::Paced(wait);
        }
        let soonest = state
            .slots
            .iter()
            .filter(|s| s.quarantined.is_none())
            .filter_map(|s| s.resting_until)
            .min();
        Pick::Fail(match soonest {
            Some(until) => ProviderError::RateLimited {
                retry_after: Some(until.saturating_duration_since(now)),
                message: format!(
                    "every key of {} is resting after a rate limit",
                    self.provider
                ),
            },
            None => ProviderError::Auth {
                message: format!(
                    "every key of {} was refused (quarantined: {}); replace the keys and reload",
                    self.provider,
                    state
                        .slots
                        .iter()
                        .map(|s| s.key.id())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
        })
    }

    /// Records how a call with `key_id` ended, so the next `acquire` avoids bad keys.
    pub fn report(&self, key_id: &str, outcome: Result<(), &ProviderError>) {
        let Err(error) = outcome else { return };
        let mut state = self.lock();
        let Some(slot) = state.slots.iter_mut().find(|s| s.key.id() == key_id) else {
            // The pool was replaced while the call was in flight: nothing to update.
            return;
        };
        match error {
            ProviderError::Auth { .. } | ProviderError::InsufficientBalance { .. } => {
                tracing::warn!(provider = %self.provider, key = key_id, kind = error.kind(), "key quarantined");
                slot.quarantined = Some(error.kind().to_owned());
                if let Some(sink) = self.sink.get() {
                    sink.quarantined(&self.provider, &slot.fingerprint, error.kind());
                }
            }
            ProviderError::RateLimited { retry_after, .. } => {
                let rest = retry_after.unwrap_or(DEFAULT_REST);
                tracing::info!(provider = %self.provider, key = key_id, rest_ms = rest.as_millis() as u64, "key resting");
                slot.resting_until = Some(Instant::now() + rest);
                if let Some(sink) = self.sink.get() {
                    sink.resting(&self.provider, &slot.fingerprint, SystemTime::now() + rest);
                }
            }
            _ => {}
        }
    }

    /// Rests a key for `duration` although its call succeeded: the provider said its budget is
    /// used up until then (Groq's `x-ratelimit-remaining-*: 0`).
    pub fn rest(&self, key_id: &str, duration: Duration) {
        let mut state = self.lock();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.key.id() == key_id) {
            let until = Instant::now() + duration;
            slot.resting_until = Some(slot.resting_until.map_or(until, |u| u.max(until)));
            if let Some(sink) = self.sink.get() {
                sink.resting(
                    &self.provider,
                    &slot.fingerprint,
                    SystemTime::now() + duration,
                );
            }
        }
    }

    /// Replaces the keys (rotation). A key whose secret is unchanged keeps its state; calls in
    /// flight keep the key they hold.
    pub fn replace(&self, keys: Vec<ApiKey>) -> Result<(), ConfigError> {
        if keys.is_empty() {
            return Err(ConfigError::NoKey {
                provider: self.provider.clone(),
            });
        }
        let mut state = self.lock();
        let old = std::mem::take(&mut state.slots);
        state.slots = keys
            .into_iter()
            .map(
                |key| match old.iter().find(|s| s.key.expose() == key.expose()) {
                    Some(previous) => Slot {
                        fingerprint: previous.fingerprint.clone(),
                        key,
                        quarantined: previous.quarantined.clone(),
                        resting_until: previous.resting_until,
                        pace: previous.pace.clone(),
                        tokens: previous.tokens.clone(),
                    },
                    None => {
                        let mut slot = Slot::fresh(key, self.requests_per_minute);
                        slot.tokens = token_bucket(self.tokens_per_minute);
                        slot
                    }
                },
            )
            .collect();
        state.next = 0;
        Ok(())
    }
}

impl Slot {
    fn fresh(key: ApiKey, requests_per_minute: Option<NonZeroU32>) -> Self {
        Slot {
            fingerprint: fingerprint(&key),
            key,
            quarantined: None,
            resting_until: None,
            pace: pacer(requests_per_minute),
            tokens: None,
        }
    }
}

/// A minute's worth of tokens, refilled continuously.
fn token_bucket(
    tokens_per_minute: Option<NonZeroU32>,
) -> Option<Arc<governor::DefaultDirectRateLimiter>> {
    tokens_per_minute.map(|tpm| {
        Arc::new(governor::RateLimiter::direct(governor::Quota::per_minute(
            tpm,
        )))
    })
}

/// One call every `60 / rpm` seconds, no bursts.
fn pacer(
    requests_per_minute: Option<NonZeroU32>,
) -> Option<Arc<governor::DefaultDirectRateLimiter>> {
    requests_per_minute.map(|rpm| {
        Arc::new(governor::RateLimiter::direct(
            governor::Quota::per_minute(rpm).allow_burst(NonZeroU32::MIN),
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn keys(n: usize) -> Vec<ApiKey> {
        (1..=n)
            .map(|i| {
                ApiKey::new(
                    format!("p#{i}"),
                    SecretString::from(format!("secret-key-{i}")),
                )
            })
            .collect()
    }

    #[test]
    fn masks_show_only_the_ends() {
        assert_eq!(mask_key("sk-1234567890abcd"), "sk-1***abcd");
        assert_eq!(mask_key("short"), "***");
        assert_eq!(mask_key("12345678"), "***");
        assert_eq!(
            redact("bad key sk-1234567890abcd!", "sk-1234567890abcd"),
            "bad key sk-1***abcd!"
        );
    }

    #[test]
    fn keys_are_used_in_turn() {
        let pool = KeyPool::new("p", keys(3)).expect("pool");
        let ids: Vec<String> = (0..4)
            .map(|_| pool.acquire().expect("key").id().to_owned())
            .collect();
        assert_eq!(ids, ["p#1", "p#2", "p#3", "p#1"]);
    }

    #[test]
    fn refused_keys_are_quarantined() {
        let pool = KeyPool::new("p", keys(2)).expect("pool");
        let auth = ProviderError::Auth {
            message: "bad".into(),
        };
        pool.report("p#1", Err(&auth));
        for _ in 0..3 {
            assert_eq!(pool.acquire().expect("key").id(), "p#2");
        }
        pool.report(
            "p#2",
            Err(&ProviderError::InsufficientBalance {
                message: "broke".into(),
            }),
        );
        let err = pool.acquire().expect_err("none left");
        assert_eq!(err.kind(), "auth");
        assert!(err.to_string().contains("p#1, p#2"), "{err}");
        assert!(!err.to_string().contains("secret-key"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limited_keys_rest_until_their_reset() {
        let pool = KeyPool::new("p", keys(2)).expect("pool");
        let limited = ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(5)),
            message: String::new(),
        };
        pool.report("p#1", Err(&limited));
        pool.report("p#2", Err(&limited));
        let err = pool.acquire().expect_err("all resting");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(pool.acquire().is_ok());
    }

    #[tokio::test]
    async fn a_client_side_limit_paces_calls_instead_of_failing() {
        // 1 200 a minute is one every 50 ms.
        let pool = KeyPool::new("p", keys(1))
            .expect("pool")
            .with_rate_limit(NonZeroU32::new(1_200));
        let started = std::time::Instant::now();
        for _ in 0..3 {
            pool.acquire_paced(Duration::from_secs(5), 0)
                .await
                .expect("key");
        }
        assert!(
            started.elapsed() >= Duration::from_millis(95),
            "{:?}",
            started.elapsed()
        );
        // Without waiting, the caller learns how long the pace asks for.
        let err = pool.acquire().expect_err("paced");
        assert!(
            err.retry_after()
                .is_some_and(|d| d <= Duration::from_millis(50)),
            "{err:?}"
        );
        let err = pool
            .acquire_paced(Duration::ZERO, 0)
            .await
            .expect_err("no time to wait");
        assert_eq!(err.kind(), "rate_limited");
    }

    #[tokio::test]
    async fn a_token_budget_makes_large_requests_wait() {
        // 60 000 tokens a minute refill 1 000 tokens every second.
        let pool = KeyPool::new("p", keys(1))
            .expect("pool")
            .with_token_limit(NonZeroU32::new(60_000));
        pool.acquire_paced(Duration::from_secs(5), 59_500)
            .await
            .expect("fits the burst");
        let err = pool
            .acquire_paced(Duration::ZERO, 2_000)
            .await
            .expect_err("budget spent");
        let wait = err.retry_after().expect("a wait");
        assert!(
            wait > Duration::from_millis(1_000) && wait <= Duration::from_millis(1_600),
            "{wait:?}"
        );
        // Small requests still fit in what is left.
        pool.acquire_paced(Duration::ZERO, 400)
            .await
            .expect("small request");
        // Larger than a whole minute's budget: never waits forever, the provider decides.
        pool.acquire_paced(Duration::ZERO, 100_000)
            .await
            .expect("passed through");
    }

    #[test]
    fn replacing_keys_keeps_state_of_unchanged_keys() {
        let pool = KeyPool::new("p", keys(2)).expect("pool");
        pool.report(
            "p#1",
            Err(&ProviderError::Auth {
                message: String::new(),
            }),
        );
        let mut new_keys = keys(2);
        new_keys.push(ApiKey::new("p#3", SecretString::from("secret-key-3")));
        pool.replace(new_keys).expect("replace");
        let status = pool.status();
        assert_eq!(status.len(), 3);
        assert!(status[0].quarantined.is_some());
        assert!(status[2].quarantined.is_none());
        assert_eq!(status[2].masked, "secr***ey-3");
        assert!(pool.replace(Vec::new()).is_err());
        let shown = format!("{pool:?}");
        assert!(!shown.contains("secret-key"), "{shown}");
    }
}
