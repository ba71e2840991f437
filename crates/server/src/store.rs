//! Persistence behind a trait: API keys (hashed), runs with their reports, each run's event
//! stream, and an audit trail. [`SqliteStore`] is the embedded default (one file, WAL journal);
//! a networked backend implements [`Store`] the same way.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::keys::{self, Scopes};

/// The store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed an operation.
    #[error("the store failed: {0}")]
    Database(#[from] rusqlite::Error),
    /// A stored value could not be read back.
    #[error("the store holds a value it cannot read: {0}")]
    Corrupt(String),
    /// A blocking task stopped.
    #[error("a store task stopped: {0}")]
    Task(String),
    /// No randomness for a new key.
    #[error(transparent)]
    Random(#[from] keys::RandomError),
    /// The networked store (PostgreSQL) failed or could not be reached.
    #[error("the store failed: {0}")]
    Backend(String),
}

/// An API key as listed: never the key or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The public id.
    pub id: String,
    /// A name for people.
    pub name: String,
    /// What it may do.
    pub scopes: Scopes,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for a worker.
    Queued,
    /// A worker runs it.
    Running,
    /// Every pass succeeded.
    Succeeded,
    /// A step or pass failed.
    Failed,
    /// Cancelled by a request or a shutdown.
    Cancelled,
    /// The server stopped while it ran; what it finished is kept.
    Interrupted,
}

impl RunState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Queued => "queued",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::Interrupted => "interrupted",
        }
    }

    /// Reads a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            RunState::Queued,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Queued | RunState::Running)
    }
}

/// A run submitted through the API (one plan, one workflow: one or more orchestrator runs).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RunRecord {
    /// The API's id for it.
    pub id: String,
    /// The key that submitted it.
    pub key_id: Option<String>,
    /// The plan's task.
    pub task_id: String,
    /// Where it stands.
    pub status: RunState,
    /// `direct`, `proto` or `prod`.
    pub workflow: String,
    /// `fast`, `build` or `double-check`.
    pub mode: String,
    /// When it was submitted.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The report of each pass made so far (`report.json` objects).
    #[schema(value_type = Vec<Object>)]
    pub reports: Vec<serde_json::Value>,
    /// Why it could not run at all, when it could not.
    pub error: Option<String>,
}

/// Which runs to list.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs in this state.
    pub status: Option<RunState>,
    /// Only runs submitted by this key (`None`: any).
    pub key_id: Option<String>,
    /// Runs created strictly before this id (ids sort by time): the page cursor.
    pub before: Option<String>,
    /// At most this many.
    pub limit: usize,
}

/// Persistence for the API.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks the store answers (for `/ready`).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Creates a key; the full key is returned once and never stored.
    async fn create_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> Result<(KeyInfo, String), StoreError>;
    /// Every key, newest first.
    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError>;
    /// Revokes a key; false if there is no such (unrevoked) key.
    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError>;
    /// The scopes of the key `presented`, if it is a valid, unrevoked key.
    async fn authenticate(&self, presented: &str) -> Result<Option<(String, Scopes)>, StoreError>;
    /// Records a new run.
    async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// Rewrites a run's state, reports and error — unless it has ended (succeeded, failed or
    /// cancelled), which is never undone: a late write from a process that lost the run (a
    /// stalled worker whose job was taken over) changes nothing.
    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError>;
    /// One run.
    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError>;
    /// Runs, newest first.
    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError>;
    /// Appends event `seq` of a run.
    async fn append_event(&self, run_id: &str, seq: u64, event: &str) -> Result<(), StoreError>;
    /// A run's events after `after` (exclusive), in order.
    async fn events_after(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// What runs of `key_id` created at or after `since` have spent (micro-dollars).
    async fn key_spend_since(&self, key_id: &str, since: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Records what a call outside any run (a design analysis, a chat completion) cost a key,
    /// so its daily cap holds across restarts.
    async fn record_key_spend(
        &self,
        key_id: &str,
        label: &str,
        micros: u64,
    ) -> Result<(), StoreError>;
    /// The highest event sequence number of a run (0: none yet), so a process taking a run over
    /// numbers its events after the ones already there.
    async fn last_event_seq(&self, run_id: &str) -> Result<u64, StoreError>;
    /// Records that step `step_id` of pass `pass` of a run finished, as `finished` (JSON). The
    /// first record wins: a later one for the same step (a process that lost the run and had
    /// not noticed yet) is ignored.
    async fn record_step(
        &self,
        run_id: &str,
        pass: u32,
        step_id: &str,
        finished: &str,
    ) -> Result<(), StoreError>;
    /// The steps of a run recorded as finished: `(pass, step id, JSON)`, in no set order.
    async fn finished_steps(&self, run_id: &str) -> Result<Vec<(u32, String, String)>, StoreError>;
    /// Marks runs left queued or running by a previous process as interrupted; how many.
    async fn interrupt_unfinished(&self) -> Result<usize, StoreError>;
    /// Runs still queued or running whose owner has not shown a sign of life for `stale_after`
    /// (at most 1000, oldest first): candidates for a queue worker's sweep of runs lost before
    /// they reached the queue. A store without owners (SQLite: one process per file) has none.
    async fn unfinished_and_unowned(
        &self,
        _stale_after: std::time::Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        Ok(Vec::new())
    }
    /// Appends to the audit trail.
    async fn audit(
        &self,
        key_id: Option<&str>,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError>;
}

/// The embedded SQLite store.
#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Keys recently verified (a key revoked by another process, `aetherflow-api keys revoke`,
    /// stops working within [`AUTH_CACHE_TTL`]).
    verified: AuthCache,
}

/// How long a verified key is trusted without asking the database again.
pub const AUTH_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Keys recently verified, by the SHA-256 of the presented key, shared by every store: a request
/// with a known key skips the database. Only valid keys are remembered (guesses cannot fill it);
/// entries live [`AUTH_CACHE_TTL`], so a revocation by another process takes effect within that
/// time, and at once in this one ([`AuthCache::forget_all`]).
#[derive(Clone)]
pub(crate) struct AuthCache {
    verified: moka::sync::Cache<[u8; 32], (String, Scopes)>,
}

impl AuthCache {
    pub(crate) fn new() -> Self {
        AuthCache {
            verified: moka::sync::Cache::builder()
                .max_capacity(10_000)
                .time_to_live(AUTH_CACHE_TTL)
                .build(),
        }
    }

    /// Verifies `presented`: from the cache, else through `lookup` (the stored hash and scopes of
    /// a key id, if unrevoked). Malformed keys never reach the database.
    pub(crate) async fn authenticate<F, Fut>(
        &self,
        presented: &str,
        lookup: F,
    ) -> Result<Option<(String, Scopes)>, StoreError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<Option<(String, String)>, StoreError>>,
    {
        let Some((id, secret)) = keys::parse(presented) else {
            return Ok(None);
        };
        use sha2::Digest as _;
        let fingerprint: [u8; 32] = sha2::Sha256::digest(presented.as_bytes()).into();
        if let Some(known) = self.verified.get(&fingerprint) {
            return Ok(Some(known));
        }
        let found = match lookup(id.to_owned()).await? {
            Some((hash, scopes)) if keys::verify(secret, &hash) => Some((
                id.to_owned(),
                Scopes::parse_list(&scopes).map_err(StoreError::Corrupt)?,
            )),
            _ => None,
        };
        if let Some(known) = &found {
            self.verified.insert(fingerprint, known.clone());
        }
        Ok(found)
    }

    /// Forgets every verified key (a revocation in this process).
    pub(crate) fn forget_all(&self) {
        self.verified.invalidate_all();
    }
}

/// A new key named `name` with `scopes`: what is listed, the hash to store, and the key itself
/// (shown once, never stored).
pub(crate) fn new_key(
    name: &str,
    scopes: &Scopes,
) -> Result<(KeyInfo, String, String), StoreError> {
    let new = keys::generate()?;
    let info = KeyInfo {
        id: new.id,
        name: name.to_owned(),
        scopes: scopes.clone(),
        created_at: Utc::now(),
        revoked_at: None,
    };
    Ok((info, new.hash, new.key))
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, scopes TEXT NOT NULL,
    created_at TEXT NOT NULL, revoked_at TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, key_id TEXT, task_id TEXT NOT NULL, status TEXT NOT NULL,
    workflow TEXT NOT NULL, mode TEXT NOT NULL, created_at TEXT NOT NULL, finished_at TEXT,
    reports TEXT NOT NULL, error TEXT);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, id);
CREATE TABLE IF NOT EXISTS run_events (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq));
CREATE TABLE IF NOT EXISTS run_steps (
    run_id TEXT NOT NULL, pass INTEGER NOT NULL, step_id TEXT NOT NULL, finished TEXT NOT NULL,
    PRIMARY KEY (run_id, pass, step_id));
CREATE TABLE IF NOT EXISTS audit (
    at TEXT NOT NULL, key_id TEXT, action TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS key_spend (
    at TEXT NOT NULL, key_id TEXT NOT NULL, label TEXT NOT NULL, micros INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS key_spend_key ON key_spend (key_id, at);
";

impl SqliteStore {
    /// Opens (creating when needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Corrupt(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            verified: AuthCache::new(),
        })
    }

    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let guard = conn
                .lock()
                .map_err(|_| StoreError::Task("the store's lock was poisoned".into()))?;
            f(&guard)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

fn time(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Corrupt(format!("time `{text}`: {e}")))
}

fn key_info(
    row: &rusqlite::Row<'_>,
) -> rusqlite::Result<(String, String, String, String, Option<String>)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
    ))
}

fn to_key_info(
    (id, name, scopes, created, revoked): (String, String, String, String, Option<String>),
) -> Result<KeyInfo, StoreError> {
    Ok(KeyInfo {
        id,
        name,
        scopes: Scopes::parse_list(&scopes).map_err(StoreError::Corrupt)?,
        created_at: time(&created)?,
        revoked_at: revoked.as_deref().map(time).transpose()?,
    })
}

type RunRow = (
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
);

const RUN_COLUMNS: &str =
    "id, key_id, task_id, status, workflow, mode, created_at, finished_at, reports, error";

fn run_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
    ))
}

fn to_run(r: RunRow) -> Result<RunRecord, StoreError> {
    Ok(RunRecord {
        id: r.0,
        key_id: r.1,
        task_id: r.2,
        status: RunState::parse(&r.3)
            .ok_or_else(|| StoreError::Corrupt(format!("status `{}`", r.3)))?,
        workflow: r.4,
        mode: r.5,
        created_at: time(&r.6)?,
        finished_at: r.7.as_deref().map(time).transpose()?,
        reports: serde_json::from_str(&r.8).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        error: r.9,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> Result<(KeyInfo, String), StoreError> {
        let (info, hash, key) = new_key(name, scopes)?;
        let row = (
            info.id.clone(),
            info.name.clone(),
            hash,
            scopes.to_list(),
            info.created_at.to_rfc3339(),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![row.0, row.1, row.2, row.3, row.4],
            )?;
            Ok(())
        })
        .await?;
        Ok((info, key))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        self.call(|c| {
            let mut stmt = c.prepare(
                "SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC",
            )?;
            let rows = stmt.query_map([], key_info)?.collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(to_key_info).collect()
        })
        .await
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        // In this process, at once.
        self.verified.forget_all();
        let id = id.to_owned();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![Utc::now().to_rfc3339(), id],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn authenticate(&self, presented: &str) -> Result<Option<(String, Scopes)>, StoreError> {
        self.verified
            .authenticate(presented, |id| {
                self.call(move |c| {
                    Ok(c.query_row(
                        "SELECT hash, scopes FROM api_keys WHERE id = ?1 AND revoked_at IS NULL",
                        params![id],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()?)
                })
            })
            .await
    }

    async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |c| {
            c.execute(
                &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
                params![
                    run.id,
                    run.key_id,
                    run.task_id,
                    run.status.as_str(),
                    run.workflow,
                    run.mode,
                    run.created_at.to_rfc3339(),
                    run.finished_at.map(|t| t.to_rfc3339()),
                    serde_json::to_string(&run.reports).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    run.error,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        let run = run.clone();
        self.call(move |c| {
            c.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, reports = ?4, error = ?5
                 WHERE id = ?1 AND status NOT IN ('succeeded', 'failed', 'cancelled')",
                params![
                    run.id,
                    run.status.as_str(),
                    run.finished_at.map(|t| t.to_rfc3339()),
                    serde_json::to_string(&run.reports)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    run.error,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let id = id.to_owned();
        self.call(move |c| {
            c.query_row(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                params![id],
                run_row,
            )
            .optional()?
            .map(to_run)
            .transpose()
        })
        .await
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let filter = filter.clone();
        self.call(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs
                 WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR key_id = ?2)
                   AND (?3 IS NULL OR id < ?3)
                 ORDER BY id DESC LIMIT ?4"
            ))?;
            let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
            let rows = stmt
                .query_map(
                    params![
                        filter.status.map(RunState::as_str),
                        filter.key_id,
                        filter.before,
                        limit
                    ],
                    run_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(to_run).collect()
        })
        .await
    }

    async fn append_event(&self, run_id: &str, seq: u64, event: &str) -> Result<(), StoreError> {
        let (run_id, event) = (run_id.to_owned(), event.to_owned());
        let seq = i64::try_from(seq).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.call(move |c| {
            c.execute(
                "INSERT OR REPLACE INTO run_events (run_id, seq, event) VALUES (?1, ?2, ?3)",
                params![run_id, seq, event],
            )?;
            Ok(())
        })
        .await
    }

    async fn events_after(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let run_id = run_id.to_owned();
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT seq, event FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq",
            )?;
            let rows = stmt
                .query_map(params![run_id, after], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .map(|(seq, e)| (u64::try_from(seq).unwrap_or(0), e))
                .collect())
        })
        .await
    }

    async fn key_spend_since(&self, key_id: &str, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let key_id = key_id.to_owned();
        self.call(move |c| {
            let mut stmt = c.prepare(
                "SELECT COALESCE(SUM(json_extract(p.value, '$.totals.cost')), 0)
                 FROM runs, json_each(runs.reports) AS p
                 WHERE runs.key_id = ?1 AND runs.created_at >= ?2",
            )?;
            let runs: i64 = stmt.query_row(params![key_id, since.to_rfc3339()], |r| r.get(0))?;
            let calls: i64 = c.query_row(
                "SELECT COALESCE(SUM(micros), 0) FROM key_spend WHERE key_id = ?1 AND at >= ?2",
                params![key_id, since.to_rfc3339()],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(runs).unwrap_or(0) + u64::try_from(calls).unwrap_or(0))
        })
        .await
    }

    async fn record_key_spend(
        &self,
        key_id: &str,
        label: &str,
        micros: u64,
    ) -> Result<(), StoreError> {
        let (key_id, label) = (key_id.to_owned(), label.to_owned());
        let micros = i64::try_from(micros).unwrap_or(i64::MAX);
        self.call(move |c| {
            c.execute(
                "INSERT INTO key_spend (at, key_id, label, micros) VALUES (?1, ?2, ?3, ?4)",
                params![Utc::now().to_rfc3339(), key_id, label, micros],
            )?;
            Ok(())
        })
        .await
    }

    async fn last_event_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            let seq: i64 = c.query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = ?1",
                params![run_id],
                |r| r.get(0),
            )?;
            Ok(u64::try_from(seq).unwrap_or(0))
        })
        .await
    }

    async fn record_step(
        &self,
        run_id: &str,
        pass: u32,
        step_id: &str,
        finished: &str,
    ) -> Result<(), StoreError> {
        let (run_id, step_id, finished) =
            (run_id.to_owned(), step_id.to_owned(), finished.to_owned());
        self.call(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO run_steps (run_id, pass, step_id, finished)
                 VALUES (?1, ?2, ?3, ?4)",
                params![run_id, pass, step_id, finished],
            )?;
            Ok(())
        })
        .await
    }

    async fn finished_steps(&self, run_id: &str) -> Result<Vec<(u32, String, String)>, StoreError> {
        let run_id = run_id.to_owned();
        self.call(move |c| {
            let mut stmt =
                c.prepare("SELECT pass, step_id, finished FROM run_steps WHERE run_id = ?1")?;
            let rows = stmt
                .query_map(params![run_id], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?, r.get(2)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn interrupt_unfinished(&self) -> Result<usize, StoreError> {
        self.call(|c| {
            Ok(c.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?1,
                     error = 'the server stopped while this run was queued or running; the passes it finished are kept'
                 WHERE status IN ('queued', 'running')",
                params![Utc::now().to_rfc3339()],
            )?)
        })
        .await
    }

    async fn audit(
        &self,
        key_id: Option<&str>,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (key_id, action, detail) = (
            key_id.map(str::to_owned),
            action.to_owned(),
            detail.to_owned(),
        );
        self.call(move |c| {
            c.execute(
                "INSERT INTO audit (at, key_id, action, detail) VALUES (?1, ?2, ?3, ?4)",
                params![Utc::now().to_rfc3339(), key_id, action, detail],
            )?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyScope;

    fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("dir");
        (
            SqliteStore::open(&dir.path().join("db/aetherflow.db")).expect("opens"),
            dir,
        )
    }

    fn run(id: &str, status: RunState) -> RunRecord {
        RunRecord {
            id: id.into(),
            key_id: Some("k1".into()),
            task_id: "t".into(),
            status,
            workflow: "direct".into(),
            mode: "build".into(),
            created_at: Utc::now(),
            finished_at: None,
            reports: Vec::new(),
            error: None,
        }
    }

    #[tokio::test]
    async fn keys_authenticate_until_revoked_and_only_hashes_are_stored() {
        let (s, dir) = store();
        let scopes = Scopes(vec![KeyScope::RunsRead]);
        let (info, key) = s.create_key("ci", &scopes).await.expect("created");
        assert_eq!(
            s.authenticate(&key).await.expect("ok"),
            Some((info.id.clone(), scopes))
        );
        let (_, secret) = keys::parse(&key).expect("shape");
        let db = std::fs::read(dir.path().join("db/aetherflow.db")).expect("db");
        let wal = std::fs::read(dir.path().join("db/aetherflow.db-wal")).unwrap_or_default();
        for bytes in [&db, &wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is on disk"
            );
        }
        let wrong = key.replace(
            &secret[..4],
            if &secret[..4] == "0000" {
                "1111"
            } else {
                "0000"
            },
        );
        assert_eq!(s.authenticate(&wrong).await.expect("ok"), None);
        assert!(s.revoke_key(&info.id).await.expect("ok"));
        assert!(
            !s.revoke_key(&info.id).await.expect("ok"),
            "already revoked"
        );
        assert_eq!(s.authenticate(&key).await.expect("ok"), None);
        let listed = s.list_keys().await.expect("ok");
        assert!(listed[0].revoked_at.is_some());
    }

    #[tokio::test]
    async fn runs_list_by_status_page_by_id_and_unfinished_ones_are_interrupted() {
        let (s, _dir) = store();
        for (id, st) in [
            ("r1", RunState::Succeeded),
            ("r2", RunState::Running),
            ("r3", RunState::Queued),
        ] {
            s.insert_run(&run(id, st)).await.expect("insert");
        }
        let all = s
            .list_runs(&RunFilter {
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("ok");
        assert_eq!(
            all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r3", "r2", "r1"]
        );
        let page = s
            .list_runs(&RunFilter {
                limit: 1,
                before: Some("r3".into()),
                ..RunFilter::default()
            })
            .await
            .expect("ok");
        assert_eq!(page[0].id, "r2");
        assert_eq!(s.interrupt_unfinished().await.expect("ok"), 2);
        let r2 = s.run("r2").await.expect("ok").expect("exists");
        assert_eq!(r2.status, RunState::Interrupted);
        assert!(r2.error.is_some() && r2.finished_at.is_some());
        let done = s
            .list_runs(&RunFilter {
                status: Some(RunState::Succeeded),
                limit: 10,
                ..RunFilter::default()
            })
            .await
            .expect("ok");
        assert_eq!(done.len(), 1);
    }

    #[tokio::test]
    async fn a_keys_spend_sums_every_pass_of_its_runs_since_a_time() {
        let (s, _dir) = store();
        let mut r = run("r1", RunState::Succeeded);
        r.reports = vec![
            serde_json::json!({"totals": {"cost": 150}}),
            serde_json::json!({"totals": {"cost": 50}}),
        ];
        s.insert_run(&r).await.expect("insert");
        let mut other = run("r2", RunState::Succeeded);
        other.key_id = Some("k2".into());
        other.reports = vec![serde_json::json!({"totals": {"cost": 999}})];
        s.insert_run(&other).await.expect("insert");
        let hour_ago = Utc::now() - chrono::Duration::hours(1);
        assert_eq!(s.key_spend_since("k1", hour_ago).await.expect("ok"), 200);
        // Calls outside runs (a design analysis) count too, for their key only.
        s.record_key_spend("k1", "designer", 30).await.expect("ok");
        s.record_key_spend("k2", "designer", 7).await.expect("ok");
        assert_eq!(s.key_spend_since("k1", hour_ago).await.expect("ok"), 230);
        let later = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(s.key_spend_since("k1", later).await.expect("ok"), 0);
    }

    #[tokio::test]
    async fn events_are_read_back_after_a_sequence_number() {
        let (s, _dir) = store();
        for seq in 1..=3 {
            s.append_event("r", seq, &format!("e{seq}"))
                .await
                .expect("ok");
        }
        let after = s.events_after("r", 1).await.expect("ok");
        assert_eq!(after, [(2, "e2".to_owned()), (3, "e3".to_owned())]);
    }
}
