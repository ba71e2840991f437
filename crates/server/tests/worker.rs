//! The queue worker's sweep against real PostgreSQL and Redis (Debian's, started by the test): a
//! run recorded but never queued (its API replica died in between) is recorded failed; runs
//! still on the queue, or whose owner is alive, are left alone.

use std::sync::Arc;
use std::time::Duration;

use aetherflow_domain::plan::{PlanFormat, load_plan};
use aetherflow_orchestrator::review::ReviewOptions;
use aetherflow_orchestrator::workspace::ContextLimits;
use aetherflow_orchestrator::{Resilience, RunOptions, mock_provider_set};
use aetherflow_redis::queue::RedisQueue;
use aetherflow_redis::signals::RedisSignals;
use aetherflow_redis::testing::TestRedis;
use aetherflow_server::jobs::{Engine, JobMessage, Jobs};
use aetherflow_server::pg::PgStore;
use aetherflow_server::testing::TestPostgres;
use aetherflow_server::worker::{Worker, WorkerOptions};
use aetherflow_server::{RunRecord, RunState, Store};
use chrono::Utc;
use secrecy::SecretString;

fn queued(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        key_id: None,
        task_id: "t".into(),
        status: RunState::Queued,
        workflow: "direct".into(),
        mode: "build".into(),
        created_at: Utc::now(),
        finished_at: None,
        reports: Vec::new(),
        error: None,
    }
}

fn message(run_id: &str) -> String {
    let plan = load_plan(
        r#"{"task_id":"t","description":"d","steps":[{"id":"a","description":"x","type":"analysis"}]}"#,
        PlanFormat::Json,
    )
    .expect("plan");
    serde_json::to_string(&JobMessage {
        v: 1,
        run_id: run_id.into(),
        plan: plan.plan().clone(),
        warnings: Vec::new(),
        workflow: Default::default(),
        mode: Default::default(),
        workspace: None,
        budget_micros: None,
        dry_run: false,
        key_id: None,
        trace: Default::default(),
    })
    .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_lost_before_it_reached_the_queue_is_recorded_failed_and_no_other() {
    let (Some(redis), Some(pg)) = (TestRedis::start(), TestPostgres::start()) else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&SecretString::from(pg.url().to_owned()), 4)
            .await
            .expect("store"),
    );
    for id in ["lost", "waiting", "alive"] {
        store.insert_run(&queued(id)).await.expect("insert");
    }
    // "lost" and "waiting" were accepted by a replica that is gone; "alive"'s still beats.
    let admin = sqlx::PgPool::connect(pg.url()).await.expect("connect");
    sqlx::query(
        "UPDATE runs SET heartbeat = now() - interval '10 minutes' WHERE id IN ('lost', 'waiting')",
    )
    .execute(&admin)
    .await
    .expect("age");
    let shared = aetherflow_redis::Shared::connect(&redis.settings()).expect("redis");
    let queue = RedisQueue::new(shared.clone(), "runs", 10, Duration::from_secs(60));
    queue.ensure_group().await.expect("group");
    // Only "waiting" reached the queue.
    queue.enqueue(&message("waiting")).await.expect("enqueue");
    let engine = Engine {
        providers: mock_provider_set(Default::default()),
        resilience: Resilience::default(),
        options: RunOptions::default(),
        reviewer: ReviewOptions::default(),
        limits: ContextLimits::default(),
        workspace_roots: Vec::new(),
        key_day_cap: None,
        gateway_groups: Default::default(),
    };
    let jobs = Jobs::new(
        engine,
        Arc::clone(&store),
        tokio::runtime::Handle::current(),
        1,
        1,
    );
    let worker = Worker::new(
        jobs,
        queue,
        RedisSignals::new(shared),
        WorkerOptions::named_uniquely(1, 3, Duration::from_secs(1)),
    );
    assert_eq!(worker.sweep().await.expect("sweep"), 1);
    let lost = store.run("lost").await.expect("ok").expect("exists");
    assert_eq!(lost.status, RunState::Failed);
    assert!(
        lost.error
            .as_deref()
            .unwrap_or_default()
            .contains("submit it again"),
        "{lost:?}"
    );
    assert!(lost.finished_at.is_some());
    for id in ["waiting", "alive"] {
        assert_eq!(
            store.run(id).await.expect("ok").expect("exists").status,
            RunState::Queued,
            "{id} is left alone"
        );
    }
    assert_eq!(
        worker.sweep().await.expect("sweep"),
        0,
        "nothing left to sweep"
    );
}
