//! Circuit breakers shared through Redis: one hash per (provider, model) holds the state, the
//! consecutive-failure count and the rolling window in twenty buckets, and two Lua scripts
//! admit calls and record outcomes atomically. A breaker opened by failures one replica saw is
//! open for all; while half-open, the probe slots are counted across all replicas, and a probe
//! whose process died frees its slot after `cooldown_ms`.

use std::time::Duration;

use aetherflow_resilience::breaker::{Admission, BreakerPolicy, BreakerStore, Outcome};
use redis::Script;

use crate::Shared;

/// KEYS: the breaker hash; ARGV: half-open probes, probe lease ms.
/// Returns {0, wait ms} when open, {1, 0} to call, {2, 0} for a probe.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  local reopen = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
  if reopen > now then
    return {0, reopen - now}
  end
  state = 'half_open'
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'probes', 0, 'probe_deadline', 0)
end
if state == 'half_open' then
  local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
  local deadline = tonumber(redis.call('HGET', KEYS[1], 'probe_deadline') or '0')
  if deadline <= now then
    probes = 0
  end
  if probes >= tonumber(ARGV[1]) then
    return {0, 0}
  end
  redis.call('HSET', KEYS[1], 'probes', probes + 1, 'probe_deadline', now + tonumber(ARGV[2]))
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[2]) + 60000)
  return {2, 0}
end
return {1, 0}
";

/// KEYS: the breaker hash; ARGV: outcome (1 failure, 0 success, -1 neutral), probe (1/0),
/// consecutive failures, failure rate, min calls, window ms, cooldown ms.
/// Returns 1 when this outcome opened the breaker.
const RECORD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local outcome = tonumber(ARGV[1])
local window = tonumber(ARGV[6])
local cooldown = tonumber(ARGV[7])
local function open()
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'open', 'open_until', now + cooldown)
  redis.call('PEXPIRE', KEYS[1], 2 * cooldown + window + 60000)
  return 1
end
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[2] == '1' then
  if state ~= 'half_open' then
    return 0
  end
  local probes = tonumber(redis.call('HGET', KEYS[1], 'probes') or '0')
  if probes > 0 then
    redis.call('HSET', KEYS[1], 'probes', probes - 1)
  end
  if outcome == 1 then
    return open()
  elseif outcome == 0 then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if state ~= 'closed' or outcome < 0 then
  return 0
end
local bucket_ms = math.max(1, math.floor(window / 20))
local bucket = math.floor(now / bucket_ms)
redis.call('HINCRBY', KEYS[1], 'c:' .. bucket, 1)
if outcome == 1 then
  redis.call('HINCRBY', KEYS[1], 'f:' .. bucket, 1)
end
local calls, failures = 0, 0
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local name = fields[i]
  local kind, b = string.match(name, '^([cf]):(%d+)$')
  if kind then
    if (tonumber(b) + 1) * bucket_ms + window <= now then
      redis.call('HDEL', KEYS[1], name)
    elseif kind == 'c' then
      calls = calls + tonumber(fields[i + 1])
    else
      failures = failures + tonumber(fields[i + 1])
    end
  end
end
local consecutive = 0
if outcome == 1 then
  consecutive = redis.call('HINCRBY', KEYS[1], 'consecutive', 1)
else
  redis.call('HSET', KEYS[1], 'consecutive', 0)
end
redis.call('PEXPIRE', KEYS[1], window + cooldown + 60000)
if consecutive >= tonumber(ARGV[3]) then
  return open()
end
if outcome == 1 and calls >= tonumber(ARGV[5]) and failures / calls >= tonumber(ARGV[4]) then
  return open()
end
return 0
";

/// Breaker state kept in Redis, shared by every process with the same `redis.url` and namespace.
#[derive(Debug, Clone)]
pub struct RedisBreakers {
    shared: Shared,
    admit: std::sync::Arc<Script>,
    record: std::sync::Arc<Script>,
}

impl RedisBreakers {
    /// Breakers over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisBreakers {
            shared,
            admit: std::sync::Arc::new(Script::new(ADMIT)),
            record: std::sync::Arc::new(Script::new(RECORD)),
        }
    }

    fn key(&self, provider: &str, model: &str) -> String {
        self.shared.key(&["breaker", provider, model])
    }
}

#[async_trait::async_trait]
impl BreakerStore for RedisBreakers {
    async fn admit(
        &self,
        provider: &str,
        model: &str,
        policy: &BreakerPolicy,
    ) -> Result<Admission, String> {
        let mut conn = self.shared.conn.clone();
        let (verdict, wait_ms): (i64, i64) = self
            .admit
            .key(self.key(provider, model))
            .arg(policy.half_open_probes)
            .arg(policy.cooldown_ms.max(1_000))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(match verdict {
            1 => Admission::Call,
            2 => Admission::Probe,
            _ => Admission::Open(Duration::from_millis(u64::try_from(wait_ms).unwrap_or(0))),
        })
    }

    async fn record(
        &self,
        provider: &str,
        model: &str,
        probe: bool,
        outcome: Outcome,
        policy: &BreakerPolicy,
    ) -> Result<(), String> {
        let mut conn = self.shared.conn.clone();
        let code: i64 = match outcome {
            Outcome::Failure => 1,
            Outcome::Success => 0,
            Outcome::Neutral => -1,
        };
        let opened: i64 = self
            .record
            .key(self.key(provider, model))
            .arg(code)
            .arg(u8::from(probe))
            .arg(policy.consecutive_failures)
            .arg(policy.failure_rate)
            .arg(policy.min_calls)
            .arg(policy.window_ms)
            .arg(policy.cooldown_ms)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        if opened == 1 {
            tracing::warn!(
                provider,
                model,
                "circuit opened (shared: every replica now skips it)"
            );
        }
        Ok(())
    }
}
