//! The same behaviour from both stores: the embedded SQLite one and PostgreSQL (a throwaway
//! server from Debian's `postgresql`, started by the test).

use std::sync::Arc;

use aetherflow_server::keys::KeyScope;
use aetherflow_server::pg::PgStore;
use aetherflow_server::testing::TestPostgres;
use aetherflow_server::{RunFilter, RunRecord, RunState, Scopes, SqliteStore, Store};
use chrono::Utc;
use secrecy::SecretString;

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

async fn keys_authenticate_until_revoked(s: &dyn Store) {
    let scopes = Scopes(vec![KeyScope::RunsRead, KeyScope::Chat]);
    let (info, key) = s.create_key("ci", &scopes).await.expect("created");
    assert_eq!(
        s.authenticate(&key).await.expect("ok"),
        Some((info.id.clone(), scopes.clone()))
    );
    let mut wrong = key.clone();
    let last = wrong.pop().expect("non-empty");
    wrong.push(if last == '0' { '1' } else { '0' });
    assert_eq!(s.authenticate(&wrong).await.expect("ok"), None);
    assert_eq!(s.authenticate("not-a-key").await.expect("ok"), None);
    assert!(s.revoke_key(&info.id).await.expect("ok"));
    assert!(
        !s.revoke_key(&info.id).await.expect("ok"),
        "already revoked"
    );
    assert_eq!(s.authenticate(&key).await.expect("ok"), None);
    let listed = s.list_keys().await.expect("ok");
    assert_eq!(listed[0].id, info.id);
    assert_eq!(listed[0].scopes, scopes);
    assert!(listed[0].revoked_at.is_some());
}

async fn runs_round_trip_list_and_page(s: &dyn Store) {
    for (id, st) in [
        ("r1", RunState::Succeeded),
        ("r2", RunState::Running),
        ("r3", RunState::Queued),
    ] {
        s.insert_run(&run(id, st)).await.expect("insert");
    }
    let mut r2 = s.run("r2").await.expect("ok").expect("exists");
    assert_eq!(r2.status, RunState::Running);
    r2.status = RunState::Failed;
    r2.finished_at = Some(Utc::now());
    r2.error = Some("boom".into());
    r2.reports = vec![serde_json::json!({"totals": {"cost": 5}, "steps": []})];
    s.update_run(&r2).await.expect("update");
    let back = s.run("r2").await.expect("ok").expect("exists");
    assert_eq!(back.status, RunState::Failed);
    assert_eq!(back.error.as_deref(), Some("boom"));
    assert_eq!(back.reports, r2.reports);
    assert!(back.finished_at.is_some());
    // An ended run is never reopened by a late write (a worker that lost it).
    let mut late = back.clone();
    late.status = RunState::Running;
    late.error = None;
    s.update_run(&late).await.expect("update");
    assert_eq!(
        s.run("r2").await.expect("ok").expect("exists").status,
        RunState::Failed
    );
    assert!(s.run("nope").await.expect("ok").is_none());
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
    let failed = s
        .list_runs(&RunFilter {
            status: Some(RunState::Failed),
            key_id: Some("k1".into()),
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .expect("ok");
    assert_eq!(failed.len(), 1);
    let others = s
        .list_runs(&RunFilter {
            key_id: Some("k2".into()),
            limit: 10,
            ..RunFilter::default()
        })
        .await
        .expect("ok");
    assert!(others.is_empty());
}

async fn spend_events_and_audit(s: &dyn Store) {
    let mut r = run("s1", RunState::Succeeded);
    r.key_id = Some("ks1".into());
    r.reports = vec![
        serde_json::json!({"totals": {"cost": 150}}),
        serde_json::json!({"totals": {"cost": 50}}),
    ];
    s.insert_run(&r).await.expect("insert");
    let mut other = run("s2", RunState::Succeeded);
    other.key_id = Some("ks2".into());
    other.reports = vec![serde_json::json!({"totals": {"cost": 999}})];
    s.insert_run(&other).await.expect("insert");
    let hour_ago = Utc::now() - chrono::Duration::hours(1);
    assert_eq!(s.key_spend_since("ks1", hour_ago).await.expect("ok"), 200);
    s.record_key_spend("ks1", "chat", 30).await.expect("ok");
    s.record_key_spend("ks2", "chat", 7).await.expect("ok");
    assert_eq!(s.key_spend_since("ks1", hour_ago).await.expect("ok"), 230);
    let later = Utc::now() + chrono::Duration::hours(1);
    assert_eq!(s.key_spend_since("ks1", later).await.expect("ok"), 0);
    for seq in 1..=3 {
        s.append_event("s1", seq, &format!("e{seq}"))
            .await
            .expect("ok");
    }
    // Writing the same sequence number again replaces it (a replayed event).
    s.append_event("s1", 3, "e3'").await.expect("ok");
    let after = s.events_after("s1", 1).await.expect("ok");
    assert_eq!(after, [(2, "e2".to_owned()), (3, "e3'".to_owned())]);
    assert_eq!(s.last_event_seq("s1").await.expect("ok"), 3);
    assert_eq!(s.last_event_seq("s2").await.expect("ok"), 0, "none yet");
    // Finished steps: the first record of a step wins; passes are told apart.
    s.record_step("s1", 0, "a", "first").await.expect("ok");
    s.record_step("s1", 0, "a", "second").await.expect("ok");
    s.record_step("s1", 1, "a", "next pass").await.expect("ok");
    s.record_step("s2", 0, "a", "other run").await.expect("ok");
    let mut steps = s.finished_steps("s1").await.expect("ok");
    steps.sort();
    assert_eq!(
        steps,
        [
            (0, "a".to_owned(), "first".to_owned()),
            (1, "a".to_owned(), "next pass".to_owned())
        ]
    );
    s.audit(Some("k1"), "run.create", "s1").await.expect("ok");
    s.audit(None, "key.create", "k9").await.expect("ok");
    s.ping().await.expect("answers");
}

fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(&dir.path().join("aetherflow.db")).expect("opens");
    (Arc::new(store), dir)
}

async fn postgres(server: &TestPostgres) -> PgStore {
    PgStore::connect(&SecretString::from(server.url().to_owned()), 4)
        .await
        .expect("connects and creates its schema")
}

#[tokio::test]
async fn sqlite_keeps_keys_runs_spend_and_events() {
    let (s, _dir) = sqlite();
    keys_authenticate_until_revoked(s.as_ref()).await;
    runs_round_trip_list_and_page(s.as_ref()).await;
    spend_events_and_audit(s.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_keys_runs_spend_and_events_like_sqlite() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let s = postgres(&server).await;
    keys_authenticate_until_revoked(&s).await;
    runs_round_trip_list_and_page(&s).await;
    spend_events_and_audit(&s).await;
    // A second process on the same database sees the same records and keys.
    let other = postgres(&server).await;
    assert_eq!(
        other.run("r2").await.expect("ok").map(|r| r.status),
        Some(RunState::Failed)
    );
    let (info, key) = other
        .create_key("b", &Scopes(vec![KeyScope::Admin]))
        .await
        .expect("created");
    assert_eq!(
        s.authenticate(&key).await.expect("ok").map(|(id, _)| id),
        Some(info.id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_interrupts_only_runs_whose_owner_stopped_beating() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let alive = postgres(&server).await;
    alive
        .insert_run(&run("live", RunState::Running))
        .await
        .expect("insert");
    let crashed = postgres(&server).await;
    crashed
        .insert_run(&run("orphan", RunState::Queued))
        .await
        .expect("insert");
    drop(crashed);
    // The crashed process's last heartbeat is long gone.
    let admin = sqlx::PgPool::connect(server.url()).await.expect("connect");
    sqlx::query("UPDATE runs SET heartbeat = now() - interval '10 minutes' WHERE id = 'orphan'")
        .execute(&admin)
        .await
        .expect("age");
    let restarted = postgres(&server).await;
    assert_eq!(restarted.interrupt_unfinished().await.expect("ok"), 1);
    let orphan = restarted.run("orphan").await.expect("ok").expect("exists");
    assert_eq!(orphan.status, RunState::Interrupted);
    assert!(orphan.error.is_some() && orphan.finished_at.is_some());
    assert_eq!(
        restarted.run("live").await.expect("ok").map(|r| r.status),
        Some(RunState::Running),
        "a live replica's run is left alone"
    );
    assert_eq!(alive.heartbeat().await.expect("ok"), 1, "only its own run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refuses_a_newer_schema_and_bad_urls_without_showing_passwords() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let s = postgres(&server).await;
    drop(s);
    let admin = sqlx::PgPool::connect(server.url()).await.expect("connect");
    sqlx::query("INSERT INTO aetherflow_schema (version) VALUES (99)")
        .execute(&admin)
        .await
        .expect("bump");
    let err = PgStore::connect(&SecretString::from(server.url().to_owned()), 2)
        .await
        .expect_err("newer schema")
        .to_string();
    assert!(err.contains("schema version 99"), "{err}");
    let err = PgStore::connect(&SecretString::from("mysql://u:hunter2@h/db".to_owned()), 2)
        .await
        .expect_err("not postgres")
        .to_string();
    assert!(err.contains("server.store_url"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    let err = PgStore::connect(
        &SecretString::from("postgres://u:hunter2@127.0.0.1:9/db".to_owned()),
        2,
    )
    .await
    .expect_err("nothing listens")
    .to_string();
    assert!(
        err.contains("cannot reach postgres://127.0.0.1:9/db"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
