//! The networked store: PostgreSQL through `sqlx`, for deployments where several API replicas
//! (and, later, workers) must see the same keys, runs, events and spend. Selected by
//! `server.store_url`; the embedded SQLite store stays the single-node default.
//!
//! Runs carry the id of the process that owns them and a heartbeat the owner renews every
//! [`HEARTBEAT`]; at start-up a process marks interrupted only the unfinished runs whose owner
//! has stopped beating for [`STALE_AFTER`] — never another live replica's runs.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::keys::Scopes;
use crate::store::{
    AuthCache, KeyInfo, RunFilter, RunRecord, RunState, Store, StoreError, new_key,
};

/// How often a process renews the heartbeat of the runs it owns.
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// How long without a heartbeat before an unfinished run counts as orphaned.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// The schema version this code reads and writes; start-up refuses a newer database. Adding a
/// table (`CREATE TABLE IF NOT EXISTS`, which older code ignores) keeps the version.
pub const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS aetherflow_schema (version INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, scopes TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL, revoked_at TIMESTAMPTZ)",
    "CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY, key_id TEXT, task_id TEXT NOT NULL, status TEXT NOT NULL,
        workflow TEXT NOT NULL, mode TEXT NOT NULL, created_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ, reports JSONB NOT NULL, error TEXT,
        owner TEXT, heartbeat TIMESTAMPTZ)",
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, id)",
    "CREATE INDEX IF NOT EXISTS runs_key ON runs (key_id, created_at)",
    "CREATE TABLE IF NOT EXISTS run_events (
        run_id TEXT NOT NULL, seq BIGINT NOT NULL, event TEXT NOT NULL, PRIMARY KEY (run_id, seq))",
    "CREATE TABLE IF NOT EXISTS run_steps (
        run_id TEXT NOT NULL, pass INTEGER NOT NULL, step_id TEXT NOT NULL, finished TEXT NOT NULL,
        PRIMARY KEY (run_id, pass, step_id))",
    "CREATE TABLE IF NOT EXISTS audit (
        at TIMESTAMPTZ NOT NULL, key_id TEXT, action TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS key_spend (
        at TIMESTAMPTZ NOT NULL, key_id TEXT NOT NULL, label TEXT NOT NULL, micros BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS key_spend_key ON key_spend (key_id, at)",
];

/// The PostgreSQL store.
#[derive(Clone)]
pub struct PgStore {
    pool: PgPool,
    /// This process's id, written as the owner of the runs it inserts.
    instance: String,
    /// Keys recently verified (as in the SQLite store).
    verified: AuthCache,
    /// Where the database is, without credentials, for messages.
    shown: String,
    /// Held by every handle: the heartbeat task stops once the last handle is gone.
    alive: std::sync::Arc<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.shown)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

fn db(e: sqlx::Error) -> StoreError {
    // sqlx's messages name the server and the failing statement, never the password.
    StoreError::Backend(e.to_string())
}

impl PgStore {
    /// Connects to `url` (`postgres://user:password@host:port/db`), creates the schema when it
    /// is missing, and starts the heartbeat of this process's runs. Refuses a database whose
    /// schema is newer than this code.
    pub async fn connect(url: &SecretString, max_connections: u32) -> Result<Self, StoreError> {
        let text = url.expose_secret();
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            return Err(StoreError::Backend(
                "server.store_url must be a PostgreSQL URL: postgres://user:password@host:5432/database".into(),
            ));
        }
        let options = PgConnectOptions::from_str(text).map_err(|e| {
            StoreError::Backend(format!(
                "server.store_url is not a PostgreSQL URL ({}); write it as postgres://user:password@host:5432/database",
                without_password(&e.to_string(), url.expose_secret())
            ))
        })?;
        let shown = format!(
            "postgres://{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Backend(format!("cannot reach {shown}: {e}")))?;
        let store = PgStore {
            pool,
            instance: uuid::Uuid::now_v7().simple().to_string(),
            verified: AuthCache::new(),
            shown,
            alive: std::sync::Arc::new(()),
        };
        store.migrate().await?;
        let alive = std::sync::Arc::downgrade(&store.alive);
        let (pool, instance) = (store.pool.clone(), store.instance.clone());
        tokio::spawn(async move {
            let mut every =
                tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
            loop {
                every.tick().await;
                if alive.upgrade().is_none() {
                    return;
                }
                if let Err(e) = heartbeat(&pool, &instance).await {
                    tracing::warn!(error = %e, "run heartbeat not written");
                }
            }
        });
        Ok(store)
    }

    /// The database, without credentials.
    pub fn display(&self) -> &str {
        &self.shown
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // One process at a time creates the schema (advisory lock), so replicas starting
        // together do not race on CREATE.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock(724011)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        for statement in SCHEMA {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let version: Option<i32> = sqlx::query_scalar("SELECT max(version) FROM aetherflow_schema")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
        match version {
            None => {
                sqlx::query("INSERT INTO aetherflow_schema (version) VALUES ($1)")
                    .bind(SCHEMA_VERSION)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Backend(format!(
                    "{} holds schema version {v}, newer than this AetherFlow's {SCHEMA_VERSION}: upgrade AetherFlow, or point server.store_url at another database",
                    self.shown
                )));
            }
            Some(_) => {}
        }
        tx.commit().await.map_err(db)
    }

    /// Renews the heartbeat of this process's unfinished runs (done every [`HEARTBEAT`] in the
    /// background); how many.
    pub async fn heartbeat(&self) -> Result<u64, StoreError> {
        heartbeat(&self.pool, &self.instance).await
    }
}

async fn heartbeat(pool: &PgPool, instance: &str) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE runs SET heartbeat = now()
         WHERE owner = $1 AND status IN ('queued', 'running')",
    )
    .bind(instance)
    .execute(pool)
    .await
    .map_err(db)?
    .rows_affected())
}

fn without_password(message: &str, url: &str) -> String {
    let mut m = message.replace(url, "(server.store_url)");
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        m = m.replace(p, "***");
    }
    m
}

fn key_info(row: &sqlx::postgres::PgRow) -> Result<KeyInfo, StoreError> {
    let scopes: String = row.try_get("scopes").map_err(db)?;
    Ok(KeyInfo {
        id: row.try_get("id").map_err(db)?,
        name: row.try_get("name").map_err(db)?,
        scopes: Scopes::parse_list(&scopes).map_err(StoreError::Corrupt)?,
        created_at: row.try_get("created_at").map_err(db)?,
        revoked_at: row.try_get("revoked_at").map_err(db)?,
    })
}

/// The columns of a run record, as a literal (SQL is only ever built from literals here).
macro_rules! run_columns {
    () => {
        "id, key_id, task_id, status, workflow, mode, created_at, finished_at, reports, error"
    };
}

fn run(row: &sqlx::postgres::PgRow) -> Result<RunRecord, StoreError> {
    let status: String = row.try_get("status").map_err(db)?;
    let reports: serde_json::Value = row.try_get("reports").map_err(db)?;
    Ok(RunRecord {
        id: row.try_get("id").map_err(db)?,
        key_id: row.try_get("key_id").map_err(db)?,
        task_id: row.try_get("task_id").map_err(db)?,
        status: RunState::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("status `{status}`")))?,
        workflow: row.try_get("workflow").map_err(db)?,
        mode: row.try_get("mode").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        finished_at: row.try_get("finished_at").map_err(db)?,
        reports: match reports {
            serde_json::Value::Array(v) => v,
            other => return Err(StoreError::Corrupt(format!("reports: {other}"))),
        },
        error: row.try_get("error").map_err(db)?,
    })
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(db)
    }

    async fn create_key(
        &self,
        name: &str,
        scopes: &Scopes,
    ) -> Result<(KeyInfo, String), StoreError> {
        let (info, hash, key) = new_key(name, scopes)?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, hash, scopes, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&info.id)
        .bind(&info.name)
        .bind(&hash)
        .bind(scopes.to_list())
        .bind(info.created_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok((info, key))
    }

    async fn list_keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        sqlx::query(
            "SELECT id, name, scopes, created_at, revoked_at FROM api_keys ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(key_info)
        .collect()
    }

    async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        self.verified.forget_all();
        let n = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn authenticate(&self, presented: &str) -> Result<Option<(String, Scopes)>, StoreError> {
        self.verified
            .authenticate(presented, |id| async move {
                sqlx::query_as(
                    "SELECT hash, scopes FROM api_keys WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(db)
            })
            .await
    }

    async fn insert_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        sqlx::query(concat!(
            "INSERT INTO runs (",
            run_columns!(),
            ", owner, heartbeat)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, now())"
        ))
        .bind(&run.id)
        .bind(&run.key_id)
        .bind(&run.task_id)
        .bind(run.status.as_str())
        .bind(&run.workflow)
        .bind(&run.mode)
        .bind(run.created_at)
        .bind(run.finished_at)
        .bind(serde_json::Value::Array(run.reports.clone()))
        .bind(&run.error)
        .bind(&self.instance)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn update_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE runs SET status = $2, finished_at = $3, reports = $4, error = $5,
                 owner = $6, heartbeat = now()
             WHERE id = $1 AND status NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .bind(&run.id)
        .bind(run.status.as_str())
        .bind(run.finished_at)
        .bind(serde_json::Value::Array(run.reports.clone()))
        .bind(&run.error)
        // Whoever writes a run holds it now (a worker that took it over from the queue).
        .bind(&self.instance)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .as_ref()
        .map(run)
        .transpose()
    }

    async fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunRecord>, StoreError> {
        let limit = i64::try_from(filter.limit).unwrap_or(i64::MAX);
        sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs
             WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR key_id = $2)
               AND ($3::text IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(filter.status.map(RunState::as_str))
        .bind(&filter.key_id)
        .bind(&filter.before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(run)
        .collect()
    }

    async fn append_event(&self, run_id: &str, seq: u64, event: &str) -> Result<(), StoreError> {
        let seq = i64::try_from(seq).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO run_events (run_id, seq, event) VALUES ($1, $2, $3)
             ON CONFLICT (run_id, seq) DO UPDATE SET event = EXCLUDED.event",
        )
        .bind(run_id)
        .bind(seq)
        .bind(event)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn events_after(
        &self,
        run_id: &str,
        after: u64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, event FROM run_events WHERE run_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(run_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(seq, e)| (u64::try_from(seq).unwrap_or(0), e))
            .collect())
    }

    async fn key_spend_since(&self, key_id: &str, since: DateTime<Utc>) -> Result<u64, StoreError> {
        let runs: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM((p -> 'totals' ->> 'cost')::BIGINT), 0)::BIGINT
             FROM runs, jsonb_array_elements(runs.reports) AS p
             WHERE runs.key_id = $1 AND runs.created_at >= $2",
        )
        .bind(key_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let calls: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(micros), 0)::BIGINT FROM key_spend WHERE key_id = $1 AND at >= $2",
        )
        .bind(key_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        Ok(u64::try_from(runs).unwrap_or(0) + u64::try_from(calls).unwrap_or(0))
    }

    async fn record_key_spend(
        &self,
        key_id: &str,
        label: &str,
        micros: u64,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO key_spend (at, key_id, label, micros) VALUES (now(), $1, $2, $3)")
            .bind(key_id)
            .bind(label)
            .bind(i64::try_from(micros).unwrap_or(i64::MAX))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn last_event_seq(&self, run_id: &str) -> Result<u64, StoreError> {
        let seq: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = $1")
                .bind(run_id)
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    async fn record_step(
        &self,
        run_id: &str,
        pass: u32,
        step_id: &str,
        finished: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO run_steps (run_id, pass, step_id, finished) VALUES ($1, $2, $3, $4)
             ON CONFLICT (run_id, pass, step_id) DO NOTHING",
        )
        .bind(run_id)
        .bind(i32::try_from(pass).unwrap_or(i32::MAX))
        .bind(step_id)
        .bind(finished)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn finished_steps(&self, run_id: &str) -> Result<Vec<(u32, String, String)>, StoreError> {
        let rows: Vec<(i32, String, String)> =
            sqlx::query_as("SELECT pass, step_id, finished FROM run_steps WHERE run_id = $1")
                .bind(run_id)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows
            .into_iter()
            .map(|(pass, step, json)| (u32::try_from(pass).unwrap_or(0), step, json))
            .collect())
    }

    async fn unfinished_and_unowned(
        &self,
        stale_after: Duration,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            run_columns!(),
            " FROM runs WHERE status IN ('queued', 'running')
               AND (heartbeat IS NULL OR heartbeat < now() - make_interval(secs => $1))
             ORDER BY id LIMIT 1000"
        ))
        .bind(stale_after.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(run).collect()
    }

    async fn interrupt_unfinished(&self) -> Result<usize, StoreError> {
        // Only runs whose owner stopped beating: another live replica's runs are its own.
        let stale = i64::try_from(STALE_AFTER.as_secs()).unwrap_or(60);
        let n = sqlx::query(
            "UPDATE runs SET status = 'interrupted', finished_at = now(),
                 error = 'the server stopped while this run was queued or running; the passes it finished are kept'
             WHERE status IN ('queued', 'running')
               AND (heartbeat IS NULL OR heartbeat < now() - make_interval(secs => $1))",
        )
        .bind(stale as f64)
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn audit(
        &self,
        key_id: Option<&str>,
        action: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO audit (at, key_id, action, detail) VALUES (now(), $1, $2, $3)")
            .bind(key_id)
            .bind(action)
            .bind(detail)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }
}
