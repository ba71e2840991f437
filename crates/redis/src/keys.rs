//! Provider key states shared through Redis: a key refused by a provider (quarantined) or told
//! to wait (resting after a rate limit) in one replica is avoided by every replica. Keys are
//! named by their fingerprint (a 64-bit SHA-256 prefix), never by their secret.
//!
//! One hash per provider, fingerprint → `q:<kind>` or `r:<until, ms since the epoch>`; a
//! quarantine is never downgraded to a rest. Pools report as it happens (in the background) and
//! read the others' reports every second ([`RedisKeyStates::spawn_sync`]), so a state spreads
//! within about a second. If Redis is down, each pool keeps its own view.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aetherflow_providers::keys::{KeyPool, KeyStateSink, SharedKeyState};
use redis::Script;

use crate::Shared;

/// How long a provider's key states are kept after the last report.
const RETENTION_SECS: u64 = 7 * 24 * 3600;

/// KEYS: the provider's hash; ARGV: fingerprint, until ms, retention s. Records a rest unless
/// the key is quarantined or already rests longer.
const REST: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current then
  if string.sub(current, 1, 2) == 'q:' then return 0 end
  local rests_until = tonumber(string.sub(current, 3))
  if rests_until and rests_until >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], 'r:' .. ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
";

/// Key states in Redis, shared by every process with the same `redis.url` and namespace.
#[derive(Debug, Clone)]
pub struct RedisKeyStates {
    shared: Shared,
    rest: Arc<Script>,
}

impl RedisKeyStates {
    /// Key states over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisKeyStates {
            shared,
            rest: Arc::new(Script::new(REST)),
        }
    }

    fn key(&self, provider: &str) -> String {
        self.shared.key(&["keys", provider])
    }

    /// Reads what other processes reported for `pool`'s provider and applies it.
    pub async fn sync(&self, pool: &KeyPool) -> Result<(), String> {
        let mut conn = self.shared.conn.clone();
        let states: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(self.key(pool.provider()))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        for (fingerprint, value) in states {
            let state = if let Some(kind) = value.strip_prefix("q:") {
                SharedKeyState::Quarantined(kind.to_owned())
            } else if let Some(ms) = value.strip_prefix("r:").and_then(|m| m.parse().ok()) {
                SharedKeyState::RestingUntil(UNIX_EPOCH + Duration::from_millis(ms))
            } else {
                continue;
            };
            pool.apply_shared(&fingerprint, &state);
        }
        Ok(())
    }

    /// Makes `pools` report to Redis and read the others' reports every `every`, until the
    /// runtime stops.
    pub fn spawn_sync(self, pools: Vec<Arc<KeyPool>>, every: Duration) {
        for pool in &pools {
            pool.share_with(Arc::new(self.clone()));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                for pool in &pools {
                    if let Err(e) = self.sync(pool).await {
                        tracing::debug!(provider = pool.provider(), error = %e, "shared key states not read");
                    }
                }
            }
        });
    }

    fn in_background(
        &self,
        work: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
    ) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if let Err(e) = work.await {
                    tracing::warn!(error = %e, "a provider key's state was not shared");
                }
            });
        }
    }
}

impl KeyStateSink for RedisKeyStates {
    fn quarantined(&self, provider: &str, fingerprint: &str, kind: &str) {
        let this = self.clone();
        let (key, fingerprint, value) = (
            self.key(provider),
            fingerprint.to_owned(),
            format!("q:{kind}"),
        );
        self.in_background(async move {
            let mut conn = this.shared.conn.clone();
            redis::pipe()
                .cmd("HSET")
                .arg(&key)
                .arg(&fingerprint)
                .arg(&value)
                .ignore()
                .cmd("EXPIRE")
                .arg(&key)
                .arg(RETENTION_SECS)
                .ignore()
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| this.shared.describe(&e))
        });
    }

    fn resting(&self, provider: &str, fingerprint: &str, until: SystemTime) {
        let this = self.clone();
        let key = self.key(provider);
        let fingerprint = fingerprint.to_owned();
        let ms = until
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        self.in_background(async move {
            let mut conn = this.shared.conn.clone();
            this.rest
                .key(&key)
                .arg(&fingerprint)
                .arg(ms)
                .arg(RETENTION_SECS)
                .invoke_async::<i64>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| this.shared.describe(&e))
        });
    }
}
