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

/// An OpenAI-compatible server for plan steps: answers the step whose task line names
/// `STEP-<n>` with one Python block `VALUE = <n * 100 + k>`, `k` counting that step's requests
/// from 1, after `delay`; counts requests per step.
#[derive(Clone)]
struct StepUpstream {
    delay: Duration,
    asked: Arc<std::sync::Mutex<std::collections::BTreeMap<u32, u32>>>,
}

impl StepUpstream {
    /// Waits (up to 60 s) until step `step` has been asked for.
    async fn wait_asked(&self, step: u32) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while self.asked(step) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "step {step} never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn asked(&self, step: u32) -> u32 {
        self.asked
            .lock()
            .expect("lock")
            .get(&step)
            .copied()
            .unwrap_or(0)
    }
}

impl Respond for StepUpstream {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let prompt = body["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_str())
            .collect::<String>();
        // The task line only: other steps' answers appear in the prompt too.
        let step = prompt
            .split("## Task")
            .nth(1)
            .and_then(|t| t.trim_start().lines().next())
            .and_then(|line| line.split("STEP-").nth(1))
            .and_then(|n| n.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0);
        let k = {
            let mut asked = self.asked.lock().expect("lock");
            let k = asked.entry(step).or_insert(0);
            *k += 1;
            *k
        };
        let content = format!("```python\nVALUE = {}\n```\n", step * 100 + k);
        ResponseTemplate::new(200)
            .set_delay(self.delay)
            .set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "llama3.2",
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop"
                }],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            }))
    }
}

/// A plan of `n` steps in a chain, step `k` writing `pkg/m<k>.py`.
fn chain_plan(n: u32) -> Value {
    numbered_chain(1, n)
}

/// As [`chain_plan`], its steps numbered from `first` (so two plans' steps are told apart).
fn numbered_chain(first: u32, n: u32) -> Value {
    let steps: Vec<Value> = (first..first + n)
        .map(|k| {
            let mut step = json!({
                "id": format!("s{k}"),
                "description": format!("Write the module STEP-{k} of the package"),
                "type": "code_generation",
                "context": {"files": [format!("pkg/m{k}.py")]}
            });
            if k > first {
                step["dependencies"] = json!([format!("s{}", k - 1)]);
            }
            step
        })
        .collect();
    json!({"task_id": "chain", "description": "A package built step by step", "steps": steps})
}

/// One API replica with the queue on and the settings workers share: one folder (the
/// workspace `ws` and the key), PostgreSQL, Redis, an upstream answering each step after
/// `delay`, and `extra`.
struct QueueSetup {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    key: String,
    upstream: StepUpstream,
    _mock: MockServer,
}

impl QueueSetup {
    async fn new(
        redis: &TestRedis,
        pg: &aetherflow_server::testing::TestPostgres,
        delay: Duration,
        extra: &[(&str, &str)],
    ) -> Self {
        let upstream = StepUpstream {
            delay,
            asked: Arc::default(),
        };
        let mock = MockServer::start().await;
        Mock::given(wiremock::matchers::method("POST"))
            .respond_with(upstream.clone())
            .mount(&mock)
            .await;
        let dir = tempfile::tempdir().expect("dir");
        std::fs::create_dir_all(dir.path().join("ws/pkg")).expect("workspace");
        let store = [("AETHERFLOW_SERVER__STORE_URL", pg.url())];
        let key = support::create_key_with(dir.path(), "runs:write,runs:read", &store);
        let mut env: Vec<(String, String)> = [
            ("AETHERFLOW_SERVER__WORKSPACE_ROOTS", "ws"),
            ("AETHERFLOW_SANDBOX_RUNTIME", runtime_dir().as_str()),
            ("AETHERFLOW_SERVER__STORE_URL", pg.url()),
            ("AETHERFLOW_REDIS__URL", redis.url()),
            ("AETHERFLOW_REDIS__NAMESPACE", redis.namespace()),
            ("AETHERFLOW_QUEUE__ENABLED", "true"),
            ("AETHERFLOW_RETRY__MAX_ATTEMPTS", "1"),
            ("AETHERFLOW_CACHE__ENABLED", "false"),
            (
                "AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__BASE_URL",
                mock.uri().as_str(),
            ),
            ("AETHERFLOW_PROVIDERS__OPENAI_COMPATIBLE__MODEL", "llama3.2"),
        ]
        .iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        env.dedup_by(|a, b| a.0 == b.0);
        QueueSetup {
            dir,
            env,
            key,
            upstream,
            _mock: mock,
        }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn api(&self) -> Server {
        start_in(self.dir.path(), &self.env())
    }

    fn worker(&self) -> Server {
        support::start_worker(self.dir.path(), &self.env())
    }

    async fn submit(&self, api: &Server, plan: &Value) -> String {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/runs", api.base))
            .bearer_auth(&self.key)
            .json(&json!({"plan": plan}))
            .send()
            .await
            .expect("submit");
        assert_eq!(r.status(), 202, "queued");
        let run: Value = r.json().await.expect("json");
        assert_eq!(run["status"], "queued");
        run["id"].as_str().expect("id").to_owned()
    }

    async fn run(&self, api: &Server, id: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}/v1/runs/{id}", api.base))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json")
    }

    async fn wait_final(&self, api: &Server, id: &str, within: Duration) -> Value {
        let deadline = std::time::Instant::now() + within;
        loop {
            let run = self.run(api, id).await;
            if ["succeeded", "failed", "cancelled", "interrupted"]
                .contains(&run["status"].as_str().unwrap_or_default())
                || std::time::Instant::now() > deadline
            {
                return run;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn kill_9(server: &mut Server) {
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &server.child.id().to_string()])
        .status();
    let _ = server.child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_run_is_taken_over_and_every_step_is_applied_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    let setup = QueueSetup::new(
        &redis,
        &pg,
        Duration::from_millis(600),
        &[("AETHERFLOW_QUEUE__VISIBILITY_SECS", "3")],
    )
    .await;
    let api = setup.api();
    let mut first = setup.worker();
    let id = setup.submit(&api, &chain_plan(4)).await;
    // Killed while step 3 is with the provider: steps 1 and 2 are applied and recorded.
    setup.upstream.wait_asked(3).await;
    kill_9(&mut first);
    let ws = setup.dir.path().join("ws/pkg");
    assert_eq!(
        std::fs::read_to_string(ws.join("m2.py")).expect("step 2 applied"),
        "VALUE = 201\n"
    );
    assert!(!ws.join("m3.py").exists(), "step 3 was cut short");
    // Another worker takes the job over after the visibility timeout and finishes the run.
    let _second = setup.worker();
    let run = setup.wait_final(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    // Steps 1 and 2 were neither sent nor applied again; step 3 was sent again (its first answer
    // was never applied); every file holds the answer applied once.
    let asked: Vec<u32> = (1..=4).map(|k| setup.upstream.asked(k)).collect();
    assert_eq!(asked, [1, 1, 2, 1], "requests per step");
    for (k, value) in [(1, 101), (2, 201), (3, 302), (4, 401)] {
        assert_eq!(
            std::fs::read_to_string(ws.join(format!("m{k}.py"))).expect("applied"),
            format!("VALUE = {value}\n"),
            "pkg/m{k}.py"
        );
    }
    // One result per step in the final report.
    let reports = run["reports"].as_array().expect("reports");
    assert_eq!(reports.len(), 1, "one pass: {run}");
    let steps: Vec<(&str, &str)> = reports[0]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default(),
                s["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("s1", "succeeded"),
            ("s2", "succeeded"),
            ("s3", "succeeded"),
            ("s4", "succeeded")
        ]
    );
    // The events, followed through the API replica (which runs nothing), show the takeover.
    let body = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/events", api.base))
        .bearer_auth(&setup.key)
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("stream ends with the run");
    let restored = body.matches("event: step_restored").count();
    assert_eq!(restored, 2, "{body}");
    // Event ids run on across the takeover: strictly increasing, none repeated.
    let ids: Vec<u64> = body
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert!(ids.len() > 10, "{body}");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    // And a client resuming with Last-Event-ID gets what follows only.
    let resumed = reqwest::Client::new()
        .get(format!("{}/v1/runs/{id}/events", api.base))
        .bearer_auth(&setup.key)
        .header("last-event-id", ids[4].to_string())
        .send()
        .await
        .expect("events")
        .text()
        .await
        .expect("stream ends with the run");
    let resumed_ids: Vec<u64> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    assert_eq!(resumed_ids, ids[5..], "{resumed}");
    assert!(
        body.trim_end().ends_with(r#"data: {"status":"succeeded"}"#),
        "{body}"
    );
    assert!(
        redis_queue_is_empty(&redis).await,
        "the job is acknowledged once the run is recorded"
    );
}

/// Whether the run queue empties within 10 s (a job is acknowledged just after its run's end is
/// stored).
async fn redis_queue_is_empty(redis: &TestRedis) -> bool {
    let queue = aetherflow_redis::queue::RedisQueue::new(
        aetherflow_redis::Shared::connect(&redis.settings()).expect("url"),
        "runs",
        10,
        Duration::from_secs(3),
    );
    for _ in 0..100 {
        if queue.is_empty().await.expect("redis") {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// SIGTERM, then waits (up to 30 s) for the process to exit on its own.
fn stop_gracefully(mut server: Server) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        if matches!(server.child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the worker did not stop within 30 s of SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopping_worker_hands_its_run_back_and_a_cancel_reaches_the_worker_that_holds_a_run() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    // A long visibility timeout: only a hand-back lets another worker take the run soon.
    // Each answer takes 1.5 s: past the grace period, the run is still far from its end.
    let setup = QueueSetup::new(
        &redis,
        &pg,
        Duration::from_millis(1500),
        &[
            ("AETHERFLOW_QUEUE__VISIBILITY_SECS", "120"),
            ("AETHERFLOW_SERVER__SHUTDOWN_GRACE_SECS", "1"),
        ],
    )
    .await;
    let api = setup.api();
    let first = setup.worker();
    let id = setup.submit(&api, &chain_plan(4)).await;
    setup.upstream.wait_asked(2).await;
    // SIGTERM: the run does not end within the 1 s grace, so it is handed back.
    let stopped = std::time::Instant::now();
    stop_gracefully(first);
    let handed_back = setup.run(&api, &id).await;
    assert_eq!(handed_back["status"], "queued", "{handed_back}");
    assert!(
        setup.upstream.asked(4) == 0,
        "the run was stopped before its end"
    );
    let _second = setup.worker();
    let run = setup.wait_final(&api, &id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        stopped.elapsed() < Duration::from_secs(60),
        "taken up at once, not after the visibility timeout"
    );
    assert_eq!(setup.upstream.asked(1), 1, "step 1 was not sent again");

    // A cancel sent to the API replica reaches the worker running the run.
    let slow = setup.submit(&api, &numbered_chain(11, 8)).await;
    setup.upstream.wait_asked(12).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs/{slow}/cancel", api.base))
        .bearer_auth(&setup.key)
        .send()
        .await
        .expect("cancel");
    assert_eq!(r.status(), 202);
    let run = setup.wait_final(&api, &slow, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(setup.upstream.asked(18), 0, "the last step never started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_run_queue_answers_503_with_retry_after() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    let setup = QueueSetup::new(
        &redis,
        &pg,
        Duration::ZERO,
        &[("AETHERFLOW_QUEUE__MAX_LEN", "2")],
    )
    .await;
    let api = setup.api();
    // No worker: the queue fills.
    let first = setup.submit(&api, &chain_plan(1)).await;
    setup.submit(&api, &chain_plan(1)).await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs", api.base))
        .bearer_auth(&setup.key)
        .json(&json!({"plan": chain_plan(1)}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 503);
    assert!(
        r.headers().get("retry-after").is_some(),
        "{:?}",
        r.headers()
    );
    let body: Value = r.json().await.expect("json");
    assert!(body.to_string().contains("already queued"), "{body}");
    // A worker drains it.
    let _worker = setup.worker();
    let run = setup
        .wait_final(&api, &first, Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_runs_from_the_api_request_through_the_queue_to_the_worker() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(pg) = aetherflow_server::testing::TestPostgres::start() else {
        return;
    };
    let collector = support::otlp_collector().await;
    let endpoint = collector.uri();
    let setup = QueueSetup::new(
        &redis,
        &pg,
        Duration::ZERO,
        &[
            ("AETHERFLOW_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("AETHERFLOW_TELEMETRY__PROTOCOL", "http/json"),
            ("AETHERFLOW_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
        ],
    )
    .await;
    let api = setup.api();
    let _worker = setup.worker();
    let trace_id = "5cf92f3577b34da6a3ce929d0e0e4737";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs?wait=60", api.base))
        .bearer_auth(&setup.key)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"plan": chain_plan(2)}))
        .send()
        .await
        .expect("submit");
    assert_eq!(r.status(), 200, "ended within the wait");
    let run: Value = r.json().await.expect("json");
    assert_eq!(run["status"], "succeeded", "{run}");
    let support::RunSpans {
        http,
        job,
        run: run_span,
        steps,
        attempts,
    } = support::run_spans(&collector, trace_id, 2).await;
    assert_eq!(attempts.len(), 2, "one attempt per step");
    assert_eq!(support::span_attr(&http, "service.name"), "aetherflow-api");
    assert_eq!(
        support::span_attr(&job, "service.name"),
        "aetherflow-worker",
        "the job ran in the worker process"
    );
    assert_eq!(
        job.2, http.1,
        "the worker's job continues the request that queued it"
    );
    assert_eq!(
        support::span_attr(&job, "run.id"),
        run["id"].as_str().unwrap_or_default()
    );
    assert_eq!(run_span.2, job.1, "the engine's run is a child of the job");
    for step in &steps {
        assert_eq!(step.2, run_span.1, "steps are children of the run");
        assert_eq!(
            support::span_attr(step, "service.name"),
            "aetherflow-worker"
        );
    }
    for attempt in &attempts {
        assert!(
            steps.iter().any(|s| s.1 == attempt.2),
            "attempts are children of their step"
        );
        assert_eq!(
            support::span_attr(attempt, "gen_ai.request.model"),
            "llama3.2"
        );
    }
}
