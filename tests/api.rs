//! End-to-end tests of `aetherflow-api`: the real binary on a free loopback port.

mod support;

use std::process::Command;

use support::{Server, create_key, keys, runtime_dir, start, start_in};

#[tokio::test]
async fn health_answers() {
    let server = start(&[]);
    let r = reqwest::get(format!("{}/healthz", server.base))
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ok");
}

/// A server in a fresh folder, with a key of `scopes`.
fn start_with_key(scopes: &str, extra_env: &[(&str, &str)]) -> (Server, String) {
    let dir = tempfile::tempdir().expect("dir");
    let key = create_key(dir.path(), scopes);
    let mut server = start_in(dir.path(), extra_env);
    server._keep = Some(dir);
    (server, key)
}

#[tokio::test]
async fn plans_are_validated_with_positions_for_key_holders() {
    let (server, key) = start_with_key("runs:read", &[]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/plans/validate", server.base))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(
        r.status(),
        401,
        "validation needs a key like every /v1 call"
    );
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo-api/plan.json"),
    )
    .expect("example plan");
    let r = client
        .post(format!("{}/v1/plans/validate", server.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(good)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["valid"], true);
    assert_eq!(body["steps"], 5);

    let r = client
        .post(format!("{}/v1/plans/validate", server.base))
        .bearer_auth(&key)
        .header("content-type", "application/yaml")
        .body("task_id: t\ndescription: d\nsteps:\n  - id: a\n    description: x\n    type: analysis\n    complexity: high\n")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["valid"], false);
    assert_eq!(body["position"]["line"], 7);
    assert_eq!(body["error"]["code"], "invalid");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("steps[0].complexity")
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (server, key) = start_with_key(
        "runs:read",
        &[("AETHERFLOW_SERVER__MAX_BODY_BYTES", "1024")],
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/plans/validate", server.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn other_content_types_are_refused() {
    let (server, key) = start_with_key("runs:read", &[]);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/plans/validate", server.base))
        .bearer_auth(&key)
        .header("content-type", "text/html")
        .body("<p>")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 415);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn health_reveals_nothing_but_liveness() {
    let server = start(&[]);
    let r = reqwest::get(format!("{}/health", server.base))
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn ready_says_what_is_missing_and_turns_ready_when_it_is_there() {
    let empty = tempfile::tempdir().expect("dir");
    let missing = empty.path().to_string_lossy().into_owned();
    let server = start(&[("AETHERFLOW_SANDBOX_RUNTIME", &missing)]);
    let r = reqwest::get(format!("{}/ready", server.base))
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["ready"], false);
    assert_eq!(body["checks"]["sandbox_runtime"], "missing");
    assert_eq!(body["checks"]["providers"], "none configured");
    let fixes = body["checks"]["fix"].to_string();
    assert!(fixes.contains("fetch-sandbox-runtime.py"), "{fixes}");

    // With a provider but no runtime the server still starts, and says what is missing.
    let server = start(&[
        ("AETHERFLOW_SANDBOX_RUNTIME", &missing),
        ("DEEPSEEK_API_KEY", "sk-test-not-a-real-key"),
    ]);
    let r = reqwest::get(format!("{}/ready", server.base))
        .await
        .expect("request");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["checks"]["sandbox_runtime"], "missing");
    assert_eq!(body["checks"]["providers"], "ok");

    let runtime = runtime_dir();
    let server = start(&[
        ("AETHERFLOW_SANDBOX_RUNTIME", &runtime),
        ("DEEPSEEK_API_KEY", "sk-test-not-a-real-key"),
    ]);
    let r = reqwest::get(format!("{}/ready", server.base))
        .await
        .expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("sk-test"), "{text}");
}

#[tokio::test]
async fn the_healthcheck_command_probes_a_running_server() {
    let server = start(&[]);
    let ok = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"))
        .env_clear()
        .args(["healthcheck", "--url", &server.base])
        .output()
        .expect("runs");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    drop(server);

    // Nothing listens on this port any more: unhealthy, non-zero, with the URL in the message.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let bad = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"))
        .env_clear()
        .env("AETHERFLOW_SERVER__BIND", format!("0.0.0.0:{port}"))
        .args(["healthcheck", "--timeout-ms", "1000"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}/health")), "{err}");
}

/// A server that runs plans offline (mock provider) in `<dir>/ws`, with its sandbox runtime.
fn run_server(dir: &std::path::Path, extra: &[(&str, &str)]) -> Server {
    let example =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo-api/workspace");
    if !dir.join("ws").exists() {
        copy_tree(&example, &dir.join("ws"));
    }
    let runtime = runtime_dir();
    let mut env = vec![
        ("AETHERFLOW_SERVER__OFFLINE", "true"),
        ("AETHERFLOW_SERVER__WORKSPACE_ROOTS", "ws"),
        ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
    ];
    env.extend_from_slice(extra);
    start_in(dir, &env)
}

fn example_plan_json() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../examples/todo-api/plan.json"),
        )
        .expect("example plan"),
    )
    .expect("json")
}

#[tokio::test]
async fn keys_are_created_once_listed_without_secrets_and_revoked() {
    let dir = tempfile::tempdir().expect("dir");
    let out = keys(
        dir.path(),
        &[
            "create",
            "--name",
            "ci",
            "--scopes",
            "runs:read,scan",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        key.starts_with(&format!("afk_{id}_")) && key.len() > 70,
        "{key}"
    );
    assert_eq!(created["scopes"], serde_json::json!(["runs:read", "scan"]));

    let listed = keys(dir.path(), &["list", "--json"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        text.contains(&id) && !text.contains(&key[id.len() + 5..]),
        "{text}"
    );
    let db = std::fs::read(dir.path().join("aetherflow-data/aetherflow.db")).expect("db");
    let secret = &key[id.len() + 5..];
    assert!(
        !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the key is stored in clear"
    );

    let bad = keys(
        dir.path(),
        &["create", "--name", "x", "--scopes", "runs:delete"],
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("runs:write"));

    // A running server refuses a key revoked by another process within a second.
    let server = start_in(dir.path(), &[]);
    let client = reqwest::Client::new();
    let validate = || {
        client
            .post(format!("{}/v1/plans/validate", server.base))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    assert_eq!(
        validate().await.expect("request").status(),
        422,
        "the key works"
    );
    assert!(keys(dir.path(), &["revoke", &id]).status.success());
    let started = std::time::Instant::now();
    loop {
        let status = validate().await.expect("request").status();
        if status == 401 {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "still {status} after the revocation"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(server);
    let again = keys(dir.path(), &["revoke", &id]);
    assert!(
        !again.status.success(),
        "a revoked key cannot be revoked twice"
    );
}

#[tokio::test]
async fn runs_need_a_key_and_the_right_scope() {
    let dir = tempfile::tempdir().expect("dir");
    let reader = create_key(dir.path(), "runs:read");
    let server = run_server(dir.path(), &[]);
    let client = reqwest::Client::new();
    let body = serde_json::json!({"plan": example_plan_json()});
    let url = format!("{}/v1/runs", server.base);

    let none = client.post(&url).json(&body).send().await.expect("request");
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["x-content-type-options"], "nosniff");
    assert_eq!(none.headers()["cache-control"], "no-store");
    let err: serde_json::Value = none.json().await.expect("json");
    assert_eq!(err["error"]["code"], "unauthorized");

    let forged = format!("afk_{}_{}", "0".repeat(12), "0".repeat(64));
    for key in [forged.as_str(), "sk-not-ours", ""] {
        let r = client
            .post(&url)
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{key}");
    }
    let r = client
        .post(&url)
        .bearer_auth(&reader)
        .json(&body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 403);
    let err: serde_json::Value = r.json().await.expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("runs:write")
    );
    let r = client
        .get(&url)
        .bearer_auth(&reader)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_run_is_accepted_executed_and_reported_to_its_own_key_only() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let other = create_key(dir.path(), "runs:write,runs:read");
    let admin = create_key(dir.path(), "admin");
    let server = run_server(dir.path(), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/runs", server.base);

    let r = client
        .post(format!("{url}?wait=60"))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"plan": example_plan_json(), "workflow": "proto"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200, "finished within the wait");
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    let run: serde_json::Value = r.json().await.expect("json");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["workflow"], "proto");
    assert_eq!(
        run["reports"].as_array().map(Vec::len),
        Some(2),
        "a pass and its double-check"
    );
    assert_eq!(run["reports"][0]["totals"]["succeeded"], 5);
    assert_eq!(
        location,
        format!("/v1/runs/{}", run["id"].as_str().expect("id"))
    );
    // The run changed the server's workspace, and only there.
    assert!(server.dir.join("ws/app/repository.py").is_file());

    let mine = client
        .get(format!("{}{location}", server.base))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("r");
    assert_eq!(mine.status(), 200);
    let theirs = client
        .get(format!("{}{location}", server.base))
        .bearer_auth(&other)
        .send()
        .await
        .expect("r");
    assert_eq!(
        theirs.status(),
        404,
        "another key's run does not exist for it"
    );
    let all = client
        .get(format!("{}{location}", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("r");
    assert_eq!(all.status(), 200);

    // Without waiting: 202 and a run to poll; the list filters by status and pages.
    let r = client
        .post(&url)
        .bearer_auth(&writer)
        .json(&serde_json::json!({"plan": example_plan_json(), "dry_run": true}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 202);
    let queued: serde_json::Value = r.json().await.expect("json");
    let id = queued["id"].as_str().expect("id").to_owned();
    let mut status = String::new();
    for _ in 0..300 {
        let r: serde_json::Value = get_json(&client, format!("{url}/{id}"), &writer).await;
        status = r["status"].as_str().unwrap_or_default().to_owned();
        if status != "queued" && status != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "succeeded");
    let page: serde_json::Value =
        get_json(&client, format!("{url}?status=succeeded&limit=1"), &writer).await;
    assert_eq!(page["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["runs"][0]["id"], id.as_str(), "newest first");
    let next = page["next"].as_str().expect("a next page").to_owned();
    let page2: serde_json::Value = get_json(
        &client,
        format!("{url}?status=succeeded&limit=1&before={next}"),
        &writer,
    )
    .await;
    assert_eq!(page2["runs"][0]["id"], run["id"]);
    let theirs: serde_json::Value = get_json(&client, &url, &other).await;
    assert_eq!(theirs["runs"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn bad_requests_get_json_errors_that_say_what_to_fix() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(dir.path(), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/runs", server.base);
    let post = |body: serde_json::Value| client.post(&url).bearer_auth(&writer).json(&body).send();
    let mut escaping = example_plan_json();
    escaping["steps"][1]["context"]["files"] = serde_json::json!(["../../outside.py"]);
    for (body, status, says) in [
        (serde_json::json!({"plan": {"task_id": "t"}}), 422, "steps"),
        (serde_json::json!({"plan": escaping}), 422, "outside.py"),
        (
            serde_json::json!({"plan": example_plan_json(), "workflow": "yolo"}),
            400,
            "direct, proto or prod",
        ),
        (
            serde_json::json!({"plan": example_plan_json(), "workspace": "../.."}),
            400,
            "workspace roots",
        ),
        (
            serde_json::json!({"plan": example_plan_json(), "budget_usd": "lots"}),
            400,
            "budget_usd",
        ),
        (
            serde_json::json!({"plan": example_plan_json(), "surprise": 1}),
            400,
            "surprise",
        ),
    ] {
        let r = post(body).await.expect("request");
        assert_eq!(r.status(), status);
        let err: serde_json::Value = r.json().await.expect("json");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{message}");
        assert!(
            !message.contains(&server.dir.to_string_lossy().into_owned()),
            "a server path leaked: {message}"
        );
    }
    let missing = client
        .get(format!("{url}/01900000-0000-7000-8000-000000000000"))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("request");
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn a_run_cut_off_by_a_restart_is_marked_interrupted_and_can_be_cancelled_before() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let slow = [("AETHERFLOW_MOCK__LATENCY_MS", "3000")];
    let client = reqwest::Client::new();
    let submit = |base: String| {
        let client = client.clone();
        let writer = writer.clone();
        async move {
            let r = client
                .post(format!("{base}/v1/runs"))
                .bearer_auth(&writer)
                .json(&serde_json::json!({"plan": example_plan_json()}))
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 202);
            let v: serde_json::Value = r.json().await.expect("json");
            v["id"].as_str().expect("id").to_owned()
        }
    };

    let server = run_server(dir.path(), &slow);
    let cancelled = submit(server.base.clone()).await;
    let r = client
        .post(format!("{}/v1/runs/{cancelled}/cancel", server.base))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 202);
    let interrupted = submit(server.base.clone()).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    drop(server); // killed, as by a crash or an OOM kill

    let server = run_server(dir.path(), &[]);
    let get = |id: String| {
        let client = client.clone();
        let writer = writer.clone();
        let base = server.base.clone();
        async move {
            client
                .get(format!("{base}/v1/runs/{id}"))
                .bearer_auth(&writer)
                .send()
                .await
                .expect("r")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    let run = get(interrupted).await;
    assert_eq!(run["status"], "interrupted", "{run}");
    assert!(
        run["error"]
            .as_str()
            .unwrap_or_default()
            .contains("server stopped"),
        "{run}"
    );
    let run = get(cancelled.clone()).await;
    assert!(
        run["status"] == "cancelled" || run["status"] == "interrupted",
        "{run}"
    );
    let r = client
        .post(format!("{}/v1/runs/{cancelled}/cancel", server.base))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 409, "a finished run cannot be cancelled");
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Reads a whole SSE body into (id, event, data) triples.
fn parse_sse(body: &str) -> Vec<(Option<u64>, String, serde_json::Value)> {
    body.split("\n\n")
        .filter(|m| !m.trim().is_empty())
        .map(|m| {
            let mut id = None;
            let mut event = String::new();
            let mut data = serde_json::Value::Null;
            for line in m.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_owned();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).expect("data is JSON");
                }
            }
            (id, event, data)
        })
        .collect()
}

#[tokio::test]
async fn run_events_stream_live_in_order_and_resume_after_the_last_event_id() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(dir.path(), &[("AETHERFLOW_MOCK__LATENCY_MS", "150")]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/runs", server.base))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"plan": example_plan_json()}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 202);
    let run: serde_json::Value = r.json().await.expect("json");
    let events_url = format!(
        "{}/v1/runs/{}/events",
        server.base,
        run["id"].as_str().expect("id")
    );

    // Subscribed while the run is going: the stream follows it to the end.
    let r = client
        .get(&events_url)
        .bearer_auth(&writer)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let events = parse_sse(&r.text().await.expect("body"));
    let (last, rest) = events.split_last().expect("events");
    assert_eq!(last.1, "end");
    assert_eq!(last.2["status"], "succeeded");
    let ids: Vec<u64> = rest.iter().map(|e| e.0.expect("an id")).collect();
    assert_eq!(
        ids,
        (1..=rest.len() as u64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert_eq!(rest[0].1, "run_started");
    assert_eq!(rest.last().expect("finished").1, "run_finished");
    assert_eq!(
        rest.iter().filter(|e| e.1 == "step_finished").count(),
        5,
        "one per step"
    );

    // Resuming after event 3 replays from 4, from the store.
    let r = client
        .get(&events_url)
        .bearer_auth(&writer)
        .header("Last-Event-ID", "3")
        .send()
        .await
        .expect("request");
    let resumed = parse_sse(&r.text().await.expect("body"));
    assert_eq!(resumed[0].0, Some(4));
    assert_eq!(resumed.len(), events.len() - 3);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(
        dir.path(),
        &[
            ("AETHERFLOW_MOCK__LATENCY_MS", "2000"),
            ("AETHERFLOW_SERVER__WORKERS", "1"),
            ("AETHERFLOW_SERVER__QUEUE", "1"),
        ],
    );
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = client
            .post(format!("{}/v1/runs", server.base))
            .bearer_auth(&writer)
            .json(&serde_json::json!({"plan": example_plan_json(), "dry_run": true}))
            .send()
            .await
            .expect("request");
        statuses.push(r.status().as_u16());
        if r.status() == 503 {
            assert!(r.headers().contains_key("retry-after"));
            let err: serde_json::Value = r.json().await.expect("json");
            assert_eq!(err["error"]["code"], "busy");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        statuses,
        [202, 202, 503],
        "one running, one waiting, then full"
    );
}

#[tokio::test]
async fn scan_checks_code_as_a_service_in_bandit_json_or_sarif() {
    let dir = tempfile::tempdir().expect("dir");
    let scanner = create_key(dir.path(), "scan");
    let reader = create_key(dir.path(), "runs:read");
    let server = start_in(dir.path(), &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/scan", server.base);
    let body = serde_json::json!({"files": [
        {"path": "bad.py", "content": "import subprocess\nsubprocess.call(input(), shell=True)\n"},
        {"path": "ok.py", "content": "import json\nprint(json.dumps({'a': 1}))\n"},
    ]});
    let r = client
        .post(&url)
        .bearer_auth(&reader)
        .json(&body)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 403, "scan needs its own scope");

    let r = client
        .post(&url)
        .bearer_auth(&scanner)
        .json(&body)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-aetherflow-blocked"], "1");
    let report: serde_json::Value = r.json().await.expect("json");
    let ids: Vec<&str> = report["results"]
        .as_array()
        .expect("bandit results")
        .iter()
        .filter_map(|f| f["test_id"].as_str())
        .collect();
    assert!(ids.contains(&"B602"), "{report}");
    assert!(
        report["results"]
            .as_array()
            .expect("results")
            .iter()
            .all(|f| f["filename"] == "bad.py")
    );

    let mut sarif_body = body.clone();
    sarif_body["format"] = serde_json::json!("sarif");
    let r = client
        .post(&url)
        .bearer_auth(&scanner)
        .json(&sarif_body)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let sarif: serde_json::Value = r.json().await.expect("json");
    assert_eq!(sarif["version"], "2.1.0");

    // A policy in the request: subprocess allowed, shell=True still blocks.
    let mut relaxed = body.clone();
    relaxed["policy"] = serde_json::json!({"imports": {"allow": ["subprocess"]}});
    let r = client
        .post(&url)
        .bearer_auth(&scanner)
        .json(&relaxed)
        .send()
        .await
        .expect("r");
    assert_eq!(r.headers()["x-aetherflow-blocked"], "1");
    let mut bad = body.clone();
    bad["policy"] = serde_json::json!({"disable_rules": ["B999"]});
    let r = client
        .post(&url)
        .bearer_auth(&scanner)
        .json(&bad)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 400);
    let r = client
        .post(&url)
        .bearer_auth(&scanner)
        .json(&serde_json::json!({"files": []}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn each_key_and_each_keyless_client_has_its_own_rate_limit() {
    let dir = tempfile::tempdir().expect("dir");
    let one = create_key(dir.path(), "runs:read");
    let two = create_key(dir.path(), "runs:read");
    let server = start_in(
        dir.path(),
        &[
            ("AETHERFLOW_SERVER__RATE_PER_MINUTE", "3"),
            ("AETHERFLOW_SERVER__IP_RATE_PER_MINUTE", "2"),
        ],
    );
    let client = reqwest::Client::new();
    let runs = format!("{}/v1/runs", server.base);
    for remaining in ["2", "1", "0"] {
        let r = client.get(&runs).bearer_auth(&one).send().await.expect("r");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(r.headers()["x-ratelimit-remaining"], remaining);
    }
    let r = client.get(&runs).bearer_auth(&one).send().await.expect("r");
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("secs");
    assert!((1..=20).contains(&wait), "{wait}");
    let err: serde_json::Value = r.json().await.expect("json");
    assert_eq!(err["error"]["code"], "rate_limited");
    let r = client.get(&runs).bearer_auth(&two).send().await.expect("r");
    assert_eq!(r.status(), 200, "another key has its own bucket");

    // Without a valid key the client's IP is the bucket: probes and guesses alike.
    let health = format!("{}/health", server.base);
    assert_eq!(client.get(&health).send().await.expect("r").status(), 200);
    let bad = client
        .get(&runs)
        .bearer_auth("afk_guess")
        .send()
        .await
        .expect("r");
    assert_eq!(bad.status(), 401);
    let limited = client
        .get(&runs)
        .bearer_auth("afk_guess2")
        .send()
        .await
        .expect("r");
    assert_eq!(limited.status(), 429, "guessing keys is throttled");
    assert_eq!(client.get(&health).send().await.expect("r").status(), 429);
    let r = client.get(&runs).bearer_auth(&two).send().await.expect("r");
    assert_eq!(
        r.status(),
        200,
        "a valid key is not held back by its IP's bucket"
    );
}

#[tokio::test]
async fn cors_allows_only_configured_origins_and_hosts_must_be_trusted() {
    let dir = tempfile::tempdir().expect("dir");
    let server = start_in(
        dir.path(),
        &[
            ("AETHERFLOW_SERVER__CORS_ORIGINS", "https://app.example.com"),
            (
                "AETHERFLOW_SERVER__ALLOWED_HOSTS",
                "api.example.com,127.0.0.1",
            ),
        ],
    );
    let client = reqwest::Client::new();
    let runs = format!("{}/v1/runs", server.base);
    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, &runs)
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
    };
    let ok = preflight("https://app.example.com").await.expect("r");
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        !ok.headers()
            .contains_key("access-control-allow-credentials")
    );
    let refused = preflight("https://evil.example").await.expect("r");
    assert_ne!(refused.status(), 200);
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    let with_host = |host: &'static str, path: &str| {
        client
            .get(format!("{}{path}", server.base))
            .header("Host", host)
            .send()
    };
    let r = with_host("evil.example", "/v1/runs").await.expect("r");
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("allowed_hosts")
    );
    let r = with_host("api.example.com", "/v1/runs").await.expect("r");
    assert_eq!(r.status(), 401, "a trusted host reaches auth");
    let r = with_host("10.0.0.7:8080", "/health").await.expect("r");
    assert_eq!(r.status(), 200, "probes answer any host");
}

#[test]
fn a_wildcard_cors_origin_is_refused_at_start_up() {
    let dir = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"))
        .env_clear()
        .current_dir(dir.path())
        .env("AETHERFLOW_SERVER__CORS_ORIGINS", "*")
        .args(["--bind", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cors_origins") && err.contains("wildcard"),
        "{err}"
    );
}

#[tokio::test]
async fn execute_keeps_the_original_shape_inside_the_workspace_fence() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(dir.path(), &[]);
    std::fs::create_dir_all(dir.path().join("ws/plans")).expect("mkdir");
    std::fs::write(
        dir.path().join("ws/plans/plan.json"),
        example_plan_json().to_string(),
    )
    .expect("plan");
    let client = reqwest::Client::new();
    let url = format!("{}/execute", server.base);
    let post = |body: serde_json::Value| client.post(&url).bearer_auth(&writer).json(&body).send();

    let r = post(
        serde_json::json!({"plan_json": example_plan_json(), "workflow": "PROTO", "context": {}}),
    )
    .await
    .expect("r");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["task_id"], "todo-api-example");
    assert_eq!(body["results"].as_array().map(Vec::len), Some(5));
    assert_eq!(body["metrics"]["passes"], 2);
    assert_eq!(body["metrics"]["succeeded"], 5);
    assert_eq!(body["output_dir"], ".");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("5 of 5")
    );
    assert!(server.dir.join("ws/app/repository.py").is_file());
    let text = body.to_string();
    assert!(
        !text.contains(&server.dir.to_string_lossy().into_owned()),
        "a server path leaked"
    );

    let r = post(serde_json::json!({"plan_path": "plans/plan.json"}))
        .await
        .expect("r");
    assert_eq!(r.status(), 200);

    for (body, says) in [
        (
            serde_json::json!({"plan_path": "../../../etc/passwd"}),
            "workspace roots",
        ),
        (
            serde_json::json!({"plan_path": "/etc/passwd"}),
            "workspace roots",
        ),
        (
            serde_json::json!({"plan_json": example_plan_json(), "output_dir": "../elsewhere"}),
            "workspace roots",
        ),
        (
            serde_json::json!({"plan_json": example_plan_json(), "context": {"output_dir": "/tmp"}}),
            "workspace roots",
        ),
        (
            serde_json::json!({"plan_json": example_plan_json(), "plan_path": "plans/plan.json"}),
            "exactly one",
        ),
        (serde_json::json!({}), "exactly one"),
    ] {
        let r = post(body.clone()).await.expect("r");
        assert_eq!(r.status(), 400, "{body}");
        let err: serde_json::Value = r.json().await.expect("json");
        let message = err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.contains(says), "{message}");
    }
    let r = client
        .post(&url)
        .json(&serde_json::json!({"plan_path": "plans/plan.json"}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 401, "behind the same auth as /v1");
}

#[tokio::test]
async fn metrics_count_routes_runs_and_provider_calls_with_bounded_labels() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let admin = create_key(dir.path(), "admin");
    let server = run_server(dir.path(), &[]);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/runs?wait=60", server.base))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"plan": example_plan_json()}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let run: serde_json::Value = r.json().await.expect("json");
    // A user-chosen path must not become a label.
    let _ = client
        .get(format!(
            "{}/v1/runs/user-supplied-{}",
            server.base,
            "x".repeat(20)
        ))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("r");
    let _ = client
        .get(format!("{}/no/such/route/abc123", server.base))
        .send()
        .await
        .expect("r");

    let url = format!("{}/metrics", server.base);
    assert_eq!(
        client
            .get(&url)
            .bearer_auth(&writer)
            .send()
            .await
            .expect("r")
            .status(),
        403
    );
    let r = client
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(
        text.contains(
            r#"aetherflow_http_requests_total{method="POST",route="/v1/runs",status="2xx"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/v1/runs/{id}""#), "{text}");
    assert!(text.contains(r#"route="unmatched""#), "{text}");
    assert!(
        !text.contains("user-supplied") && !text.contains("abc123"),
        "{text}"
    );
    assert!(
        !text.contains(run["id"].as_str().expect("id")),
        "no run id as a label"
    );
    assert!(
        text.contains(r#"aetherflow_runs_total{status="succeeded"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"aetherflow_provider_attempts_total{model="mock-1",outcome="ok",provider="mock"}"#
        ),
        "{text}"
    );
    assert!(text.contains("aetherflow_runs_live 0"), "{text}");
}

#[tokio::test]
async fn each_key_has_a_daily_spend_cap() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let deepseek = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "x", "object": "chat.completion", "model": "deepseek-v4-flash",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "# Report\n"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200}
        })))
        .mount(&deepseek)
        .await;
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    std::fs::create_dir_all(dir.path().join("ws")).expect("ws");
    let runtime = runtime_dir();
    let uri = deepseek.uri();
    let server = start_in(
        dir.path(),
        &[
            ("AETHERFLOW_SERVER__WORKSPACE_ROOTS", "ws"),
            ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
            ("DEEPSEEK_API_KEY", "sk-api-test-0000000000"),
            ("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", uri.as_str()),
            // An answer may cost up to ~2.3 m$ (8192 output tokens at $0.28/M): over the cap.
            ("AETHERFLOW_SERVER__KEY_DAY_USD", "0.001"),
        ],
    );
    let plan = serde_json::json!({"task_id": "capped", "description": "d", "steps": [
        {"id": "look", "description": "Look around", "type": "analysis"}]});
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs?wait=30", server.base))
        .bearer_auth(&writer)
        .json(&serde_json::json!({"plan": plan}))
        .send()
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let run: serde_json::Value = r.json().await.expect("json");
    assert_eq!(run["status"], "failed", "{run}");
    let step = &run["reports"][0]["steps"][0];
    assert_eq!(step["failure"], "budget_exceeded", "{step}");
    assert!(
        step["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("budget for API key"),
        "{step}"
    );
    assert!(
        deepseek
            .received_requests()
            .await
            .expect("recorded")
            .is_empty(),
        "nothing was sent"
    );
}

#[tokio::test]
async fn the_openapi_document_is_generated_from_the_code() {
    let server = start(&[]);
    let r = reqwest::get(format!("{}/openapi.json", server.base))
        .await
        .expect("r");
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.expect("json");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3."),
        "{doc}"
    );
    for path in [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/cancel",
        "/v1/runs/{id}/events",
        "/v1/scan",
        "/execute",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing: {}",
            doc["paths"]
        );
    }
    assert!(doc["paths"]["/v1/runs"]["post"]["responses"]["202"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(doc["components"]["schemas"]["RunRequest"]["properties"]["workflow"].is_object());
}

/// GET `url` with `key`, read as JSON.
async fn get_json(
    client: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    key: &str,
) -> serde_json::Value {
    client
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// One part of a form: `(name, filename, content type, bytes)`; the content type and file
/// name are whatever the client claims.
type FormPart<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body: its content type and bytes.
fn form(parts: &[FormPart<'_>]) -> (String, Vec<u8>) {
    let boundary = "----aetherflow-test-7d1c";
    let mut body = Vec::new();
    for (name, filename, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{name}\"");
        if let Some(f) = filename {
            disposition.push_str(&format!("; filename=\"{f}\""));
        }
        body.extend_from_slice(format!("{disposition}\r\n").as_bytes());
        if let Some(t) = content_type {
            body.extend_from_slice(format!("Content-Type: {t}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// A PNG header (signature and IHDR) of the given size, padded to `len` bytes.
fn png(width: u32, height: u32, len: usize) -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    b.extend_from_slice(&width.to_be_bytes());
    b.extend_from_slice(&height.to_be_bytes());
    b.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    b.resize(len.max(b.len()), 0);
    b
}

fn uploads_in(dir: &std::path::Path) -> Vec<String> {
    match std::fs::read_dir(dir.join("aetherflow-data/uploads")) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    }
}

#[tokio::test]
async fn designs_are_known_by_their_bytes_checked_stored_under_new_names_and_analysed() {
    let dir = tempfile::tempdir().expect("dir");
    let designer = create_key(dir.path(), "designer");
    let runner = create_key(dir.path(), "runs:write");
    let server = run_server(
        dir.path(),
        &[("AETHERFLOW_SERVER__UPLOAD_MAX_BYTES", "4096")],
    );
    let client = reqwest::Client::new();
    let post = |path: &str, key: &str, parts: &[FormPart<'_>]| {
        let (content_type, body) = form(parts);
        client
            .post(format!("{}{path}", server.base))
            .bearer_auth(key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let image = png(800, 600, 1024);

    // A key without the scope is refused before anything is read or stored.
    let r = post(
        "/v1/studio/designer/upload",
        &runner,
        &[("file", Some("a.png"), Some("image/png"), &image)],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 403);

    // A real PNG with a hostile name: stored under a generated name, analysed as JSON.
    let r = post(
        "/v1/studio/designer/upload",
        &designer,
        &[
            (
                "file",
                Some("../../etc/evil.png"),
                Some("application/octet-stream"),
                &image,
            ),
            ("notes", None, None, b"the login page"),
        ],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 201);
    let answer: serde_json::Value = r.json().await.expect("json");
    assert_eq!(answer["upload"]["content_type"], "image/png", "{answer}");
    assert_eq!(answer["upload"]["width"], 800);
    assert_eq!(answer["upload"]["height"], 600);
    assert_eq!(answer["upload"]["bytes"], 1024);
    let stored = answer["upload"]["file"].as_str().expect("file").to_owned();
    assert!(stored.ends_with(".png") && !stored.contains("evil") && !stored.contains('/'));
    assert_eq!(uploads_in(&server.dir), vec![stored.clone()]);
    let on_disk =
        std::fs::read(server.dir.join("aetherflow-data/uploads").join(&stored)).expect("stored");
    assert_eq!(on_disk, image);
    assert!(answer["analysis"].is_object(), "{answer}");
    assert!(answer["analysis"]["components"].is_array(), "{answer}");
    assert_eq!(answer["provider"], "mock");
    assert!(!server.dir.join("etc").exists());

    // The original tool's path answers the same way.
    let r = post(
        "/studio/designer/upload",
        &designer,
        &[("file", Some("b.jpg"), None, &image)],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 201);

    // HTML with a PNG name and type: refused for what it is, and nothing is stored.
    let html = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>";
    let r = post(
        "/v1/studio/designer/upload",
        &designer,
        &[("file", Some("design.png"), Some("image/png"), html)],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 415);
    let err: serde_json::Value = r.json().await.expect("json");
    assert_eq!(err["error"]["code"], "unsupported_media_type");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("HTML"),
        "{err}"
    );

    // An SVG with a script, or an event handler: refused.
    for svg in [
        r#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#,
        r#"<svg xmlns="http://www.w3.org/2000/svg"><rect onmouseover="alert(1)"/></svg>"#,
    ] {
        let r = post(
            "/v1/studio/designer/upload",
            &designer,
            &[("file", Some("d.svg"), Some("image/svg+xml"), svg.as_bytes())],
        )
        .await
        .expect("request");
        assert_eq!(r.status(), 422, "{svg}");
        let err: serde_json::Value = r.json().await.expect("json");
        assert_eq!(err["error"]["code"], "unsafe_upload");
    }
    // An inert SVG is analysed.
    let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="320" height="200"><rect width="100" height="30" fill="#7aca6a"/><text x="10" y="20">Sign in</text></svg>"##;
    let r = post(
        "/v1/studio/designer/upload",
        &designer,
        &[("file", Some("d.svg"), None, svg.as_bytes())],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 201);
    let answer: serde_json::Value = r.json().await.expect("json");
    assert_eq!(answer["upload"]["content_type"], "image/svg+xml");
    assert_eq!(answer["upload"]["width"], 320);

    // Over the size cap: 413, nothing stored.
    let big = png(100, 100, 8192);
    let r = post(
        "/v1/studio/designer/upload",
        &designer,
        &[("file", Some("big.png"), None, &big)],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 413);
    // Not a form, or no file: 415 and 400.
    let r = client
        .post(format!("{}/v1/studio/designer/upload", server.base))
        .bearer_auth(&designer)
        .header("content-type", "image/png")
        .body(image.clone())
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 415);
    let r = post(
        "/v1/studio/designer/upload",
        &designer,
        &[("notes", None, None, b"x")],
    )
    .await
    .expect("request");
    assert_eq!(r.status(), 400);
    assert_eq!(
        uploads_in(&server.dir).len(),
        3,
        "only the accepted designs are kept"
    );
}

#[tokio::test]
async fn a_plan_file_can_be_submitted_as_a_multipart_form() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(dir.path(), &[]);
    let client = reqwest::Client::new();
    let yaml = serde_norway::to_string(&example_plan_json()).expect("yaml");
    let (content_type, body) = form(&[
        (
            "plan",
            Some("plan.yaml"),
            Some("application/yaml"),
            yaml.as_bytes(),
        ),
        ("workflow", None, None, b"direct"),
        ("mode", None, None, b"fast"),
        ("dry_run", None, None, b"true"),
    ]);
    let r = client
        .post(format!("{}/v1/runs?wait=60", server.base))
        .bearer_auth(&writer)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let run: serde_json::Value = r.json().await.expect("json");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["reports"][0]["totals"]["succeeded"], 5);
    assert!(
        !server.dir.join("ws/app/repository.py").exists(),
        "a dry run leaves the workspace alone"
    );

    // A broken plan file is a 422 naming the problem; an unknown field a 400.
    let (content_type, body) = form(&[("plan", Some("plan.json"), None, b"{\"task_id\": \"x\"")]);
    let r = client
        .post(format!("{}/v1/runs", server.base))
        .bearer_auth(&writer)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 422);
    let (content_type, body) = form(&[
        ("plan", Some("plan.yaml"), None, yaml.as_bytes()),
        ("shell", None, None, b"rm -rf /"),
    ]);
    let r = client
        .post(format!("{}/v1/runs", server.base))
        .bearer_auth(&writer)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 400);
    let err: serde_json::Value = r.json().await.expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("shell"),
        "{err}"
    );
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().expect("dir");
    let designer = create_key(dir.path(), "designer");
    let chat = create_key(dir.path(), "chat");
    let server = run_server(
        dir.path(),
        &[("AETHERFLOW_SERVER__REQUEST_TIMEOUT_SECS", "1")],
    );
    let address = server.base.trim_start_matches("http://").to_owned();

    // A request head that never ends.
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        socket.read_to_end(&mut answer),
    )
    .await;
    assert!(read.is_ok(), "the server closed the connection");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );

    // A form body that trickles: 408 within the deadline.
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/studio/designer/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {designer}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 5000\r\n\r\n--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nPNG"
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("answered before the test's own deadline")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");

    // A chat completion waits on providers, but its body still has to arrive in time.
    let mut socket = tokio::net::TcpStream::connect(&address)
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {chat}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"model\": \"mock/mock-1\", "
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut answer))
        .await
        .expect("answered before the test's own deadline")
        .expect("read");
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn a_rotated_key_file_is_used_after_sighup_without_a_restart() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let deepseek = MockServer::start().await;
    let design = serde_json::json!({"title": "Sign in", "layout": null, "components": [], "colors": [], "typography": [], "notes": null});
    let ok = serde_json::json!({"id": "0b6c", "object": "chat.completion", "created": 1763990400, "model": "deepseek-v4-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": design.to_string()}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}});
    Mock::given(method("POST"))
        .and(path("/chat/completions"))
        .and(header("authorization", "Bearer sk-new-0002"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok))
        .mount(&deepseek)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": {"message": "Authentication Fails, Your api key: ****0001 is invalid", "type": "authentication_error", "param": null, "code": "invalid_request_error"}})))
        .mount(&deepseek)
        .await;

    let dir = tempfile::tempdir().expect("dir");
    let key = create_key(dir.path(), "designer");
    let key_file = dir.path().join("deepseek.key");
    std::fs::write(&key_file, "sk-old-0001\n").expect("key file");
    let runtime = runtime_dir();
    let key_file_s = key_file.to_string_lossy().into_owned();
    let server = start_in(
        dir.path(),
        &[
            ("AETHERFLOW_SANDBOX_RUNTIME", runtime.as_str()),
            ("DEEPSEEK_API_KEY_FILE", key_file_s.as_str()),
            (
                "AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL",
                deepseek.uri().as_str(),
            ),
            ("AETHERFLOW_SERVER__DESIGNER_PROVIDER", "deepseek"),
            ("AETHERFLOW_RETRY__MAX_ATTEMPTS", "1"),
        ],
    );
    let client = reqwest::Client::new();
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>Sign in</text></svg>"#;
    let upload = || {
        let (content_type, body) = form(&[("file", Some("d.svg"), None, svg.as_bytes())]);
        client
            .post(format!("{}/v1/studio/designer/upload", server.base))
            .bearer_auth(&key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let r = upload().await.expect("request");
    assert_eq!(r.status(), 502, "the old key is refused upstream");
    let err: serde_json::Value = r.json().await.expect("json");
    assert!(!err.to_string().contains("sk-old"), "{err}");

    std::fs::write(&key_file, "sk-new-0002\n").expect("rotate");
    let pid = server.child.id().to_string();
    let hup = Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .expect("kill");
    assert!(hup.success());
    let mut status = 0;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let r = upload().await.expect("the server survived SIGHUP");
        status = r.status().as_u16();
        if status == 201 {
            let answer: serde_json::Value = r.json().await.expect("json");
            assert_eq!(answer["provider"], "deepseek");
            assert_eq!(answer["analysis"]["title"], "Sign in");
            break;
        }
    }
    assert_eq!(status, 201, "the new key is in use");
}

#[tokio::test]
async fn sigterm_drains_then_cancels_running_work_within_the_grace_period() {
    let dir = tempfile::tempdir().expect("dir");
    let key = create_key(dir.path(), "runs:write,runs:read");
    let mut server = run_server(
        dir.path(),
        &[
            ("AETHERFLOW_SERVER__SHUTDOWN_GRACE_SECS", "3"),
            ("AETHERFLOW_MOCK__LATENCY_MS", "20000"),
        ],
    );
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs", server.base))
        .bearer_auth(&key)
        .json(&serde_json::json!({"plan": example_plan_json()}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 202);
    let id = r.json::<serde_json::Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let pid = server.child.id().to_string();
    let started = std::time::Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "still running long after the 3 s grace period"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert!(status.success(), "a clean exit: {status:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "running work was given time before it was cancelled"
    );
    // The run that was cut short is on record as cancelled, not lost.
    let server = run_server(dir.path(), &[]);
    let run = get_json(
        &reqwest::Client::new(),
        format!("{}/v1/runs/{id}", server.base),
        &key,
    )
    .await;
    assert_eq!(run["status"], "cancelled", "{run}");
}

#[tokio::test]
async fn a_run_is_traced_as_a_child_of_its_request_with_steps_and_attempts() {
    let collector = support::otlp_collector().await;
    let endpoint = collector.uri();
    let dir = tempfile::tempdir().expect("dir");
    let writer = create_key(dir.path(), "runs:write,runs:read");
    let server = run_server(
        dir.path(),
        &[
            ("AETHERFLOW_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("AETHERFLOW_TELEMETRY__PROTOCOL", "http/json"),
            ("AETHERFLOW_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
        ],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = reqwest::Client::new()
        .post(format!("{}/v1/runs?wait=60", server.base))
        .bearer_auth(&writer)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&serde_json::json!({"plan": example_plan_json()}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let run: serde_json::Value = r.json().await.expect("json");
    let steps = example_plan_json()["steps"].as_array().map_or(0, Vec::len);
    let support::RunSpans {
        http,
        job,
        run: run_span,
        steps: step_spans,
        attempts,
    } = support::run_spans(&collector, trace_id, steps).await;
    assert_eq!(
        job.2, http.1,
        "the job is a child of the request that submitted it"
    );
    assert_eq!(
        support::span_attr(&job, "run.id"),
        run["id"].as_str().unwrap_or_default()
    );
    assert_eq!(run_span.2, job.1, "the engine's run is a child of the job");
    for step in &step_spans {
        assert_eq!(step.2, run_span.1, "steps are children of the run");
    }
    for attempt in &attempts {
        assert!(
            step_spans.iter().any(|s| s.1 == attempt.2),
            "attempts are children of their step"
        );
        assert_eq!(support::span_attr(attempt, "gen_ai.system"), "mock");
    }
}
