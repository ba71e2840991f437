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
