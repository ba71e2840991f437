//! A job queue on a Redis stream with a consumer group: at-least-once delivery to any number of
//! workers. A worker that dies holding a job (SIGKILL, lost node) stops renewing it; once the
//! job has been idle for the visibility timeout, the next worker to ask reclaims it
//! (`XAUTOCLAIM`) with its delivery count raised, so the caller can tell a retry from a first
//! try and give up on a job that keeps killing its workers. A worker that stops cleanly hands
//! its job back at once. The queue is bounded: submissions past `max_len` are refused, never
//! queued without limit.
//!
//! Every operation is one Lua script or one command, so two workers never get the same job at
//! the same time. Payloads are opaque text (the caller's JSON).

use std::time::Duration;

use redis::Script;

use crate::Shared;

/// KEYS: stream; ARGV: max length, payload. The new entry's id, or false when full.
const ENQUEUE: &str = r"
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
";

/// KEYS: stream; ARGV: group, consumer, visibility ms.
/// {id, payload, deliveries} of a reclaimed or new job, or false when there is none.
const CLAIM: &str = r"
local function payload_of(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'job' then return fields[i + 1] end
  end
  return ''
end
local function deliveries(id)
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] then return p[1][4] end
  return 1
end
-- Each XAUTOCLAIM call looks at no more than 10 pending entries: follow its cursor (bounded), so
-- a dead worker's job is found behind many held by live workers.
local cursor = '0-0'
for _ = 1, 100 do
  local reclaimed = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], cursor, 'COUNT', 1)
  for _, entry in ipairs(reclaimed[2]) do
    if entry and entry[2] then
      return {entry[1], payload_of(entry[2]), deliveries(entry[1])}
    end
  end
  -- Entries deleted while pending come back as ids only (Redis 7); drop them from the group.
  if reclaimed[3] then
    for _, id in ipairs(reclaimed[3]) do
      redis.call('XACK', KEYS[1], ARGV[1], id)
    end
  end
  cursor = reclaimed[1]
  if cursor == '0-0' then break end
end
local fresh = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[1], '>')
if fresh and fresh[1] and fresh[1][2][1] then
  local entry = fresh[1][2][1]
  return {entry[1], payload_of(entry[2]), 1}
end
return false
";

/// KEYS: stream; ARGV: group, consumer, id, action, payload. Acts on a job only while `consumer`
/// holds it (another worker may have reclaimed it): `touch` resets its idle time, `ack` removes
/// it (finished), `hand_back` puts it back for another worker now. 1 when done, 0 when the job
/// is not this consumer's (or is gone).
const AS_HOLDER: &str = r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if not p[1] or p[1][2] ~= ARGV[2] then
  return 0
end
if ARGV[4] == 'touch' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
  return 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
if ARGV[4] == 'hand_back' then
  redis.call('XADD', KEYS[1], '*', 'job', ARGV[5])
end
return 1
";

/// A job handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stream entry's id.
    pub id: String,
    /// What was submitted.
    pub payload: String,
    /// 1 the first time; more when a worker died holding it (or it was reclaimed).
    pub deliveries: u64,
}

/// What a submission became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Queued, with its stream id.
    Accepted(String),
    /// The queue holds `max_len` jobs already.
    Full,
}

/// A bounded job queue shared by every process with the same `redis.url` and namespace.
#[derive(Debug, Clone)]
pub struct RedisQueue {
    shared: Shared,
    key: String,
    group: String,
    max_len: u64,
    visibility: Duration,
    enqueue: std::sync::Arc<Script>,
    claim: std::sync::Arc<Script>,
    as_holder: std::sync::Arc<Script>,
}

impl RedisQueue {
    /// The queue `name` over `shared`, holding at most `max_len` jobs; a job held by a worker
    /// that has not renewed it for `visibility` goes to the next worker that asks.
    pub fn new(shared: Shared, name: &str, max_len: u64, visibility: Duration) -> Self {
        RedisQueue {
            key: shared.key(&["queue", name]),
            group: "workers".into(),
            shared,
            max_len,
            visibility,
            enqueue: std::sync::Arc::new(Script::new(ENQUEUE)),
            claim: std::sync::Arc::new(Script::new(CLAIM)),
            as_holder: std::sync::Arc::new(Script::new(AS_HOLDER)),
        }
    }

    /// Jobs the queue holds at most.
    pub fn max_len(&self) -> u64 {
        self.max_len
    }

    /// How long a job may go unrenewed before another worker takes it.
    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// Creates the stream and its consumer group when missing (every worker and API process
    /// calls this at start; it is idempotent).
    pub async fn ensure_group(&self) -> Result<(), String> {
        let mut conn = self.shared.conn.clone();
        let made: redis::RedisResult<String> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.key)
            .arg(&self.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match made {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.shared.describe(&e)),
        }
    }

    /// Submits `payload`, unless the queue is full.
    pub async fn enqueue(&self, payload: &str) -> Result<Enqueued, String> {
        let mut conn = self.shared.conn.clone();
        let id: Option<String> = self
            .enqueue
            .key(&self.key)
            .arg(self.max_len)
            .arg(payload)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(id.map_or(Enqueued::Full, Enqueued::Accepted))
    }

    /// The next job for `consumer` (a worker's unique name): one whose worker went silent for
    /// the visibility timeout first, else a new one; `None` when there is none now.
    pub async fn claim(&self, consumer: &str) -> Result<Option<Delivery>, String> {
        let mut conn = self.shared.conn.clone();
        let got: Option<(String, String, u64)> = self
            .claim
            .key(&self.key)
            .arg(&self.group)
            .arg(consumer)
            .arg(u64::try_from(self.visibility.as_millis()).unwrap_or(u64::MAX))
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(got.map(|(id, payload, deliveries)| Delivery {
            id,
            payload,
            deliveries,
        }))
    }

    /// Tells the queue `consumer` is still working on `job` (resets its idle time); false when
    /// the job is no longer this consumer's (another worker reclaimed it).
    pub async fn touch(&self, consumer: &str, job: &Delivery) -> Result<bool, String> {
        self.as_holder("touch", consumer, job).await
    }

    /// Removes a finished job `consumer` holds; false when it is no longer this consumer's
    /// (another worker took it over: that one acknowledges it).
    pub async fn ack(&self, consumer: &str, job: &Delivery) -> Result<bool, String> {
        self.as_holder("ack", consumer, job).await
    }

    /// Gives a job `consumer` holds back for another worker at once (a clean shutdown); false
    /// when it is no longer this consumer's.
    pub async fn hand_back(&self, consumer: &str, job: &Delivery) -> Result<bool, String> {
        self.as_holder("hand_back", consumer, job).await
    }

    async fn as_holder(
        &self,
        action: &str,
        consumer: &str,
        job: &Delivery,
    ) -> Result<bool, String> {
        let mut conn = self.shared.conn.clone();
        let done: i64 = self
            .as_holder
            .key(&self.key)
            .arg(&self.group)
            .arg(consumer)
            .arg(&job.id)
            .arg(action)
            // The payload travels only when it is put back.
            .arg(if action == "hand_back" {
                job.payload.as_str()
            } else {
                ""
            })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(done == 1)
    }

    /// Every job's payload, queued or held (at most `max_len` and a margin), oldest first.
    pub async fn payloads(&self) -> Result<Vec<String>, String> {
        let mut conn = self.shared.conn.clone();
        let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(&self.key)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(self.max_len.saturating_add(100))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(entries
            .ids
            .into_iter()
            .filter_map(|entry| entry.get::<String>("job"))
            .collect())
    }

    /// Whether no job is queued or held.
    pub async fn is_empty(&self) -> Result<bool, String> {
        Ok(self.len().await? == 0)
    }

    /// Jobs queued or held by workers.
    pub async fn len(&self) -> Result<u64, String> {
        let mut conn = self.shared.conn.clone();
        redis::cmd("XLEN")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))
    }
}
