//! Rate limits shared through Redis: GCRA (the generic cell rate algorithm, as in `governor`
//! and redis-cell) evaluated by one Lua script, so N replicas together grant what one would.
//! A bucket is one key holding its theoretical arrival time, expiring when the bucket is full
//! again.

use std::time::Duration;

use redis::Script;

use crate::Shared;

/// KEYS: the bucket; ARGV: emission interval µs, burst. Returns {1, 0, remaining} when the
/// request is allowed, {0, wait µs, 0} when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then
  tat = now
end
local new_tat = tat + interval
local allow_at = new_tat - interval * burst
if now < allow_at then
  return {0, allow_at - now, 0}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, 0, math.floor((now - allow_at) / interval)}
";

/// What a bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; this many more would be allowed right now.
    Allowed {
        /// Requests left in the burst.
        remaining: u32,
    },
    /// Refused; the next request is allowed after this long.
    Refused {
        /// Time until the next request fits.
        retry_after: Duration,
    },
}

/// GCRA buckets in Redis, shared by every process with the same `redis.url` and namespace.
#[derive(Debug, Clone)]
pub struct RedisRateLimiter {
    shared: Shared,
    script: std::sync::Arc<Script>,
    pace: std::sync::Arc<Script>,
}

impl RedisRateLimiter {
    /// Limits over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisRateLimiter {
            shared,
            script: std::sync::Arc::new(Script::new(GCRA)),
            pace: std::sync::Arc::new(Script::new(PACE)),
        }
    }

    /// Counts one request in bucket `name` (`key:<id>`, `ip:<addr>`, …), which allows
    /// `per_minute` requests a minute, the whole minute's allowance as a burst, refilled evenly.
    /// An error says why Redis could not decide; the caller decides locally then.
    pub async fn check(&self, name: &str, per_minute: u32) -> Result<Verdict, String> {
        let per_minute = per_minute.max(1);
        let interval_us = 60_000_000 / u64::from(per_minute);
        let mut conn = self.shared.conn.clone();
        let (allowed, wait_us, remaining): (i64, i64, i64) = self
            .script
            .key(self.shared.key(&["rate", name]))
            .arg(interval_us.max(1))
            .arg(per_minute)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(if allowed == 1 {
            Verdict::Allowed {
                remaining: u32::try_from(remaining).unwrap_or(0),
            }
        } else {
            Verdict::Refused {
                retry_after: Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)),
            }
        })
    }
}

/// KEYS: GCRA buckets; ARGV: per bucket, emission interval µs, burst, units. Takes from every
/// bucket or from none: {1, 0} when granted, {0, wait µs} when one of them refuses.
const PACE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wait = 0
local next_tat = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local burst = tonumber(ARGV[3 * i - 1])
  local n = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then
    tat = now
  end
  local new_tat = tat + interval * n
  local allow_at = new_tat - interval * burst
  if now < allow_at and allow_at - now > wait then
    wait = allow_at - now
  end
  next_tat[i] = new_tat
end
if wait > 0 then
  return {0, wait}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', next_tat[i]), 'PX', math.ceil((next_tat[i] - now) / 1000) + 1)
end
return {1, 0}
";

/// Per-provider-key limits (requests and prompt tokens a minute) shared by every process using
/// the same keys: buckets named by the key's provider and fingerprint, never the key, in one
/// hash slot, taken together by one script.
#[async_trait::async_trait]
impl aetherflow_providers::keys::SharedPacer for RedisRateLimiter {
    async fn take(
        &self,
        name: &str,
        requests_per_minute: Option<u32>,
        tokens_per_minute: Option<u32>,
        tokens: u32,
    ) -> Result<Option<Duration>, String> {
        let mut invocation = self.pace.prepare_invoke();
        let tag = format!("{{{name}}}");
        // Requests: evenly spaced, no burst. Tokens: a minute's worth as the burst.
        for (bucket, per_minute, burst, n) in [
            ("rpm", requests_per_minute, 1, 1),
            (
                "tpm",
                tokens_per_minute,
                tokens_per_minute.unwrap_or(1),
                tokens,
            ),
        ] {
            let Some(per_minute) = per_minute else {
                continue;
            };
            let per_minute = per_minute.max(1);
            invocation
                .key(self.shared.key(&["pace", &tag, bucket]))
                .arg((60_000_000 / u64::from(per_minute)).max(1))
                .arg(burst.max(1))
                .arg(n.max(1));
        }
        let mut conn = self.shared.conn.clone();
        let (allowed, wait_us): (i64, i64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok((allowed != 1).then(|| Duration::from_micros(u64::try_from(wait_us).unwrap_or(0))))
    }
}
