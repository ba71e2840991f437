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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_run_applies_a_checked_answer_from_the_journal_instead_of_asking_again() {
    let (Some(redis), Some(pg)) = (TestRedis::start(), TestPostgres::start()) else {
        return;
    };
    let _ = redis;
    let store: Arc<dyn Store> = Arc::new(
        PgStore::connect(&SecretString::from(pg.url().to_owned()), 4)
            .await
            .expect("store"),
    );
    let root = tempfile::tempdir().expect("workspace");
    let out = tempfile::tempdir().expect("runs");
    let plan_json = r#"{"task_id":"t","description":"d","steps":[
        {"id":"a","description":"write a","type":"code_generation","context":{"files":["a.py"]}},
        {"id":"b","description":"look","type":"analysis","dependencies":["a"]}]}"#;
    let plan = load_plan(plan_json, PlanFormat::Json).expect("plan");
    // The worker that died had checked `a`'s answer and was applying it.
    let step = &plan.plan().steps[0];
    let mut report = aetherflow_domain::run::StepReport::pending(step.id.clone(), step.step_type);
    report.status = aetherflow_domain::run::StepStatus::Running;
    let prepared = aetherflow_orchestrator::journal::FinishedStep {
        report,
        output: Some("```python\nPREPARED = 1\n```\n".into()),
        files: vec![aetherflow_orchestrator::extract::ExtractedFile {
            path: "a.py".into(),
            content: "PREPARED = 1\n".into(),
        }],
    };
    store.insert_run(&queued("r1")).await.expect("insert");
    store
        .record_step(
            "r1",
            0,
            "a#prepared",
            &serde_json::to_string(&prepared).expect("json"),
        )
        .await
        .expect("journal");
    let engine = Engine {
        providers: mock_provider_set(Default::default()),
        resilience: Resilience::default(),
        options: RunOptions {
            out_dir: Some(out.path().to_path_buf()),
            apply: Some(aetherflow_orchestrator::apply::ApplyMode::Write),
            ..RunOptions::default()
        },
        reviewer: ReviewOptions::default(),
        limits: ContextLimits::default(),
        workspace_roots: vec![std::fs::canonicalize(root.path()).expect("canonical")],
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
    let message: JobMessage = serde_json::from_str(&message("r1")).expect("message");
    let message = JobMessage {
        plan: plan.plan().clone(),
        ..message
    };
    let ended = jobs
        .run_claimed(&message, tokio_util::sync::CancellationToken::new())
        .await
        .expect("runs");
    assert_eq!(
        ended,
        aetherflow_server::jobs::Claimed::Finished(RunState::Succeeded)
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("a.py")).expect("applied"),
        "PREPARED = 1\n",
        "the checked answer, not a new one from the provider"
    );
    let record = store.run("r1").await.expect("ok").expect("exists");
    let steps = record.reports[0]["steps"]
        .as_array()
        .expect("steps")
        .clone();
    assert_eq!(steps.len(), 2, "one result per step");
    assert!(
        steps.iter().all(|s| s["status"] == "succeeded"),
        "{steps:?}"
    );
    // And it is now recorded finished: a later takeover restores it as it is.
    let journal = store.finished_steps("r1").await.expect("ok");
    assert!(
        journal.iter().any(|(_, step, _)| step == "a"),
        "{journal:?}"
    );
}
