//! Two `aetherflow-api` replicas sharing one Redis (Debian's `redis-server` on a free loopback
//! port) behave as one system: one budget cap, one rate limit, one set of circuit breakers; and
//! when Redis is lost, budgeted calls are refused (nothing is sent unbudgeted) and `/ready`
//! says so, until it is back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aetherflow_redis::testing::TestRedis;
use serde_json::{Value, json};
use support::{Server, create_key, runtime_dir, start_in};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const MODEL: &str = "openai-compatible/llama3.2";

/// An OpenAI-compatible server that bills exactly `completion_tokens` per answer, after
/// `delay`, or answers 503 while `failing` is set; counts what reached it.
#[derive(Clone)]
struct Upstream {
    completion_tokens: u64,
    delay: Duration,
    failing: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<AtomicUsize>,
}

impl Respond for Upstream {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        self.seen.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return ResponseTemplate::new(503).set_body_json(
                json!({"error": {"message": "overloaded", "type": "server_error"}}),
            );
        }
        ResponseTemplate::new(200)
            .set_delay(self.delay)
            .set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "llama3.2",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": 12,
                    "completion_tokens": self.completion_tokens,
                    "total_tokens": 12 + self.completion_tokens
                }
            }))
    }
}

struct Cluster {
    replicas: [Server; 2],
    key: String,
    upstream: Upstream,
    _mock: MockServer,
    _dir: tempfile::TempDir,
}

/// Two replicas in one folder (so they share the key database), one priced model (input free,
/// output $1 per million tokens: a call's worst case is exactly its `max_tokens` micro-dollars),
/// and `extra` settings.
async fn cluster(redis: &TestRedis, extra: &[(&str, &str)], delay: Duration) -> Cluster {
    let upstream = Upstream {
        completion_tokens: 30,
        delay,
        failing: Arc::default(),
        seen: Arc::default(),
    };
    let mock = MockServer::start().await;
    Mock::given(wiremock::matchers::method("POST"))
        .respond_with(upstream.clone())
        .mount(&mock)
        .await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("aetherflow.toml"),
        "[prices.\"openai-compatible/llama3.2\"]\ninput = \"0\"\noutput = \"1\"\n",
    )
    .expect("config");
    let key = create_key(dir.path(), "chat");
    let runtime = runtime_dir();
    let uri = mock.uri();
    let mut env: Vec<(&str, &str)> = vec![
        ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
        ("AETHERFLOW_RETRY__MAX_ATTEMPTS", "1"),
        (
            "AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__BASE_URL",
            uri.as_str(),
        ),
        ("AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__MODEL", "llama3.2"),
        ("AETHERFLOW_REDIS__URL", redis.url()),
        ("AETHERFLOW_REDIS__NAMESPACE", redis.namespace()),
        ("AETHERFLOW_REDIS__TIMEOUT_MS", "300"),
        ("AETHERFLOW_CACHE__ENABLED", "false"),
    ];
    env.extend_from_slice(extra);
    let replicas = [start_in(dir.path(), &env), start_in(dir.path(), &env)];
    Cluster {
        replicas,
        key,
        upstream,
        _mock: mock,
        _dir: dir,
    }
}

async fn chat(client: &reqwest::Client, base: &str, key: &str, n: usize) -> reqwest::Response {
    client
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({
            "model": MODEL,
            "max_tokens": 30,
            "messages": [{"role": "user", "content": format!("request {n}")}]
        }))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_one_budget_cap_with_zero_overshoot() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    // $0.001 a day = 1000 micro-dollars; each call's worst case and real cost are both 30.
    let c = cluster(
        &redis,
        &[
            ("AETHERFLOW_BUDGET__DAY_USD", "0.001"),
            ("AETHERFLOW_SERVER__RATE_PER_MINUTE", "100000"),
        ],
        Duration::from_millis(300),
    )
    .await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for n in 0..200 {
        let client = client.clone();
        let base = c.replicas[n % 2].base.clone();
        let key = c.key.clone();
        tasks.push(tokio::spawn(async move {
            chat(&client, &base, &key, n).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 402).count();
    assert_eq!(
        (ok, refused),
        (33, 167),
        "floor(1000 / 30) calls fit the shared cap; statuses: {statuses:?}"
    );
    assert_eq!(
        c.upstream.seen.load(Ordering::SeqCst),
        33,
        "refused calls never reached the provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_admit_the_configured_rate() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let c = cluster(
        &redis,
        &[("AETHERFLOW_SERVER__RATE_PER_MINUTE", "30")],
        Duration::ZERO,
    )
    .await;
    let client = reqwest::Client::new();
    let mut admitted = 0;
    let mut retry_after = None;
    for n in 0..80 {
        let r = client
            .get(format!("{}/v1/models", c.replicas[n % 2].base))
            .bearer_auth(&c.key)
            .send()
            .await
            .expect("request");
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {
                retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
            }
            s => panic!("unexpected status {s}"),
        }
    }
    // 30 a minute in all, not 30 per replica; one more may refill (one every 2 s) meanwhile.
    assert!((30..=31).contains(&admitted), "admitted {admitted}");
    assert!(retry_after.is_some(), "a 429 says when to come back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_breaker_opened_through_one_replica_is_open_on_the_other() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let c = cluster(
        &redis,
        &[
            ("AETHERFLOW_BREAKER__CONSECUTIVE_FAILURES", "2"),
            ("AETHERFLOW_BREAKER__COOLDOWN_MS", "60000"),
        ],
        Duration::ZERO,
    )
    .await;
    c.upstream.failing.store(true, Ordering::SeqCst);
    let client = reqwest::Client::new();
    for n in 0..2 {
        let r = chat(&client, &c.replicas[0].base, &c.key, n).await;
        assert!(r.status().is_server_error(), "{}", r.status());
    }
    let seen = c.upstream.seen.load(Ordering::SeqCst);
    assert_eq!(seen, 2);
    // Outcomes are recorded in the background: give them a moment to land.
    let mut skipped = false;
    for n in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let r = chat(&client, &c.replicas[1].base, &c.key, 100 + n).await;
        let body: Value = r.json().await.expect("json");
        if body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("circuit open")
        {
            skipped = true;
            break;
        }
    }
    assert!(skipped, "replica B skips the model that failed for A");
    let after = c.upstream.seen.load(Ordering::SeqCst);
    let r = chat(&client, &c.replicas[1].base, &c.key, 999).await;
    assert!(r.status().is_server_error());
    assert_eq!(
        c.upstream.seen.load(Ordering::SeqCst),
        after,
        "an open breaker sends nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn losing_redis_refuses_budgeted_calls_and_marks_not_ready_until_it_is_back() {
    let Some(mut redis) = TestRedis::start() else {
        return;
    };
    if std::env::var_os("AETHERFLOW_TEST_REDIS_URL").is_some() {
        return; // cannot stop a server this test did not start
    }
    let c = cluster(
        &redis,
        &[("AETHERFLOW_BUDGET__DAY_USD", "1")],
        Duration::ZERO,
    )
    .await;
    let client = reqwest::Client::new();
    let base = &c.replicas[0].base;
    assert_eq!(chat(&client, base, &c.key, 0).await.status(), 200);
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
    redis.stop();
    let seen = c.upstream.seen.load(Ordering::SeqCst);
    let r = chat(&client, base, &c.key, 1).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "budget_store_unavailable", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("nothing is sent unbudgeted"), "{message}");
    assert_eq!(
        c.upstream.seen.load(Ordering::SeqCst),
        seen,
        "nothing was sent unbudgeted"
    );
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 503);
    let checks: Value = ready.json().await.expect("json");
    assert_eq!(checks["checks"]["redis"], "unreachable", "{checks}");
    redis.restart();
    let mut resumed = false;
    for n in 0..50 {
        if chat(&client, base, &c.key, 10 + n).await.status() == 200 {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "calls resume once Redis is back");
    let ready = client
        .get(format!("{base}/ready"))
        .send()
        .await
        .expect("ready");
    assert_eq!(ready.status(), 200);
}

/// Two offline replicas in folders of their own (each with a copy of the example workspace),
/// sharing nothing but the PostgreSQL at `pg` and the settings in `extra`; a key with
/// `runs:write,runs:read` made in that store; and the example plan.
fn pg_replicas(
    pg: &aetherflow_server::testing::TestPostgres,
    extra: &[(&str, &str)],
) -> ([Server; 2], String, Value, [tempfile::TempDir; 2]) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let plan: Value = serde_json::from_str(
        &std::fs::read_to_string(repo.join("examples/todo-api/plan.json")).expect("plan"),
    )
    .expect("json");
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    for d in &dirs {
        let status = std::process::Command::new("cp")
            .args(["-r"])
            .arg(repo.join("examples/todo-api/workspace"))
            .arg(d.path().join("ws"))
            .status()
            .expect("cp");
        assert!(status.success());
    }
    let store = [("AETHERFLOW_SERVER__STORE_URL", pg.url())];
    let key = support::create_key_with(dirs[0].path(), "runs:write,runs:read", &store);
    let runtime = runtime_dir();
    let mut env = vec![
        ("AETHERFLOW_SERVER__OFFLINE", "true"),
        ("AETHERFLOW_SERVER__WORKSPACE_ROOTS", "ws"),
        ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
        ("AETHERFLOW_SERVER__STORE_URL", pg.url()),
    ];
    env.extend_from_slice(extra);
    let replicas = [
        start_in(dirs[0].path(), &env),
        start_in(dirs[1].path(), &env),
    ];
    (replicas, key, plan, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_history_is_shared_through_postgres_and_outlives_the_replica_that_ran_it() {
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    // Two replicas in separate folders: nothing shared but the database.
    let ([a, b], key, plan, _dirs) = pg_replicas(&pg, &[]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/runs?wait=60", a.base))
        .bearer_auth(&key)
        .json(&json!({"plan": plan}))
        .send()
        .await
        .expect("submit");
    assert_eq!(
        r.status(),
        200,
        "the key made through replica A's folder works on A"
    );
    let run: Value = r.json().await.expect("json");
    let id = run["id"].as_str().expect("id").to_owned();
    assert_eq!(run["status"], "succeeded", "{run}");
    // Replica B, which never saw the run, serves it.
    let fetch = |base: String| {
        let client = client.clone();
        let key = key.clone();
        let id = id.clone();
        async move {
            client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(&key)
                .send()
                .await
                .expect("get")
        }
    };
    let seen = fetch(b.base.clone()).await;
    assert_eq!(seen.status(), 200);
    let seen: Value = seen.json().await.expect("json");
    assert_eq!(seen["status"], "succeeded");
    assert_eq!(seen["reports"], run["reports"]);
    // A run submitted to A without waiting is followed live from B, which does not run it.
    let r = client
        .post(format!("{}/v1/runs", a.base))
        .bearer_auth(&key)
        .json(&json!({"plan": plan}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 202);
    let queued: Value = r.json().await.expect("json");
    let second = queued["id"].as_str().expect("id").to_owned();
    let body = client
        .get(format!("{}/v1/runs/{second}/events", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("stream ends with the run");
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert!(names.contains(&"run_started"), "{names:?}");
    assert!(names.contains(&"run_finished"), "{names:?}");
    assert_eq!(names.last(), Some(&"end"), "{names:?}");
    assert!(
        body.trim_end().ends_with(r#"data: {"status":"succeeded"}"#),
        "{body}"
    );
    // Replica A goes away; the history does not.
    drop(a);
    let seen = fetch(b.base.clone()).await;
    assert_eq!(seen.status(), 200);
    let listed: Value = client
        .get(format!("{}/v1/runs", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert!(
        listed.to_string().contains(&id),
        "the run is listed by the surviving replica: {listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_is_cancelled_through_a_replica_that_does_not_run_it() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    let ([a, b], key, plan, _dirs) = pg_replicas(
        &pg,
        &[
            ("AETHERFLOW_REDIS__URL", redis.url()),
            ("AETHERFLOW_REDIS__NAMESPACE", redis.namespace()),
            // Every mock answer takes 3 s: the run is still going when the cancel arrives.
            ("AETHERFLOW_MOCK__LATENCY_MS", "3000"),
        ],
    );
    let client = reqwest::Client::new();
    let queued: Value = client
        .post(format!("{}/v1/runs", a.base))
        .bearer_auth(&key)
        .json(&json!({"plan": plan}))
        .send()
        .await
        .expect("submit")
        .json()
        .await
        .expect("json");
    let id = queued["id"].as_str().expect("id").to_owned();
    let r = client
        .post(format!("{}/v1/runs/{id}/cancel", b.base))
        .bearer_auth(&key)
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 202, "B passes the cancellation on");
    let mut status = Value::Null;
    for _ in 0..100 {
        let run: Value = client
            .get(format!("{}/v1/runs/{id}", b.base))
            .bearer_auth(&key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        status = run["status"].clone();
        if status == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "cancelled", "A cancelled the run B was asked to");
}
