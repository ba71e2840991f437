//! The shared layer of the response cache: answers kept in Redis, compressed, behind each
//! process's in-memory (moka) layer, so a deterministic request answered by one replica is a hit
//! on every replica. Bounded in time (a TTL per entry), in size (entries over
//! [`MAX_ENTRY_BYTES`] compressed are not shared) and in number (an index by insertion time,
//! trimmed to `max_entries` in the same script that adds an entry). Keys are the SHA-256 of the
//! request (see `aetherflow_orchestrator::cache`), never its text.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use redis::Script;

use crate::Shared;

/// The largest compressed answer shared; bigger ones stay in their process's layer.
pub const MAX_ENTRY_BYTES: usize = 256 * 1024;

/// KEYS: entry, index; ARGV: value, ttl ms, max entries, index member (the entry key).
/// Adds the entry and evicts the oldest past the bound.
const PUT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[4])
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do
    redis.call('DEL', old[i])
  end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
";

/// Answers shared through Redis.
#[derive(Debug, Clone)]
pub struct RedisCache {
    shared: Shared,
    ttl: Duration,
    max_entries: u64,
    put: Arc<Script>,
}

impl RedisCache {
    /// A cache over `shared` keeping at most `max_entries` answers for `ttl` each.
    pub fn new(shared: Shared, ttl: Duration, max_entries: u64) -> Self {
        RedisCache {
            shared,
            ttl,
            max_entries: max_entries.max(1),
            put: Arc::new(Script::new(PUT)),
        }
    }

    fn entry_key(&self, key: &[u8; 32]) -> String {
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        // One hash tag for the entries and their index, so the script runs on a cluster too.
        format!("{{{}:cache}}:{hex}", self.shared.namespace)
    }

    fn index_key(&self) -> String {
        format!("{{{}:cache}}:index", self.shared.namespace)
    }

    /// The answer kept under `key` (its JSON), if any. Errors say why Redis could not answer;
    /// callers treat them as a miss.
    pub async fn get(&self, key: &[u8; 32]) -> Result<Option<Vec<u8>>, String> {
        let mut conn = self.shared.conn.clone();
        let stored: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.entry_key(key))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        let Some(compressed) = stored else {
            return Ok(None);
        };
        let mut json = Vec::new();
        flate2::read::DeflateDecoder::new(compressed.as_slice())
            .take(16 * 1024 * 1024)
            .read_to_end(&mut json)
            .map_err(|e| format!("a cached answer could not be decompressed: {e}"))?;
        Ok(Some(json))
    }

    /// Keeps `json` (an answer) under `key`, compressed; false when it was too large to share.
    pub async fn put(&self, key: &[u8; 32], json: &[u8]) -> Result<bool, String> {
        let mut encoder =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder
            .write_all(json)
            .map_err(|e| format!("an answer could not be compressed: {e}"))?;
        let compressed = encoder
            .finish()
            .map_err(|e| format!("an answer could not be compressed: {e}"))?;
        if compressed.len() > MAX_ENTRY_BYTES {
            return Ok(false);
        }
        let entry = self.entry_key(key);
        let mut conn = self.shared.conn.clone();
        let _: i64 = self
            .put
            .key(&entry)
            .key(self.index_key())
            .arg(compressed)
            .arg(
                u64::try_from(self.ttl.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            )
            .arg(self.max_entries)
            .arg(&entry)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        Ok(true)
    }
}
