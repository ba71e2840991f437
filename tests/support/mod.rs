//! What the end-to-end tests of `aetherflow-api` share: the real binary on a free loopback
//! port, API keys, and the sandbox runtime's folder.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// The server's working folder (its data_dir and workspaces live here).
    pub dir: std::path::PathBuf,
    pub _keep: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM first, so the server exits through its own shutdown (and, in a coverage run,
        // writes its profile); SIGKILL if it has not gone within 3 s.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while std::time::Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keeps a coverage run's profile destination across `env_clear()`, so code run by the binaries
/// the tests start counts too (cargo-tarpaulin's LLVM engine sets it; otherwise it is unset).
pub fn keep_coverage_env(cmd: &mut Command) -> &mut Command {
    if let Some(v) = std::env::var_os("LLVM_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", v);
    }
    cmd
}

/// The binary on a free loopback port, in a fresh folder of its own.
pub fn start(extra_env: &[(&str, &str)]) -> Server {
    let dir = tempfile::tempdir().expect("dir");
    let mut server = start_in(dir.path(), extra_env);
    server._keep = Some(dir);
    server
}

/// The binary on a free loopback port, working in `dir` (a restart reuses its database).
pub fn start_in(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    start_with_args(dir, extra_env, &[])
}

/// `aetherflow-api worker` in `dir` (its health port on a free loopback port).
pub fn start_worker(dir: &std::path::Path, extra_env: &[(&str, &str)]) -> Server {
    start_with_args(dir, extra_env, &["worker"])
}

fn start_with_args(dir: &std::path::Path, extra_env: &[(&str, &str)], args: &[&str]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"));
    cmd.env_clear();
    keep_coverage_env(&mut cmd)
        .current_dir(dir)
        .args(["--bind", "127.0.0.1:0"])
        .args(args)
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
    Server {
        child,
        base,
        dir: dir.to_path_buf(),
        _keep: None,
    }
}

/// `aetherflow-api keys …` in `dir`.
pub fn keys(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    keys_with(dir, args, &[])
}

/// `aetherflow-api keys …` in `dir`, with settings from `env` (a shared store, say).
pub fn keys_with(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aetherflow-api"));
    cmd.env_clear();
    keep_coverage_env(&mut cmd)
        .current_dir(dir)
        .envs(env.iter().copied())
        .arg("keys")
        .args(args)
        .output()
        .expect("runs")
}

/// A new key with `scopes` in `dir`'s database.
pub fn create_key(dir: &std::path::Path, scopes: &str) -> String {
    create_key_with(dir, scopes, &[])
}

/// A new key with `scopes`, in the store `env` points at.
pub fn create_key_with(dir: &std::path::Path, scopes: &str, env: &[(&str, &str)]) -> String {
    let out = keys_with(dir, &["create", "--name", "test", "--scopes", scopes], env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// The sandbox runtime's folder (scripts/test.sh installs it).
pub fn runtime_dir() -> String {
    aetherflow_sandbox::default_runtime_dir()
        .to_string_lossy()
        .into_owned()
}

/// The spans an OTLP/HTTP-JSON receiver got so far: (trace id, span id, parent span id, name,
/// attributes as key → value text, with the exporting process's `service.name` among them).
pub type ReceivedSpan = (String, String, String, String, Vec<(String, String)>);

pub async fn received_spans(collector: &wiremock::MockServer) -> (Vec<ReceivedSpan>, String) {
    let mut spans = Vec::new();
    let mut raw = String::new();
    for request in collector.received_requests().await.unwrap_or_default() {
        let text = String::from_utf8_lossy(&request.body).into_owned();
        raw.push_str(&text);
        let Ok(body) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|kv| kv["key"] == "service.name")
                .and_then(|kv| kv["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let attrs = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|kv| {
                            let v = &kv["value"];
                            let text = v["stringValue"]
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| v["intValue"].as_str().map(str::to_owned))
                                .or_else(|| v["intValue"].as_i64().map(|n| n.to_string()))
                                .unwrap_or_else(|| v.to_string());
                            (kv["key"].as_str().unwrap_or_default().to_owned(), text)
                        })
                        .chain([("service.name".to_owned(), service.clone())])
                        .collect();
                    let field = |k: &str| s[k].as_str().unwrap_or_default().to_owned();
                    spans.push((
                        field("traceId"),
                        field("spanId"),
                        field("parentSpanId"),
                        field("name"),
                        attrs,
                    ));
                }
            }
        }
    }
    (spans, raw)
}

/// The value of attribute `key` of a received span, as text ("" when absent).
pub fn span_attr(span: &ReceivedSpan, key: &str) -> String {
    span.4
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_default()
}

/// An OTLP/HTTP receiver on a free loopback port that accepts every trace export.
pub async fn otlp_collector() -> wiremock::MockServer {
    let collector = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .and(wiremock::matchers::path("/v1/traces"))
        .respond_with(wiremock::ResponseTemplate::new(200))
        .mount(&collector)
        .await;
    collector
}

/// One run's spans as a collector received them: the request, the job, the engine's run, its
/// steps and its provider attempts.
pub struct RunSpans {
    pub http: ReceivedSpan,
    pub job: ReceivedSpan,
    pub run: ReceivedSpan,
    pub steps: Vec<ReceivedSpan>,
    pub attempts: Vec<ReceivedSpan>,
}

/// Waits (up to 10 s) until `collector` holds the spans of a run of `steps` steps (at least one
/// attempt each) in trace `trace_id`.
pub async fn run_spans(collector: &wiremock::MockServer, trace_id: &str, steps: usize) -> RunSpans {
    for _ in 0..100 {
        let (spans, _) = received_spans(collector).await;
        let ours: Vec<ReceivedSpan> = spans.into_iter().filter(|s| s.0 == trace_id).collect();
        let named = |name: &str| ours.iter().find(|s| s.3 == name).cloned();
        let prefixed = |prefix: &str| -> Vec<ReceivedSpan> {
            ours.iter()
                .filter(|s| s.3.starts_with(prefix))
                .cloned()
                .collect()
        };
        let (step_spans, attempts) = (prefixed("step "), prefixed("chat "));
        if let (Some(http), Some(job), Some(run)) =
            (named("POST /v1/runs"), named("run job"), named("run"))
            && step_spans.len() == steps
            && attempts.len() >= steps
        {
            return RunSpans {
                http,
                job,
                run,
                steps: step_spans,
                attempts,
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the run's spans never reached the collector under trace {trace_id}");
}
