//! Requests that must reach whichever process holds a run: today, cancellation. The API replica
//! that receives `POST /v1/runs/{id}/cancel` for a run executing elsewhere records the request
//! in Redis; the process executing the run checks for it every second and cancels its run.

use crate::Shared;

/// How long a cancellation request is kept (a run that never looks is over by then).
const KEEP_SECS: u64 = 24 * 3600;

/// Cross-process run signals in Redis.
#[derive(Debug, Clone)]
pub struct RedisSignals {
    shared: Shared,
}

impl RedisSignals {
    /// Signals over `shared`.
    pub fn new(shared: Shared) -> Self {
        RedisSignals { shared }
    }

    fn cancel_key(&self, run_id: &str) -> String {
        self.shared.key(&["cancel", run_id])
    }

    /// Asks whichever process runs `run_id` to cancel it.
    pub async fn request_cancel(&self, run_id: &str) -> Result<(), String> {
        let mut conn = self.shared.conn.clone();
        redis::cmd("SET")
            .arg(self.cancel_key(run_id))
            .arg(1)
            .arg("EX")
            .arg(KEEP_SECS)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.shared.describe(&e))
    }

    /// Whether cancelling `run_id` was asked for.
    pub async fn cancel_requested(&self, run_id: &str) -> Result<bool, String> {
        let mut conn = self.shared.conn.clone();
        redis::cmd("EXISTS")
            .arg(self.cancel_key(run_id))
            .query_async::<i64>(&mut conn)
            .await
            .map(|n| n > 0)
            .map_err(|e| self.shared.describe(&e))
    }
}
