//! Budgets shared through Redis: every reserve is one Lua script that reaps expired leases,
//! checks every scope's cap and reserves in all of them or none, so replicas together never pass
//! a cap. A reservation is a lease with a TTL that its holder renews while the call lasts; the
//! lease of a process that died expires and is released by the next reserve.
//!
//! Keys (all under one hash tag, so the scripts also run on a Redis Cluster):
//! - `{ns:budget}:leases`: sorted set of lease ids by expiry (milliseconds, Redis's clock);
//! - `{ns:budget}:lease-info`: hash of lease id → `amount` and the keys of its scopes;
//! - `{ns:budget}:scope:<kind>:<id>`: hash with `committed` and `reserved` micro-dollars,
//!   expiring 40 days after its last write.

use std::time::Duration;

use aetherflow_domain::Money;
use aetherflow_resilience::budget::{
    BudgetExceeded, Scope, ScopeCap, SpendStore, StoreUnavailable,
};
use redis::Script;

use crate::Shared;

/// How long a scope's spend is kept after its last write: past any day or month it could cap.
const RETENTION_SECS: u64 = 40 * 24 * 3600;

/// Reaps expired leases (at most 200 per call), then checks and reserves.
/// KEYS: leases, lease-info, scope hashes…; ARGV: lease id, amount, ttl ms, retention s, then
/// per scope its cap (-1: none) and floor.
const RESERVE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 200)
for _, id in ipairs(expired) do
  local info = redis.call('HGET', KEYS[2], id)
  if info then
    local amount = nil
    for part in string.gmatch(info, '[^\n]+') do
      if amount == nil then
        amount = tonumber(part)
      elseif redis.call('EXISTS', part) == 1 then
        if redis.call('HINCRBY', part, 'reserved', -amount) < 0 then
          redis.call('HSET', part, 'reserved', 0)
        end
      end
    end
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREM', KEYS[1], id)
end
local amount = tonumber(ARGV[2])
local n = #KEYS - 2
for i = 1, n do
  local key = KEYS[i + 2]
  local cap = tonumber(ARGV[3 + 2 * i])
  redis.call('HSETNX', key, 'committed', ARGV[4 + 2 * i])
  if cap >= 0 then
    local committed = tonumber(redis.call('HGET', key, 'committed') or '0')
    local reserved = tonumber(redis.call('HGET', key, 'reserved') or '0')
    local available = cap - committed - reserved
    if available < 0 then available = 0 end
    if amount > available then
      return {i, available}
    end
  end
end
local info = ARGV[2]
for i = 1, n do
  local key = KEYS[i + 2]
  redis.call('HINCRBY', key, 'reserved', amount)
  redis.call('EXPIRE', key, ARGV[4])
  info = info .. '\n' .. key
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], info)
return {0, 0}
";

/// KEYS: leases; ARGV: lease id, ttl ms. 1 when the lease was extended, 0 when it is gone.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
";

/// Ends a lease: releases what it still holds (nothing if it was reaped) and adds the real cost.
/// KEYS: leases, lease-info, scope hashes…; ARGV: lease id, actual, retention s.
/// Returns committed before and after, per scope.
const SETTLE: &str = r"
local info = redis.call('HGET', KEYS[2], ARGV[1])
local amount = 0
if info then
  amount = tonumber(string.match(info, '^[^\n]+'))
  redis.call('HDEL', KEYS[2], ARGV[1])
end
redis.call('ZREM', KEYS[1], ARGV[1])
local actual = tonumber(ARGV[2])
local out = {}
for i = 3, #KEYS do
  local key = KEYS[i]
  if amount > 0 and redis.call('HINCRBY', key, 'reserved', -amount) < 0 then
    redis.call('HSET', key, 'reserved', 0)
  end
  local after = redis.call('HINCRBY', key, 'committed', actual)
  redis.call('EXPIRE', key, ARGV[3])
  table.insert(out, after - actual)
  table.insert(out, after)
end
return out
";

/// Spend kept in Redis, shared by every process with the same `redis.url` and namespace.
#[derive(Debug, Clone)]
pub struct RedisSpend {
    shared: Shared,
    reserve: std::sync::Arc<Script>,
    renew: std::sync::Arc<Script>,
    settle: std::sync::Arc<Script>,
}

impl RedisSpend {
    /// Budgets over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisSpend {
            shared,
            reserve: std::sync::Arc::new(Script::new(RESERVE)),
            renew: std::sync::Arc::new(Script::new(RENEW)),
            settle: std::sync::Arc::new(Script::new(SETTLE)),
        }
    }

    fn base(&self) -> String {
        format!("{{{}:budget}}", self.shared.namespace)
    }

    fn leases(&self) -> String {
        format!("{}:leases", self.base())
    }

    fn info(&self) -> String {
        format!("{}:lease-info", self.base())
    }

    /// The hash key of `scope`.
    pub fn scope_key(&self, scope: &Scope) -> String {
        let (kind, id) = match scope {
            Scope::Run(id) => ("run", id),
            Scope::ApiKey(id) => ("key", id),
            Scope::Day(d) => ("day", d),
            Scope::Month(m) => ("month", m),
        };
        format!("{}:scope:{kind}:{id}", self.base())
    }

    fn unavailable(&self, e: &redis::RedisError) -> StoreUnavailable {
        StoreUnavailable(self.shared.describe(e))
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.shared.lease.as_millis()).unwrap_or(u64::MAX)
    }
}

fn micros(m: Money) -> i64 {
    i64::try_from(m.as_micros()).unwrap_or(i64::MAX)
}

fn money(v: i64) -> Money {
    Money::from_micros(u64::try_from(v).unwrap_or(0))
}

#[async_trait::async_trait]
impl SpendStore for RedisSpend {
    async fn reserve(
        &self,
        lease: &str,
        scopes: &[ScopeCap],
        amount: Money,
    ) -> Result<Result<(), BudgetExceeded>, StoreUnavailable> {
        let mut invocation = self.reserve.prepare_invoke();
        invocation.key(self.leases()).key(self.info());
        for s in scopes {
            invocation.key(self.scope_key(&s.scope));
        }
        invocation
            .arg(lease)
            .arg(micros(amount))
            .arg(self.ttl_ms())
            .arg(RETENTION_SECS);
        for s in scopes {
            invocation
                .arg(s.cap.map_or(-1, micros))
                .arg(micros(s.floor));
        }
        let mut conn = self.shared.conn.clone();
        let (refused, available): (i64, i64) = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        if refused == 0 {
            return Ok(Ok(()));
        }
        let index = usize::try_from(refused - 1).unwrap_or(0);
        let Some(s) = scopes.get(index) else {
            return Err(StoreUnavailable(format!(
                "Redis at {} answered a reserve with an unknown scope index {refused}",
                self.shared.url
            )));
        };
        Ok(Err(BudgetExceeded {
            scope: s.scope.clone(),
            cap: s.cap.unwrap_or(Money::ZERO),
            available: money(available),
            requested: amount,
        }))
    }

    async fn renew(&self, lease: &str) -> Result<bool, StoreUnavailable> {
        let mut conn = self.shared.conn.clone();
        let changed: i64 = self
            .renew
            .key(self.leases())
            .arg(lease)
            .arg(self.ttl_ms())
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(changed == 1)
    }

    fn renew_every(&self) -> Duration {
        self.shared.lease / 3
    }

    async fn settle(
        &self,
        lease: &str,
        scopes: &[Scope],
        actual: Money,
    ) -> Result<Vec<(Money, Money)>, StoreUnavailable> {
        let mut invocation = self.settle.prepare_invoke();
        invocation.key(self.leases()).key(self.info());
        for s in scopes {
            invocation.key(self.scope_key(s));
        }
        invocation
            .arg(lease)
            .arg(micros(actual))
            .arg(RETENTION_SECS);
        let mut conn = self.shared.conn.clone();
        let flat: Vec<i64> = invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok(flat
            .chunks_exact(2)
            .map(|p| (money(p[0]), money(p[1])))
            .collect())
    }

    async fn spend(&self, scope: &Scope) -> Result<(Money, Money), StoreUnavailable> {
        let mut conn = self.shared.conn.clone();
        let (committed, reserved): (Option<i64>, Option<i64>) = redis::cmd("HMGET")
            .arg(self.scope_key(scope))
            .arg("committed")
            .arg("reserved")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.unavailable(&e))?;
        Ok((money(committed.unwrap_or(0)), money(reserved.unwrap_or(0))))
    }

    async fn forget(&self, scope: &Scope) -> Result<(), StoreUnavailable> {
        let mut conn = self.shared.conn.clone();
        redis::cmd("DEL")
            .arg(self.scope_key(scope))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.unavailable(&e))
    }
}
