//! End-to-end tests of `aetherflow-api`: the real binary on a free loopback port.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra_env: &[(&str, &str)]) -> Server {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"));
    cmd.env_clear()
        .current_dir(dir)
        .args(["--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reads address");
    let base = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    Server { child, base }
}

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

#[tokio::test]
async fn plans_are_validated_with_positions() {
    let server = start(&[]);
    let client = reqwest::Client::new();
    let good = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/todo-api/plan.json"),
    )
    .expect("example plan");
    let r = client
        .post(format!("{}/v1/plans/validate", server.base))
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
        .header("content-type", "application/yaml")
        .body("task_id: t\ndescription: d\nsteps:\n  - id: a\n    description: x\n    type: analysis\n    complexity: high\n")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["valid"], false);
    assert_eq!(body["position"]["line"], 7);
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("steps[0].complexity")
    );
}

#[tokio::test]
async fn oversized_bodies_are_refused() {
    let server = start(&[("AETHERFLOW_SERVER__MAX_BODY_BYTES", "1024")]);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/plans/validate", server.base))
        .header("content-type", "application/json")
        .body(vec![b' '; 4096])
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
}

#[tokio::test]
async fn other_content_types_are_refused() {
    let server = start(&[]);
    let r = reqwest::Client::new()
        .post(format!("{}/v1/plans/validate", server.base))
        .header("content-type", "text/html")
        .body("<p>")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 415);
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

fn runtime_dir() -> String {
    aetherflow_sandbox::default_runtime_dir()
        .to_string_lossy()
        .into_owned()
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
