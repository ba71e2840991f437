//! Progress events of runs, per run on a Redis stream, so `GET /v1/runs/{id}/events` on any
//! replica follows a run that executes in another process (a worker, another replica) as it
//! happens. The store keeps every event too: a client resuming with `Last-Event-ID` reads what
//! it missed from the store, then follows the stream from there.
//!
//! Entry ids are the events' own sequence numbers (`<seq>-0`), so "after event 41" is simply
//! `XREAD … 41-0`. The end of a run is one last entry carrying its final status. Streams are
//! trimmed to [`MAX_EVENTS`] and expire a day after their last event.

use redis::streams::StreamReadReply;

use crate::Shared;

/// Events kept per run on the stream (older ones are still in the store).
pub const MAX_EVENTS: u64 = 10_000;
/// How long a run's stream outlives its last event.
const KEEP_SECS: i64 = 24 * 3600;

/// What a follower reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Event `seq` (JSON).
    Event(u64, String),
    /// The run ended with this status.
    End(String),
}

/// Run events on Redis streams.
#[derive(Debug, Clone)]
pub struct RedisEvents {
    shared: Shared,
}

impl RedisEvents {
    /// Events over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisEvents { shared }
    }

    fn key(&self, run_id: &str) -> String {
        self.shared.key(&["events", run_id])
    }

    /// Publishes event `seq` of `run_id`. An event numbered at or below one already published
    /// (a replay) is refused by Redis and reported as an error.
    pub async fn publish(&self, run_id: &str, seq: u64, json: &str) -> Result<(), String> {
        self.append(run_id, &format!("{seq}-0"), "e", json).await
    }

    /// Marks the end of `run_id` with its final `status` (an id Redis picks: its time, after
    /// every sequence number).
    pub async fn finish(&self, run_id: &str, status: &str) -> Result<(), String> {
        self.append(run_id, "*", "end", status).await
    }

    /// Adds entry `id` (`field` = `value`) to the run's stream, trimmed, and renews its expiry.
    async fn append(&self, run_id: &str, id: &str, field: &str, value: &str) -> Result<(), String> {
        let key = self.key(run_id);
        let mut conn = self.shared.conn.clone();
        redis::pipe()
            .cmd("XADD")
            .arg(&key)
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_EVENTS)
            .arg(id)
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(KEEP_SECS)
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))
    }

    /// What was published for `run_id` after event `after` (at most 500 entries, oldest first).
    /// Does not wait: an empty answer means nothing new yet.
    pub async fn read_after(&self, run_id: &str, after: u64) -> Result<Vec<Published>, String> {
        let mut conn = self.shared.conn.clone();
        let reply: Option<StreamReadReply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(500)
            .arg("STREAMS")
            .arg(self.key(run_id))
            .arg(format!("{after}-0"))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))?;
        let mut out = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            for entry in stream.ids {
                if let Some(status) = entry.get::<String>("end") {
                    out.push(Published::End(status));
                } else if let (Some(json), Some(seq)) = (
                    entry.get::<String>("e"),
                    entry
                        .id
                        .split_once('-')
                        .and_then(|(ms, _)| ms.parse::<u64>().ok()),
                ) {
                    out.push(Published::Event(seq, json));
                }
            }
        }
        Ok(out)
    }
}
