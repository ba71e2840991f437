//! Jobs per second through the Redis queue, with 1 and then 2 `aetherflow-api worker`
//! processes: one API replica (queue on, the offline mock provider answering at once), a
//! throwaway Redis and PostgreSQL (Debian's `redis-server` and `postgres`), and `BENCH_JOBS`
//! runs (default 200) of a three-step analysis plan submitted by 16 concurrent clients. Measured
//! from the first submission to the last run recorded as ended (the queue empty: a job is
//! acknowledged only after its run's end is stored); each configuration `BENCH_ROUNDS` times
//! (default 3), the median reported. The response cache is off, so every step is answered. `BENCH_LATENCY_MS` gives the mock a latency (default 0), to
//! see the scaling when the provider, not this machine's CPU, is the bottleneck.
//!
//!   cargo bench -p aetherflow-api --bench workers
//!   BENCH_LATENCY_MS=100 BENCH_JOBS=60 cargo bench -p aetherflow-api --bench workers
//!
//! Needs the sandbox runtime (scripts/fetch-sandbox-runtime.py), `redis-server` and PostgreSQL.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aetherflow_redis::testing::TestRedis;
use aetherflow_server::testing::TestPostgres;

struct Process(Child, String);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn spawn(dir: &std::path::Path, env: &[(String, String)], args: &[&str]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"))
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("aetherflow-api starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("reads its address");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Process(child, base)
}

fn plan() -> serde_json::Value {
    serde_json::json!({
        "task_id": "bench",
        "description": "Queue throughput",
        "steps": [
            {"id": "a", "description": "Look at the layout", "type": "analysis"},
            {"id": "b", "description": "Look at the tests", "type": "analysis", "dependencies": ["a"]},
            {"id": "c", "description": "Sum it up", "type": "analysis", "dependencies": ["b"]}
        ]
    })
}

/// Seconds from the first submission of `jobs` runs to the queue being empty.
async fn round(
    redis: &TestRedis,
    pg: &TestPostgres,
    dir: &std::path::Path,
    key: &str,
    workers: usize,
    jobs: usize,
    round: usize,
) -> (f64, f64) {
    let namespace = format!("{}-w{workers}-r{round}", redis.namespace());
    let latency = std::env::var("BENCH_LATENCY_MS").unwrap_or_else(|_| "0".into());
    let runtime = aetherflow_sandbox::default_runtime_dir()
        .to_string_lossy()
        .into_owned();
    let env: Vec<(String, String)> = [
        ("AETHERFLOW_SERVER__OFFLINE", "true"),
        ("AETHERFLOW_SERVER__WORKSPACE_ROOTS", "ws"),
        ("AETHERFLOW_SERVER__RATE_PER_MINUTE", "1000000"),
        ("AETHERFLOW_SERVER__IP_RATE_PER_MINUTE", "1000000"),
        ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
        ("AETHERFLOW_SERVER__STORE_URL", pg.url()),
        ("AETHERFLOW_REDIS__URL", redis.url()),
        ("AETHERFLOW_REDIS__NAMESPACE", namespace.as_str()),
        ("AETHERFLOW_QUEUE__ENABLED", "true"),
        ("AETHERFLOW_CACHE__ENABLED", "false"),
        ("AETHERFLOW_QUEUE__MAX_LEN", "100000"),
        ("AETHERFLOW_MOCK__LATENCY_MS", latency.as_str()),
        ("AETHERFLOW_LOG__LEVEL", "warn"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let api = spawn(dir, &env, &[]);
    let pool: Vec<Process> = (0..workers)
        .map(|_| spawn(dir, &env, &["worker"]))
        .collect();
    let queue = aetherflow_redis::queue::RedisQueue::new(
        aetherflow_redis::Shared::connect(&aetherflow_redis::RedisSettings {
            namespace: namespace.clone(),
            ..redis.settings()
        })
        .expect("redis"),
        "runs",
        100_000,
        Duration::from_secs(60),
    );
    let client = reqwest::Client::new();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let submitters: Vec<_> = (0..16)
        .map(|_| {
            let (client, next, base, key) = (
                client.clone(),
                Arc::clone(&next),
                api.1.clone(),
                key.to_owned(),
            );
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < jobs {
                    let r = client
                        .post(format!("{base}/v1/runs"))
                        .bearer_auth(&key)
                        .json(&serde_json::json!({"plan": plan()}))
                        .send()
                        .await
                        .expect("submit");
                    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
                    let run: serde_json::Value = r.json().await.expect("json");
                    ids.push(run["id"].as_str().unwrap_or_default().to_owned());
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::new();
    for s in submitters {
        ids.extend(s.await.expect("submitter"));
    }
    let submitted = started.elapsed().as_secs_f64();
    while !queue.is_empty().await.expect("redis") {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let done = started.elapsed().as_secs_f64();
    // Every run ended well (outside the timing).
    for id in &ids {
        let run: serde_json::Value = client
            .get(format!("{}/v1/runs/{id}", api.1))
            .bearer_auth(key)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    drop(pool);
    drop(api);
    (submitted, done)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let jobs: usize = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let (Some(redis), Some(pg)) = (TestRedis::start(), TestPostgres::start()) else {
        eprintln!(
            "needs redis-server and PostgreSQL (Debian: apt-get install redis-server postgresql)"
        );
        std::process::exit(2);
    };
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir_all(dir.path().join("ws")).expect("workspace");
    let out = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"))
        .env_clear()
        .env("AETHERFLOW_SERVER__STORE_URL", pg.url())
        .current_dir(dir.path())
        .args([
            "keys",
            "create",
            "--name",
            "bench",
            "--scopes",
            "runs:write,runs:read",
        ])
        .output()
        .expect("keys");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned();
    let latency = std::env::var("BENCH_LATENCY_MS").unwrap_or_else(|_| "0".into());
    println!(
        "{jobs} runs of a 3-step plan, mock provider latency {latency} ms, 16 submitting clients, 2 runs at once per worker; median of {rounds}"
    );
    let mut rates = Vec::new();
    for workers in [1, 2] {
        let mut totals = Vec::new();
        let mut submits = Vec::new();
        for r in 0..rounds {
            let (submitted, done) = round(&redis, &pg, dir.path(), &key, workers, jobs, r).await;
            submits.push(submitted);
            totals.push(done);
        }
        let total = median(totals);
        let rate = jobs as f64 / total;
        rates.push(rate);
        println!(
            "workers={workers}: {rate:.1} runs/s ({jobs} runs ended in {total:.2} s; all submitted after {:.2} s)",
            median(submits)
        );
    }
    println!("2 workers / 1 worker: {:.2}x", rates[1] / rates[0]);
}
