//! End-to-end tests of the `aetherflow` binary: real processes, real files, exit codes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aetherflow"));
    // A clean environment: no provider keys or AETHERFLOW_* settings leak in from the machine.
    cmd.env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    // In a coverage run (cargo-tarpaulin's LLVM engine), the binary's own profile counts too.
    if let Some(profile) = std::env::var_os("LLVM_PROFILE_FILE") {
        cmd.env("LLVM_PROFILE_FILE", profile);
    }
    // The sandbox runtime the test suite's set-up installed (scripts/test.sh fetches it).
    cmd.env(
        "AETHERFLOW_SANDBOX_RUNTIME",
        aetherflow_sandbox::default_runtime_dir(),
    );
    cmd
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn example_plan() -> PathBuf {
    repo().join("examples/todo-api/plan.json")
}

/// A fresh copy of the example's workspace: runs write into their workspace, and the repository's
/// copy must stay as it is.
fn example_workspace() -> PathBuf {
    let source = repo().join("examples/todo-api/workspace");
    let copy = tempfile::tempdir().expect("temp dir").keep();
    copy_tree(&source, &copy);
    copy
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walk");
        let target = to.join(entry.path().strip_prefix(from).expect("inside"));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    bin()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn only_run_dir(out: &Path, task: &str) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(out.join(task))
        .expect("task folder exists")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().expect("one run")
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("file exists")).expect("valid JSON")
}

#[test]
fn offline_example_runs_end_to_end() {
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let o = run_in(
        out.path(),
        &[
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success(), "stderr: {}", text(&o.stderr));
    let stdout = text(&o.stdout);
    assert!(stdout.contains("5 succeeded, 0 failed"), "{stdout}");
    let dir = only_run_dir(out.path(), "todo-api-example");
    let report = read_json(&dir.join("report.json"));
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["totals"]["succeeded"], 5);
    let repository = std::fs::read_to_string(dir.join("repository.md")).expect("step output");
    assert!(
        repository.contains("```python path=app/repository.py"),
        "{repository}"
    );
    let tests = std::fs::read_to_string(dir.join("tests.md")).expect("step output");
    assert!(
        tests.contains("path=tests/test_repository.py")
            && tests.contains("path=tests/test_service.py")
    );
}

#[test]
fn without_keys_or_offline_run_names_the_variables_and_exits_2() {
    let dir = tempfile::tempdir().expect("dir");
    let plan = example_plan();
    let o = run_in(dir.path(), &["run", plan.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    for needle in [
        "DEEPSEEK_API_KEY",
        "GEMINI_API_KEY",
        "GROQ_API_KEY",
        "MISTRAL_API_KEY",
        "MOONSHOT_API_KEY",
        "KIMI_KEY",
        "--offline",
    ] {
        assert!(err.contains(needle), "{needle} missing: {err}");
    }
}

/// A local server that answers every chat request like DeepSeek would.
fn deepseek_mock(
    runtime: &tokio::runtime::Runtime,
    status: u16,
    body: &str,
) -> wiremock::MockServer {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    runtime.block_on(async {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/chat/completions"))
            .respond_with(
                ResponseTemplate::new(status).set_body_raw(body.to_owned(), "application/json"),
            )
            .mount(&server)
            .await;
        server
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn runs_online_against_a_configured_provider() {
    let rt = runtime();
    let answer = serde_json::json!({
        "id": "x", "object": "chat.completion", "model": "deepseek-v4-flash",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
            "content": "```python path=app/repository.py\nclass TodoRepository: ...\n```\n"}}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200,
                  "prompt_cache_hit_tokens": 0, "prompt_cache_miss_tokens": 1000}
    });
    let server = deepseek_mock(&rt, 200, &answer.to_string());
    let out = tempfile::tempdir().expect("out");
    // Five steps whose answer is the one canned above: an analysis, then four code steps that
    // all (re)write app/repository.py, one after another.
    let plan = out.path().join("plan.json");
    let step = |id: &str, ty: &str, deps: &[&str], files: &[&str]| {
        serde_json::json!({"id": id, "description": format!("{id} step"), "type": ty,
            "dependencies": deps, "context": {"language": "python", "files": files}})
    };
    let plan_json = serde_json::json!({
        "task_id": "todo-api-example",
        "description": "Providers and costs, online",
        "steps": [
            step("review_model", "analysis", &[], &["app/models.py"]),
            step("repository", "code_generation", &["review_model"], &["app/repository.py"]),
            step("refine", "refactoring", &["repository"], &["app/repository.py"]),
            step("harden", "refactoring", &["refine"], &["app/repository.py"]),
            step("polish", "refactoring", &["harden"], &["app/repository.py"]),
        ]
    });
    std::fs::write(&plan, plan_json.to_string()).expect("plan");
    let ws = example_workspace();
    let o = bin()
        .current_dir(out.path())
        .env("DEEPSEEK_API_KEY", "sk-online-test-000000")
        .env("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", server.uri())
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    let report = read_json(&only_run_dir(out.path(), "todo-api-example").join("report.json"));
    let step = &report["steps"][1];
    assert_eq!(step["provider"], "deepseek");
    assert_eq!(step["model"], "deepseek-v4-flash");
    // 1000 input × $0.14/M + 200 output × $0.28/M = $0.000196
    assert_eq!(step["cost"], 196);
    assert_eq!(step["attempts"][0]["key_id"], "deepseek#1");
    let requests = rt.block_on(server.received_requests()).expect("recording");
    assert_eq!(requests.len(), 5);

    // The breakers the run used are in its report, and `providers status` shows them.
    assert_eq!(report["breakers"][0]["provider"], "deepseek");
    assert_eq!(report["breakers"][0]["state"], "closed");
    let o = bin()
        .current_dir(out.path())
        .env("DEEPSEEK_API_KEY", "sk-online-test-000000")
        .args([
            "providers",
            "status",
            "--json",
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let status: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(status["breakers"][0]["calls"], 5);
    assert_eq!(status["providers"][0]["keys"][0]["key"], "sk-o***0000");

    // Every call is in the cost ledger, and `costs` adds it up.
    let o = bin()
        .current_dir(out.path())
        .args([
            "costs",
            "--by",
            "model",
            "--json",
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let totals: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(totals["deepseek/deepseek-v4-flash"]["calls"], 5);
    assert_eq!(totals["deepseek/deepseek-v4-flash"]["cost"], 980);
    let all = format!("{}{}{}", text(&o.stdout), text(&o.stderr), report);
    assert!(!all.contains("sk-online-test"), "key leaked");
}

#[test]
fn a_configured_key_is_never_echoed() {
    let rt = runtime();
    let echo = r#"{"error":{"message":"Authentication Fails, Your api key: sk-do-not-print-me-0123456789 is invalid","type":"authentication_error","param":null,"code":"invalid_request_error"}}"#;
    let server = deepseek_mock(&rt, 401, echo);
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let logs = out.path().join("logs");
    let o = bin()
        .current_dir(out.path())
        .env("DEEPSEEK_API_KEY", "sk-do-not-print-me-0123456789")
        .env("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", server.uri())
        .env("AETHERFLOW_LOG__LEVEL", "trace")
        .env("AETHERFLOW_LOG__DIR", &logs)
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let report =
        std::fs::read_to_string(only_run_dir(out.path(), "todo-api-example").join("report.json"))
            .expect("report");
    assert!(report.contains("authentication failed"), "{report}");
    let log_files: String = std::fs::read_dir(&logs)
        .expect("logs")
        .filter_map(Result::ok)
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    let all = format!("{}{}{report}{log_files}", text(&o.stdout), text(&o.stderr));
    assert!(!all.contains("sk-do-not-print-me"), "the key leaked: {all}");
}

#[test]
fn keys_from_a_dot_env_file_are_read_and_listed_masked() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join(".env"),
        "GROQ_API_KEY=gsk_from_dotenv_123456\n",
    )
    .expect("write");
    let o = run_in(dir.path(), &["providers", "list", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let listed: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(listed[0]["name"], "groq");
    assert_eq!(listed[0]["keys"][0]["key"], "gsk_***3456");
    assert!(!text(&o.stdout).contains("gsk_from_dotenv"));
}

#[test]
fn providers_check_makes_a_live_call() {
    let rt = runtime();
    let ok = r#"{"model":"deepseek-v4-flash","choices":[{"index":0,"message":{"role":"assistant","content":"OK"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;
    let server = deepseek_mock(&rt, 200, ok);
    let dir = tempfile::tempdir().expect("dir");
    let o = bin()
        .current_dir(dir.path())
        .env("DEEPSEEK_API_KEY", "sk-check-000000000")
        .env("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", server.uri())
        .args(["providers", "check"])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(
        text(&o.stdout).contains("ok      deepseek/deepseek-v4-flash"),
        "{}",
        text(&o.stdout)
    );

    let failing = deepseek_mock(&rt, 503, r#"{"error":{"message":"Server Overloaded"}}"#);
    let o = bin()
        .current_dir(dir.path())
        .env("DEEPSEEK_API_KEY", "sk-check-000000000")
        .env("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", failing.uri())
        .args(["providers", "check"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stdout).contains("[server]"), "{}", text(&o.stdout));
}

#[test]
fn failed_step_skips_its_dependents_and_exits_1() {
    let out = tempfile::tempdir().expect("out");
    let script = out.path().join("mock.yaml");
    std::fs::write(
        &script,
        "steps:\n  repository:\n    - error: server\n      message: upstream 503\n      times: 9\n",
    )
    .expect("write");
    let plan = example_plan();
    let ws = example_workspace();
    let o = bin()
        .current_dir(out.path())
        .env("AETHERFLOW_RETRY__BASE_DELAY_MS", "1")
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--mock-script",
            script.to_str().expect("utf-8"),
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1), "stderr: {}", text(&o.stderr));
    let report = read_json(&only_run_dir(out.path(), "todo-api-example").join("report.json"));
    let status = |i: usize| {
        report["steps"][i]["status"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(status(0), "succeeded");
    assert_eq!(status(1), "failed");
    assert_eq!(status(2), "skipped");
    assert_eq!(status(3), "skipped");
    assert_eq!(status(4), "skipped");
    assert_eq!(
        report["steps"][2]["reason"],
        "dependency `repository` failed"
    );
    assert_eq!(report["steps"][1]["attempts"][0]["error"]["kind"], "server");
    assert_eq!(
        report["steps"][1]["attempts"].as_array().map(Vec::len),
        Some(3),
        "retried, then gave up"
    );
    assert!(
        report["steps"][1]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("after 3 attempts")
    );
}

#[test]
fn json_output_is_one_event_per_line_then_the_report() {
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let o = run_in(
        out.path(),
        &[
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--json",
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ],
    );
    assert!(o.status.success());
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines[0]["event"], "run_started");
    let last = lines.last().expect("lines");
    assert_eq!(last["event"], "report");
    assert_eq!(last["report"]["status"], "succeeded");
    let finished = lines
        .iter()
        .filter(|l| l["event"] == "step_finished")
        .count();
    assert_eq!(finished, 5);
}

#[test]
fn plan_validate_reports_positions_and_cycles() {
    let dir = tempfile::tempdir().expect("dir");
    let broken = dir.path().join("broken.json");
    std::fs::write(
        &broken,
        "{\n  \"task_id\": \"x\",\n  \"steps\": [\n    {\"id\": 1,}\n  ]\n}\n",
    )
    .expect("write");
    let cyclic = dir.path().join("cyclic.yaml");
    std::fs::write(
        &cyclic,
        "task_id: c\ndescription: d\nsteps:\n  - {id: a, description: x, type: analysis, dependencies: [b]}\n  - {id: b, description: y, type: analysis, dependencies: [a]}\n",
    )
    .expect("write");
    let good = example_plan();
    let o = run_in(
        dir.path(),
        &[
            "plan",
            "validate",
            broken.to_str().expect("utf-8"),
            cyclic.to_str().expect("utf-8"),
            good.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    let stdout = text(&o.stdout);
    assert!(
        stdout.contains("broken.json: JSON syntax error at line 4"),
        "{stdout}"
    );
    assert!(
        stdout.contains("dependency cycle: `a` → `b` → `a`"),
        "{stdout}"
    );
    assert!(stdout.contains("ok      "), "{stdout}");
    assert!(stdout.contains("3 plans checked, 2 invalid"), "{stdout}");

    let o = run_in(
        dir.path(),
        &["plan", "validate", good.to_str().expect("utf-8")],
    );
    assert!(o.status.success());
}

#[test]
fn plan_show_lists_levels() {
    let dir = tempfile::tempdir().expect("dir");
    let plan = example_plan();
    let o = run_in(
        dir.path(),
        &["plan", "show", plan.to_str().expect("utf-8"), "--json"],
    );
    assert!(o.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(shown["levels"][0][0], "review_model");
    assert_eq!(shown["levels"][3], serde_json::json!(["tests", "docs"]));
}

#[test]
fn settings_come_from_the_environment_and_bad_ones_exit_2() {
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let o = bin()
        .current_dir(out.path())
        .env("AETHERFLOW_RUN__OUT_DIR", out.path().join("from-env"))
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--workspace",
            ws.to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o.stderr));
    only_run_dir(&out.path().join("from-env"), "todo-api-example");

    let o = bin()
        .current_dir(out.path())
        .env("AETHERFLOW_RUN__CONCURRENCY", "zero")
        .args(["run", plan.to_str().expect("utf-8"), "--offline"])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("run.concurrency"),
        "{}",
        text(&o.stderr)
    );

    let o = run_in(
        out.path(),
        &[
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--concurrency",
            "0",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn a_missing_plan_or_workspace_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let o = run_in(dir.path(), &["run", "nope.json", "--offline"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nope.json"));
    let plan = example_plan();
    let o = run_in(
        dir.path(),
        &[
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--workspace",
            "missing-dir",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("--workspace"),
        "{}",
        text(&o.stderr)
    );
}

#[cfg(unix)]
#[test]
fn ctrl_c_cancels_and_still_writes_the_report() {
    use std::io::Read;
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let mut child = bin()
        .current_dir(out.path())
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--json",
            "--mock-latency-ms",
            "30000",
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    // Wait until the first step has started, so the signal handler is installed.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !text(&seen).contains("step_started") {
        let n = stdout.read(&mut buf).expect("read");
        assert!(n > 0, "the run ended early: {}", text(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("exits");
    assert_eq!(status.code(), Some(1));
    let report = read_json(&only_run_dir(out.path(), "todo-api-example").join("report.json"));
    assert_eq!(report["status"], "cancelled");
    assert_eq!(report["steps"][0]["status"], "cancelled");
}

#[test]
fn json_logs_go_to_a_rotating_file_without_secrets() {
    let out = tempfile::tempdir().expect("out");
    let logs = out.path().join("logs");
    let plan = example_plan();
    let ws = example_workspace();
    let o = bin()
        .current_dir(out.path())
        .env("DEEPSEEK_API_KEY", "sk-never-in-logs-987654")
        .env("AETHERFLOW_LOG__DIR", &logs)
        .env("AETHERFLOW_LOG__LEVEL", "trace")
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let files: Vec<PathBuf> = std::fs::read_dir(&logs)
        .expect("log folder created")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let log = std::fs::read_to_string(&files[0]).expect("log file");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).expect("each log line is JSON"))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "run finished"),
        "{log}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["fields"]["message"] == "step finished")
            .count(),
        5
    );
    let everything = format!("{log}{}{}", text(&o.stdout), text(&o.stderr));
    assert!(!everything.contains("sk-never-in-logs"), "the key leaked");
}

#[cfg(unix)]
#[test]
fn a_killed_run_leaves_a_readable_ledger() {
    use std::io::Read;
    let out = tempfile::tempdir().expect("out");
    let plan = example_plan();
    let ws = example_workspace();
    let mut child = bin()
        .current_dir(out.path())
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--offline",
            "--json",
            "--concurrency",
            "1",
            "--mock-latency-ms",
            "40",
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while text(&seen).matches("step_finished").count() < 2 {
        let n = stdout.read(&mut buf).expect("read");
        assert!(n > 0, "the run ended early");
        seen.extend_from_slice(&buf[..n]);
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let ledger = std::fs::read_to_string(out.path().join("ledger.jsonl")).expect("ledger exists");
    let lines: Vec<&str> = ledger.lines().collect();
    assert!(lines.len() >= 2, "{ledger}");
    for line in &lines[..lines.len() - 1] {
        serde_json::from_str::<serde_json::Value>(line).expect("every complete line is a record");
    }
    let o = bin()
        .current_dir(out.path())
        .args([
            "costs",
            "--json",
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let totals: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert!(
        totals["mock"]["calls"].as_u64().unwrap_or(0) >= 2,
        "{totals}"
    );
}

#[test]
fn a_day_cap_spent_by_earlier_runs_stops_the_next_one_before_any_call() {
    let rt = runtime();
    let answer = r#"{"model":"deepseek-v4-flash","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":1,"total_tokens":11}}"#;
    let server = deepseek_mock(&rt, 200, answer);
    let out = tempfile::tempdir().expect("out");
    let now = chrono::Utc::now().to_rfc3339();
    let earlier = format!(
        r#"{{"at":"{now}","run_id":"r0","task_id":"t0","step_id":"s0","provider":"deepseek","model":"deepseek-v4-flash","usage":{{"input_tokens":1,"cached_input_tokens":0,"output_tokens":1,"reasoning_tokens":0}},"cost":999000,"outcome":"ok"}}"#
    );
    std::fs::write(out.path().join("ledger.jsonl"), format!("{earlier}\n")).expect("seed ledger");
    let plan = example_plan();
    let ws = example_workspace();
    let o = bin()
        .current_dir(out.path())
        .env("DEEPSEEK_API_KEY", "sk-budget-000000000")
        .env("AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL", server.uri())
        .env("AETHERFLOW_BUDGET__DAY_USD", "1.00")
        .args([
            "run",
            plan.to_str().expect("utf-8"),
            "--workspace",
            ws.to_str().expect("utf-8"),
            "--out",
            out.path().to_str().expect("utf-8"),
        ])
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let report = read_json(&only_run_dir(out.path(), "todo-api-example").join("report.json"));
    let reason = report["steps"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(reason.contains("budget for day"), "{reason}");
    assert!(
        rt.block_on(server.received_requests())
            .expect("recording")
            .is_empty(),
        "no call was sent"
    );
}

#[test]
fn scan_blocks_unsafe_code_and_passes_safe_code() {
    let dir = tempfile::tempdir().expect("dir");
    let src = dir.path().join("pkg");
    std::fs::create_dir_all(&src).expect("mkdir");
    std::fs::write(
        src.join("good.py"),
        "import json\n\nprint(json.dumps({'ok': True}))\n",
    )
    .expect("write");
    let o = run_in(dir.path(), &["scan", src.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));

    std::fs::write(
        src.join("bad.py"),
        "import subprocess\nsubprocess.call('ls ' + user_input, shell=True)\n",
    )
    .expect("write");
    let o = run_in(
        dir.path(),
        &["scan", src.to_str().expect("utf-8"), "--format", "json"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("bandit JSON");
    let ids: Vec<&str> = report["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["test_id"].as_str())
        .collect();
    assert!(ids.contains(&"B602"), "{ids:?}");
    assert!(
        ids.contains(&"AF001"),
        "subprocess is not on the default allow-list: {ids:?}"
    );

    let o = run_in(
        dir.path(),
        &[
            "scan",
            src.join("bad.py").to_str().expect("utf-8"),
            "--format",
            "sarif",
        ],
    );
    let sarif: serde_json::Value = serde_json::from_slice(&o.stdout).expect("SARIF");
    assert_eq!(sarif["version"], "2.1.0");

    let o = run_in(dir.path(), &["scan", "missing-folder"]);
    assert_eq!(o.status.code(), Some(2));
}

fn sandbox_bin() -> Command {
    bin()
}

#[test]
fn sandbox_run_passes_output_argv_stdin_and_the_exit_code_through() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.py");
    std::fs::write(
        &script,
        "import sys\nprint(sys.argv[1:], sys.stdin.read())\nprint('warn', file=sys.stderr)\nsys.exit(4)",
    )
    .unwrap();
    let input = dir.path().join("in.txt");
    std::fs::write(&input, "hello").unwrap();
    let out = sandbox_bin()
        .args(["sandbox", "run"])
        .arg(&script)
        .arg("--stdin")
        .arg(&input)
        .args(["--", "a", "b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "['a', 'b'] hello\n");
    assert_eq!(text(&out.stderr), "warn\n");
}

#[test]
fn sandbox_run_stops_at_the_timeout_and_the_memory_cap() {
    let dir = tempfile::tempdir().unwrap();
    let spin = dir.path().join("spin.py");
    std::fs::write(&spin, "while True:\n    pass\n").unwrap();
    let out = sandbox_bin()
        .args(["sandbox", "run", "--timeout", "300ms"])
        .arg(&spin)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );

    let hog = dir.path().join("hog.py");
    std::fs::write(&hog, "x = 'a' * 10**9\n").unwrap();
    let out = sandbox_bin()
        .args(["sandbox", "run", "--memory", "32MiB", "--json"])
        .arg(&hog)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let outcome: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["out_of_memory"], true, "{outcome}");
    assert!(outcome["stderr"].as_str().unwrap().contains("MemoryError"));
}

#[test]
fn sandbox_run_without_a_runtime_says_how_to_install_it() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.py");
    std::fs::write(&script, "print(1)").unwrap();
    let out = bin()
        .env(
            "AETHERFLOW_SANDBOX_RUNTIME",
            dir.path().join("nothing-here"),
        )
        .args(["sandbox", "run"])
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("python-3.11.1.wasm"), "{err}");
    assert!(err.contains("scripts/fetch-sandbox-runtime.py"), "{err}");
}

#[test]
fn sandbox_run_rejects_a_bad_size_with_an_example() {
    let out = bin()
        .args(["sandbox", "run", "x.py", "--memory", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("64MiB"), "{}", text(&out.stderr));
}

fn tree(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.expect("walk"))
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                e.path()
                    .strip_prefix(root)
                    .expect("inside")
                    .to_string_lossy()
                    .into_owned(),
                std::fs::read(e.path()).expect("read"),
            )
        })
        .collect()
}

#[test]
fn a_run_writes_each_file_its_own_block_and_rollback_restores_the_workspace_exactly() {
    let workspace = example_workspace();
    let before = tree(&workspace);
    let out = tempfile::tempdir().unwrap();
    let ran = bin()
        .args(["run", "--offline", "--json"])
        .arg(example_plan())
        .arg("--workspace")
        .arg(&workspace)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let run_dir = only_run_dir(out.path(), "todo-api-example");
    let report = read_json(&run_dir.join("report.json"));

    // The two test files of one step each got their own content (the original wrote the
    // first block into both).
    let a = std::fs::read_to_string(workspace.join("tests/test_repository.py")).unwrap();
    let b = std::fs::read_to_string(workspace.join("tests/test_service.py")).unwrap();
    assert_ne!(a, b);
    assert!(workspace.join("app/repository.py").is_file());
    let tests_step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "tests")
        .unwrap();
    assert_eq!(
        tests_step["files"].as_array().unwrap().len(),
        2,
        "{tests_step}"
    );
    // The README existed: modified, and its previous content saved in the run folder.
    let readme_before = before.get("README.md").unwrap();
    assert_ne!(
        &std::fs::read(workspace.join("README.md")).unwrap(),
        readme_before
    );

    // An unrelated file the user adds after the run survives the rollback.
    std::fs::write(workspace.join("mine.txt"), "user's file\n").unwrap();
    let run_id = report["run_id"].as_str().unwrap();
    let rolled = bin()
        .args(["run", "rollback", run_id, "--out"])
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(rolled.status.code(), Some(0), "{}", text(&rolled.stderr));
    assert!(text(&rolled.stdout).contains("removed   app/repository.py"));
    let mut after = tree(&workspace);
    assert_eq!(
        after.remove("mine.txt").as_deref(),
        Some(&b"user's file\n"[..])
    );
    assert_eq!(after, before, "the workspace is byte for byte what it was");
    assert!(
        !workspace.join("tests").exists(),
        "folders the run created are gone"
    );
}

#[test]
fn dry_run_writes_nothing_and_saves_diffs() {
    let workspace = example_workspace();
    let before = tree(&workspace);
    let out = tempfile::tempdir().unwrap();
    let ran = bin()
        .args(["run", "--offline", "--dry-run"])
        .arg(example_plan())
        .arg("--workspace")
        .arg(&workspace)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert_eq!(tree(&workspace), before);
    let run_dir = only_run_dir(out.path(), "todo-api-example");
    let diff = std::fs::read_to_string(run_dir.join("docs.diff")).unwrap();
    assert!(diff.contains("--- a/README.md"), "{diff}");
    // And printed.
    let printed = text(&ran.stdout);
    assert!(printed.contains("--- a/README.md"), "{printed}");
    assert!(printed.contains("+++ b/app/repository.py"), "{printed}");
}

#[test]
fn blocked_code_is_sent_back_and_the_repaired_answer_is_applied() {
    let (ran, workspace, dir) = run_example_with_script(
        "steps:\n  repository:\n    - text: |\n        ```python path=app/repository.py\n        import os\n        os.system('rm -rf ' + input())\n        ```\n",
        &[],
    );
    let out = dir.path().join("out");
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let written = std::fs::read_to_string(workspace.join("app/repository.py")).unwrap();
    assert!(!written.contains("os.system"), "{written}");
    let report = read_json(&only_run_dir(&out, "todo-api-example").join("report.json"));
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "repository")
        .unwrap();
    let rejected = step["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{step}");
    assert!(
        rejected[0].as_str().unwrap().contains("code-safety gate"),
        "{step}"
    );
    // Both answers were paid for and recorded.
    assert_eq!(step["attempts"].as_array().unwrap().len(), 2, "{step}");
}

#[test]
fn a_step_whose_answers_stay_blocked_fails_and_writes_nothing() {
    let (ran, workspace, dir) = run_example_with_script(
        "steps:\n  repository:\n    - text: |\n        ```python path=app/repository.py\n        import subprocess\n        subprocess.call(input(), shell=True)\n        ```\n      times: 5\n",
        &[],
    );
    let out = dir.path().join("out");
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    assert!(!workspace.join("app/repository.py").exists());
    let report = read_json(&only_run_dir(&out, "todo-api-example").join("report.json"));
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "repository")
        .unwrap();
    assert_eq!(step["status"], "failed");
    assert_eq!(step["rejected"].as_array().unwrap().len(), 3, "{step}");
}

#[test]
fn a_generated_test_that_fails_in_the_sandbox_is_repaired() {
    let (ran, workspace, dir) = run_example_with_script(
        "steps:\n  tests:\n    - text: |\n        ```python path=tests/test_repository.py\n        import unittest\n        class T(unittest.TestCase):\n            def test_wrong(self):\n                self.assertEqual(1 + 1, 3)\n        ```\n        ```python path=tests/test_service.py\n        import unittest\n        class S(unittest.TestCase):\n            def test_ok(self):\n                self.assertTrue(True)\n        ```\n",
        &[],
    );
    let out = dir.path().join("out");
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let report = read_json(&only_run_dir(&out, "todo-api-example").join("report.json"));
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "tests")
        .unwrap();
    let rejected = step["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{step}");
    let why = rejected[0].as_str().unwrap();
    assert!(why.contains("tests failed in the sandbox"), "{why}");
    assert!(why.contains("test_wrong"), "{why}");
    let written = std::fs::read_to_string(workspace.join("tests/test_repository.py")).unwrap();
    assert!(!written.contains("test_wrong"), "{written}");
}

#[test]
fn a_module_that_fails_to_import_in_the_sandbox_is_sent_back() {
    let (ran, _workspace, dir) = run_example_with_script(
        "steps:\n  repository:\n    - text: |\n        ```python path=app/repository.py\n        from app.models import DoesNotExist\n        ```\n",
        &[],
    );
    let out = dir.path().join("out");
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let report = read_json(&only_run_dir(&out, "todo-api-example").join("report.json"));
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "repository")
        .unwrap();
    let why = step["rejected"][0].as_str().unwrap_or_default();
    assert!(why.contains("DoesNotExist"), "{step}");
}

fn step_report(out: &Path, id: &str) -> serde_json::Value {
    task_step_report(out, "todo-api-example", id)
}

fn task_step_report(out: &Path, task: &str, id: &str) -> serde_json::Value {
    let report = read_json(&only_run_dir(out, task).join("report.json"));
    report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["id"] == id)
        .expect("the step is in the report")
        .clone()
}

fn run_example_with_script(script: &str, extra: &[&str]) -> (Output, PathBuf, tempfile::TempDir) {
    let workspace = example_workspace();
    let dir = tempfile::tempdir().expect("temp dir");
    let script_path = dir.path().join("mock.yaml");
    std::fs::write(&script_path, script).expect("script");
    let out = dir.path().join("out");
    let ran = bin()
        .args(["run", "--offline", "--mock-script"])
        .arg(&script_path)
        .args(extra)
        .arg(example_plan())
        .arg("--workspace")
        .arg(&workspace)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("the binary runs");
    (ran, workspace, dir)
}

#[test]
fn a_gate_keeper_rejection_is_repaired_then_approved() {
    let script = "steps:\n  repository.review:\n    - text: '{\"approve\": false, \"issues\": [{\"severity\": \"high\", \"message\": \"unknown ids must raise KeyError\", \"line\": 4}]}'\n";
    let (ran, _ws, dir) = run_example_with_script(script, &["--review"]);
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    let step = step_report(&dir.path().join("out"), "repository");
    let rejected = step["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{step}");
    assert!(
        rejected[0]
            .as_str()
            .unwrap()
            .contains("unknown ids must raise KeyError"),
        "{step}"
    );
    // Two answers and two reviews are paid for: answer, review (reject), answer, review
    // (approve); the step still names its author, not the reviewer.
    assert_eq!(step["attempts"].as_array().unwrap().len(), 4, "{step}");
    assert_eq!(step["provider"], "mock");
}

#[test]
fn a_review_that_gives_no_verdict_fails_closed() {
    let script = "steps:\n  repository.review:\n    - text: 'Looks valid to me!'\n      times: 5\n";
    let (ran, ws, dir) = run_example_with_script(script, &["--review"]);
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    let step = step_report(&dir.path().join("out"), "repository");
    assert_eq!(step["status"], "failed");
    assert!(
        step["reason"].as_str().unwrap().contains("fails closed"),
        "{step}"
    );
    assert!(!ws.join("app/repository.py").exists());
}

#[test]
fn failures_are_surveyed_and_listed_by_nature() {
    let script = "steps:\n  repository:\n    - text: |\n        ```python path=app/repository.py\n        import subprocess\n        subprocess.call(input(), shell=True)\n        ```\n      times: 5\n";
    let (ran, _ws, dir) = run_example_with_script(script, &[]);
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    let out = dir.path().join("out");
    let run_dir = only_run_dir(&out, "todo-api-example");
    let entry = read_json(&run_dir.join("survey/repository.json"));
    assert_eq!(entry["nature"], "validation_failed", "{entry}");
    assert_eq!(entry["step"], "repository");
    assert_eq!(entry["files"][0], "app/repository.py");
    assert!(
        entry["suggested_fix"]
            .as_str()
            .unwrap()
            .contains("rejected")
    );
    let page = std::fs::read_to_string(run_dir.join("survey/repository.md")).unwrap();
    assert!(page.contains("## Suggested fix"), "{page}");
    // Skipped dependants are not failures.
    assert!(!run_dir.join("survey/service.json").exists());

    let listed = bin()
        .args([
            "survey",
            "list",
            "--format",
            "json",
            "--nature",
            "validation_failed",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(entries.as_array().unwrap().len(), 1);
    let none = bin()
        .args([
            "survey",
            "list",
            "--format",
            "json",
            "--nature",
            "budget_exceeded",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let entries: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert!(entries.as_array().unwrap().is_empty());
    let bad = bin()
        .args(["survey", "list", "--nature", "oops", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("validation_failed"));
}

#[test]
fn a_patch_step_inserts_only_its_fragment_and_an_idempotent_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("app")).unwrap();
    let original = "ROUTES = []\n# ROUTES\n\ndef other():\n    return 1\n";
    std::fs::write(ws.join("app/routes.py"), original).unwrap();
    let plan = dir.path().join("plan.json");
    let plan_json = serde_json::json!({
        "task_id": "patching",
        "description": "Register a health route",
        "steps": [{
            "id": "add_route",
            "description": "Register the health route after the ROUTES marker.",
            "type": "patch",
            "dependencies": [],
            "context": {
                "language": "python",
                "files": ["app/routes.py"],
                "patch": {
                    "position": "after",
                    "marker": "# ROUTES",
                    "idempotent": true,
                    "replacement": "ROUTES.append(\"/health\")\n"
                }
            }
        }]
    });
    std::fs::write(&plan, plan_json.to_string()).unwrap();
    let run = |out: &Path| {
        bin()
            .args(["run", "--offline"])
            .arg(&plan)
            .arg("--workspace")
            .arg(&ws)
            .arg("--out")
            .arg(out)
            .output()
            .unwrap()
    };
    let first = run(&dir.path().join("out1"));
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    let patched = std::fs::read_to_string(ws.join("app/routes.py")).unwrap();
    assert_eq!(
        patched,
        "ROUTES = []\n# ROUTES\nROUTES.append(\"/health\")\n\ndef other():\n    return 1\n"
    );
    let second = run(&dir.path().join("out2"));
    assert_eq!(second.status.code(), Some(0), "{}", text(&second.stderr));
    assert_eq!(
        std::fs::read_to_string(ws.join("app/routes.py")).unwrap(),
        patched
    );
    let report = read_json(&only_run_dir(&dir.path().join("out2"), "patching").join("report.json"));
    assert_eq!(
        report["steps"][0]["files"][0]["action"], "unchanged",
        "{report}"
    );
}

/// Answers each request with the next reply scripted for the `[[tag]]` its body names. Review
/// requests (the gate-keeper's system prompt) take the replies of `review:<tag>`. The last reply
/// of a tag repeats.
struct ByTag(
    std::sync::Mutex<
        Vec<(
            String,
            std::collections::VecDeque<wiremock::ResponseTemplate>,
        )>,
    >,
);

impl ByTag {
    fn new(script: Vec<(&str, Vec<wiremock::ResponseTemplate>)>) -> Self {
        ByTag(std::sync::Mutex::new(
            script
                .into_iter()
                .map(|(tag, replies)| (tag.to_owned(), replies.into()))
                .collect(),
        ))
    }
}

impl wiremock::Respond for ByTag {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body);
        let review = body.contains("strict senior code reviewer");
        let mut script = self.0.lock().expect("lock");
        for (tag, queue) in script.iter_mut() {
            let (is_review, name) = match tag.strip_prefix("review:") {
                Some(name) => (true, name),
                None => (false, tag.as_str()),
            };
            if is_review == review && body.contains(&format!("[[{name}]]")) {
                let reply = if queue.len() > 1 {
                    queue.pop_front()
                } else {
                    queue.front().cloned()
                };
                return reply.expect("a scripted reply");
            }
        }
        wiremock::ResponseTemplate::new(500).set_body_string("no scripted reply")
    }
}

/// An OpenAI-style chat completion (DeepSeek, Kimi) with the given usage.
fn chat_completion(
    model: &str,
    content: &str,
    prompt: u64,
    completion: u64,
) -> wiremock::ResponseTemplate {
    wiremock::ResponseTemplate::new(200).set_body_json(serde_json::json!({
        "id": "chatcmpl-e2e", "object": "chat.completion", "created": 1_764_000_000, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                  "total_tokens": prompt + completion}
    }))
}

fn fenced(path: &str, code: &str) -> String {
    format!("```python path={path}\n{code}```\n")
}

/// Three providers on local servers speaking their own wire formats: Gemini overloaded (503,
/// Google's error envelope), DeepSeek answering each step, Kimi reviewing.
struct Providers {
    rt: tokio::runtime::Runtime,
    gemini: wiremock::MockServer,
    deepseek: wiremock::MockServer,
    kimi: wiremock::MockServer,
}

impl Providers {
    fn start(deepseek: ByTag, kimi: ByTag) -> Self {
        use wiremock::matchers::{method, path};
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let rt = runtime();
        let (gemini, deepseek_server, kimi_server) = rt.block_on(async {
            let gemini = MockServer::start().await;
            Mock::given(method("POST"))
                .respond_with(ResponseTemplate::new(503).set_body_raw(
                    r#"{"error":{"code":503,"message":"The model is overloaded. Please try again later.","status":"UNAVAILABLE"}}"#,
                    "application/json",
                ))
                .mount(&gemini)
                .await;
            let ds = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/chat/completions"))
                .respond_with(deepseek)
                .mount(&ds)
                .await;
            let k = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path("/chat/completions"))
                .respond_with(kimi)
                .mount(&k)
                .await;
            (gemini, ds, k)
        });
        Providers {
            rt,
            gemini,
            deepseek: deepseek_server,
            kimi: kimi_server,
        }
    }

    /// The `aetherflow` command with all three configured, retries off (one attempt per
    /// model) and no response cache.
    fn command(&self) -> Command {
        let mut cmd = bin();
        cmd.env("GEMINI_API_KEY", "AIza-e2e-gemini-key-0000")
            .env("DEEPSEEK_API_KEY", "sk-e2e-deepseek-key-0000")
            .env("MOONSHOT_API_KEY", "sk-e2e-kimi-key-00000000")
            .env("AETHERFLOW_PROVIDERS__GEMINI__BASE_URL", self.gemini.uri())
            .env(
                "AETHERFLOW_PROVIDERS__DEEPSEEK__BASE_URL",
                self.deepseek.uri(),
            )
            .env("AETHERFLOW_PROVIDERS__KIMI__BASE_URL", self.kimi.uri())
            .env("AETHERFLOW_RETRY__MAX_ATTEMPTS", "1")
            .arg("run")
            .arg("--no-cache");
        cmd
    }

    /// `aetherflow run [extra] PLAN --workspace WS --out OUT` against the three servers.
    fn run(&self, extra: &[&str], plan: &Path, ws: &Path, out: &Path) -> Output {
        self.command()
            .args(extra)
            .arg(plan)
            .arg("--workspace")
            .arg(ws)
            .arg("--out")
            .arg(out)
            .output()
            .expect("runs")
    }

    fn requests(&self, server: &wiremock::MockServer) -> Vec<wiremock::Request> {
        self.rt
            .block_on(server.received_requests())
            .expect("recording")
    }
}

const MODELS_PY: &str = "from dataclasses import dataclass\n\n\n@dataclass\nclass Todo:\n    id: int\n    title: str\n    done: bool = False\n";
const SERVICE_UNSAFE_PY: &str = "import os\n\nfrom app.models import Todo\n\n\ndef add(todos, title):\n    os.system(\"echo \" + title)\n    todo = Todo(id=len(todos) + 1, title=title)\n    todos.append(todo)\n    return todo\n";
const SERVICE_PY: &str = "from app.models import Todo\n\n\ndef add(todos: list, title: str) -> Todo:\n    todo = Todo(id=len(todos) + 1, title=title)\n    todos.append(todo)\n    return todo\n";
const TESTS_WRONG_PY: &str = "import unittest\n\nfrom app.service import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_ids_count_up(self):\n        todos = []\n        add(todos, \"a\")\n        self.assertEqual(add(todos, \"b\").id, 3)\n";
const TESTS_PY: &str = "import unittest\n\nfrom app.service import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_ids_count_up(self):\n        todos = []\n        add(todos, \"a\")\n        self.assertEqual(add(todos, \"b\").id, 2)\n";
const API_V1_PY: &str = "def list_titles(todos):\n    return sorted(t.title for t in todos)\n";
const API_PY: &str = "def list_titles(todos):\n    return [t.title for t in todos]\n";

fn pipeline_plan(dir: &Path) -> PathBuf {
    let step = |id: &str, ty: &str, deps: &[&str], files: &[&str], extra: serde_json::Value| {
        let mut context = serde_json::json!({"language": "python", "files": files});
        if let (Some(c), Some(e)) = (context.as_object_mut(), extra.as_object()) {
            c.extend(e.clone());
        }
        serde_json::json!({"id": id, "description": format!("[[{id}]] the {id} step"),
            "type": ty, "dependencies": deps, "validation_criteria": ["works"], "context": context})
    };
    let plan = serde_json::json!({
        "task_id": "pipeline-e2e",
        "description": "A small todo service",
        "steps": [
            step("models", "code_generation", &[], &["app/models.py"], serde_json::json!({"provider": "gemini"})),
            step("service", "code_generation", &["models"], &["app/service.py"], serde_json::json!({})),
            step("tests", "testing", &["service"], &["tests/test_service.py"], serde_json::json!({})),
            step("api", "code_generation", &["service"], &["app/api.py"], serde_json::json!({"review": true})),
            step("summary", "analysis", &["api", "tests"], &["app/service.py"], serde_json::json!({})),
        ]
    });
    let path = dir.join("plan.json");
    std::fs::write(&path, plan.to_string()).expect("plan");
    path
}

fn pipeline_workspace() -> PathBuf {
    let ws = tempfile::tempdir().expect("dir").keep();
    std::fs::create_dir_all(ws.join("app")).expect("mkdir");
    std::fs::write(ws.join("app/__init__.py"), "").expect("write");
    std::fs::write(ws.join("app/models.py"), "# old models\n").expect("write");
    std::fs::write(ws.join("README.md"), "# Todo\n\nThe user's own notes.\n").expect("write");
    ws
}

const DEEPSEEK: &str = "deepseek-v4-flash";
const KIMI: &str = "kimi-k2.6";

#[test]
fn a_five_step_plan_over_three_providers_is_repaired_reviewed_applied_and_rolled_back() {
    let ds = |code: &str| chat_completion(DEEPSEEK, code, 1000, 200);
    let providers = Providers::start(
        ByTag::new(vec![
            ("models", vec![ds(&fenced("app/models.py", MODELS_PY))]),
            (
                "service",
                vec![
                    ds(&fenced("app/service.py", SERVICE_UNSAFE_PY)),
                    ds(&fenced("app/service.py", SERVICE_PY)),
                ],
            ),
            (
                "tests",
                vec![
                    ds(&fenced("tests/test_service.py", TESTS_WRONG_PY)),
                    ds(&fenced("tests/test_service.py", TESTS_PY)),
                ],
            ),
            (
                "api",
                vec![
                    ds(&fenced("app/api.py", API_V1_PY)),
                    ds(&fenced("app/api.py", API_PY)),
                ],
            ),
            (
                "summary",
                vec![ds("# Summary\n\nThe service adds todos.\n")],
            ),
        ]),
        ByTag::new(vec![(
            "review:api",
            vec![
                chat_completion(
                    KIMI,
                    r#"{"approve": false, "issues": [{"severity": "high", "message": "keep the order the todos were added in", "line": 2}]}"#,
                    1000,
                    100,
                ),
                chat_completion(KIMI, r#"{"approve": true, "issues": []}"#, 1000, 100),
            ],
        )]),
    );
    let out = tempfile::tempdir().expect("out");
    let plan = pipeline_plan(out.path());
    let ws = pipeline_workspace();
    let before = tree(&ws);
    let o = providers.run(&[], &plan, &ws, out.path());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // Each file holds exactly its own repaired block; the user's files are untouched.
    let mut after = tree(&ws);
    let take = |t: &mut std::collections::BTreeMap<String, Vec<u8>>, p: &str| {
        String::from_utf8(t.remove(p).unwrap_or_else(|| panic!("{p} written"))).expect("utf-8")
    };
    assert_eq!(take(&mut after, "app/models.py"), MODELS_PY);
    assert_eq!(take(&mut after, "app/service.py"), SERVICE_PY);
    assert_eq!(take(&mut after, "tests/test_service.py"), TESTS_PY);
    assert_eq!(take(&mut after, "app/api.py"), API_PY);
    assert_eq!(after.get("README.md"), before.get("README.md"));
    assert_eq!(after.get("app/__init__.py"), before.get("app/__init__.py"));
    assert_eq!(after.len(), 2, "nothing else written: {:?}", after.keys());

    let run_dir = only_run_dir(out.path(), "pipeline-e2e");
    let report = read_json(&run_dir.join("report.json"));
    let step = |id: &str| {
        report["steps"]
            .as_array()
            .expect("steps")
            .iter()
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("step {id}"))
    };
    // Gemini (the step's own choice) was overloaded: the step fell back to DeepSeek.
    let models = step("models");
    assert_eq!(models["attempts"][0]["provider"], "gemini", "{models}");
    assert_eq!(models["attempts"][0]["error"]["kind"], "server", "{models}");
    assert_eq!(models["attempts"][0]["cost"], 0);
    assert_eq!(models["provider"], "deepseek");
    assert!(!providers.requests(&providers.gemini).is_empty());
    // Blocked code and a failing test went back to the model once each, with the reason.
    let service = step("service");
    assert_eq!(
        service["rejected"].as_array().map(Vec::len),
        Some(1),
        "{service}"
    );
    assert!(
        service["rejected"][0]
            .as_str()
            .unwrap_or_default()
            .contains("B605"),
        "{service}"
    );
    let tests = step("tests");
    assert_eq!(
        tests["rejected"].as_array().map(Vec::len),
        Some(1),
        "{tests}"
    );
    assert!(
        tests["rejected"][0]
            .as_str()
            .unwrap_or_default()
            .contains("test_ids_count_up"),
        "{tests}"
    );
    // The gate-keeper rejected the first api module, then approved the repair.
    let api = step("api");
    assert_eq!(api["rejected"].as_array().map(Vec::len), Some(1), "{api}");
    assert!(
        api["rejected"][0]
            .as_str()
            .unwrap_or_default()
            .contains("keep the order"),
        "{api}"
    );
    assert_eq!(api["verdict"]["approve"], true, "{api}");
    assert_eq!(api["provider"], "deepseek", "the author, not the reviewer");
    assert!(
        step("summary")["files"].as_array().is_none(),
        "analysis writes no file"
    );

    // Costs: every DeepSeek answer is 1000 in + 200 out at $0.14/$0.28 per M = 196 µ$; every
    // Kimi review 1000 in + 100 out at $0.95/$4.00 per M = 1350 µ$; failed calls cost nothing.
    let cost = |id: &str| step(id)["cost"].as_u64().expect("cost");
    assert_eq!(cost("models"), 196);
    assert_eq!(cost("service"), 2 * 196);
    assert_eq!(cost("tests"), 2 * 196);
    assert_eq!(cost("api"), 2 * 196 + 2 * 1350);
    assert_eq!(cost("summary"), 196);
    assert_eq!(report["totals"]["cost"], 7 * 196 + 2 * 1350 + 196);
    for s in report["steps"].as_array().expect("steps") {
        let sum: u64 = s["attempts"]
            .as_array()
            .expect("attempts")
            .iter()
            .map(|a| a["cost"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(s["cost"].as_u64(), Some(sum), "{s}");
    }
    let answered =
        providers.requests(&providers.deepseek).len() + providers.requests(&providers.kimi).len();
    assert_eq!(
        answered,
        8 + 2,
        "7 generations + 1 analysis on DeepSeek, 2 reviews on Kimi"
    );

    // Rollback restores the workspace byte for byte, and keeps a file the user added since.
    std::fs::write(ws.join("notes.txt"), "mine\n").expect("write");
    let rolled = bin()
        .args([
            "run",
            "rollback",
            report["run_id"].as_str().expect("id"),
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("runs");
    assert_eq!(rolled.status.code(), Some(0), "{}", text(&rolled.stderr));
    let mut restored = tree(&ws);
    assert_eq!(
        restored.remove("notes.txt").as_deref(),
        Some(&b"mine\n"[..])
    );
    assert_eq!(restored, before);
    let all = format!("{}{}{report}", text(&o.stdout), text(&o.stderr));
    assert!(
        !all.contains("e2e-deepseek-key") && !all.contains("e2e-gemini-key"),
        "a key leaked"
    );
}

fn run_dirs(out: &Path, task: &str) -> Vec<serde_json::Value> {
    let mut reports: Vec<serde_json::Value> = std::fs::read_dir(out.join(task))
        .expect("task folder")
        .filter_map(Result::ok)
        .map(|e| read_json(&e.path().join("report.json")))
        .collect();
    reports.sort_by_key(|r| r["workflow"]["number"].as_u64());
    reports
}

#[test]
fn proto_runs_fast_applies_then_double_checks_what_it_applied() {
    // The double-check of `repository` rejects; the proto run still applied the files (that is
    // what proto means), and the workflow fails with the verdict in the report.
    let script = "steps:\n  repository.review:\n    - text: '{\"approve\": false, \"issues\": [{\"severity\": \"medium\", \"message\": \"no input validation\", \"line\": 3}]}'\n";
    let (ran, ws, dir) = run_example_with_script(script, &["--workflow", "proto"]);
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    let stdout = text(&ran.stdout);
    assert!(stdout.contains("proto workflow:"), "{stdout}");
    assert!(stdout.contains("repository rejected"), "{stdout}");
    assert!(stdout.contains("no input validation"), "{stdout}");
    assert!(
        ws.join("app/repository.py").is_file(),
        "the fast pass applied"
    );

    let reports = run_dirs(&dir.path().join("out"), "todo-api-example");
    assert_eq!(reports.len(), 2);
    let (fast, check) = (&reports[0], &reports[1]);
    assert_eq!(fast["mode"], "fast");
    assert_eq!(fast["workflow"]["phase"], "run");
    assert_eq!(fast["status"], "succeeded");
    assert_eq!(check["mode"], "double-check");
    assert_eq!(check["workflow"]["phase"], "double-check");
    assert_eq!(check["workflow"]["previous_run"], fast["run_id"]);
    let steps = check["steps"].as_array().expect("steps");
    let repository = steps
        .iter()
        .find(|s| s["id"] == "repository")
        .expect("step");
    assert_eq!(repository["verdict"]["approve"], false, "{repository}");
    assert_eq!(repository["verdict"]["issues"][0]["line"], 3);
    assert_eq!(repository["failure"], "validation_failed");
    // Every other step that wrote files was approved; analysis steps had nothing to check.
    for s in steps.iter().filter(|s| s["id"] != "repository") {
        assert_eq!(s["status"], "succeeded", "{s}");
        match s["verdict"]["approve"].as_bool() {
            Some(approved) => assert!(approved, "{s}"),
            None => assert!(s["attempts"].as_array().is_some_and(Vec::is_empty), "{s}"),
        }
    }
    // Nothing was generated or applied by the double-check.
    assert!(steps.iter().all(|s| s["files"].is_null()), "{check}");
}

#[test]
fn prod_drafts_fast_refines_with_the_draft_then_double_checks() {
    let ds = |code: &str| chat_completion(DEEPSEEK, code, 1000, 200);
    let providers = Providers::start(
        ByTag::new(vec![(
            "service",
            vec![
                ds(&fenced("app/service.py", SERVICE_UNSAFE_PY)),
                ds(&fenced("app/service.py", SERVICE_PY)),
            ],
        )]),
        ByTag::new(vec![(
            "review:service",
            vec![chat_completion(
                KIMI,
                r#"{"approve": true, "issues": []}"#,
                1000,
                100,
            )],
        )]),
    );
    let out = tempfile::tempdir().expect("out");
    let plan = out.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({"task_id": "prod-e2e", "description": "d", "steps": [
            {"id": "service", "description": "[[service]] the service", "type": "code_generation",
             "context": {"language": "python", "files": ["app/service.py"]}}]})
        .to_string(),
    )
    .expect("plan");
    let ws = pipeline_workspace();
    std::fs::write(ws.join("app/models.py"), MODELS_PY).expect("write");
    let o = providers.run(&["--workflow", "prod"], &plan, &ws, out.path());
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // The draft (unsafe, never applied) reached the refinement as context; the refined,
    // checked file is what the workspace holds.
    let calls = providers.requests(&providers.deepseek);
    assert_eq!(calls.len(), 2, "one draft, one refinement");
    let refine = String::from_utf8_lossy(&calls[1].body).into_owned();
    assert!(refine.contains("Draft to improve"), "{refine}");
    assert!(
        refine.contains("os.system"),
        "the draft's text is in the prompt"
    );
    assert_eq!(
        std::fs::read_to_string(ws.join("app/service.py")).expect("written"),
        SERVICE_PY
    );
    let reports = run_dirs(out.path(), "prod-e2e");
    let phases: Vec<&str> = reports
        .iter()
        .map(|r| r["workflow"]["phase"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(phases, ["draft", "refine", "double-check"]);
    assert_eq!(reports[0]["mode"], "fast");
    assert_eq!(reports[1]["mode"], "build");
    assert!(
        reports[0]["steps"][0]["files"].is_null(),
        "the draft applied nothing"
    );
    assert_eq!(reports[2]["steps"][0]["verdict"]["approve"], true);
    assert_eq!(reports[2]["steps"][0]["provider"], "kimi");
    assert_eq!(providers.requests(&providers.kimi).len(), 1);
}

#[test]
fn a_budget_that_runs_out_stops_the_pipeline_without_passing_its_cap() {
    let ds = |code: &str| chat_completion(DEEPSEEK, code, 1000, 200);
    let providers = Providers::start(
        ByTag::new(vec![
            ("models", vec![ds(&fenced("app/models.py", MODELS_PY))]),
            ("service", vec![ds(&fenced("app/service.py", SERVICE_PY))]),
            (
                "tests",
                vec![ds(&fenced("tests/test_service.py", TESTS_PY))],
            ),
            ("api", vec![ds(&fenced("app/api.py", API_PY))]),
            ("summary", vec![ds("# Summary\n")]),
        ]),
        ByTag::new(vec![(
            "review:api",
            vec![chat_completion(
                KIMI,
                r#"{"approve": true, "issues": []}"#,
                1000,
                100,
            )],
        )]),
    );
    let out = tempfile::tempdir().expect("out");
    let plan = pipeline_plan(out.path());
    let ws = pipeline_workspace();
    // Each DeepSeek call may cost up to ~2.5 m$ (8192 output tokens at $0.28/M plus the
    // prompt) and really costs 0.196 m$: a 3 m$ cap admits the first calls, then refuses.
    let o = providers.run(&["--budget", "0.003"], &plan, &ws, out.path());
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let report = read_json(&only_run_dir(out.path(), "pipeline-e2e").join("report.json"));
    let steps = report["steps"].as_array().expect("steps");
    let status = |id: &str| {
        steps
            .iter()
            .find(|s| s["id"] == id)
            .map(|s| s["status"].as_str().unwrap_or("?").to_owned())
    };
    assert_eq!(status("models").as_deref(), Some("succeeded"), "{report}");
    let refused: Vec<&serde_json::Value> = steps
        .iter()
        .filter(|s| s["failure"] == "budget_exceeded")
        .collect();
    assert!(!refused.is_empty(), "{report}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("budget for run"),
        "{}",
        refused[0]
    );
    assert_eq!(status("summary").as_deref(), Some("skipped"), "{report}");
    let spent = report["totals"]["cost"].as_u64().expect("cost");
    assert!(spent <= 3000, "spent {spent} µ$ of a 3000 µ$ cap");
    // Only calls that were admitted reached a provider, and each was paid for.
    let paid = steps
        .iter()
        .flat_map(|s| s["attempts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["provider"] == "deepseek" || a["provider"] == "kimi")
        .count();
    let received =
        providers.requests(&providers.deepseek).len() + providers.requests(&providers.kimi).len();
    assert_eq!(paid, received);
    // The refused step wrote nothing.
    for s in &refused {
        let file = s["id"].as_str().map(|id| match id {
            "tests" => "tests/test_service.py",
            "api" => "app/api.py",
            _ => "app/service.py",
        });
        if let Some(file) = file.filter(|_| s["id"] != "service") {
            assert!(!ws.join(file).exists(), "{file} written by a refused step");
        }
    }
}

#[test]
fn a_plan_whose_files_escape_the_workspace_is_rejected_before_any_call() {
    let providers = Providers::start(ByTag::new(vec![]), ByTag::new(vec![]));
    let out = tempfile::tempdir().expect("out");
    let ws = pipeline_workspace();
    for escape in ["../outside.py", "/etc/cron.d/x.py", "app/../../outside.py"] {
        let plan = out.path().join("escape.json");
        std::fs::write(
            &plan,
            serde_json::json!({"task_id": "escape", "description": "d", "steps": [
                {"id": "s", "description": "[[s]] write", "type": "code_generation",
                 "context": {"files": [escape]}}]})
            .to_string(),
        )
        .expect("plan");
        let o = providers
            .command()
            .arg(&plan)
            .arg("--workspace")
            .arg(&ws)
            .arg("--out")
            .arg(out.path())
            .output()
            .expect("runs");
        assert_eq!(o.status.code(), Some(2), "{escape}: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains(escape),
            "{escape}: {}",
            text(&o.stderr)
        );
    }
    for server in [&providers.gemini, &providers.deepseek, &providers.kimi] {
        assert!(providers.requests(server).is_empty(), "no call was made");
    }
    assert!(!ws.parent().expect("parent").join("outside.py").exists());
    assert!(!out.path().join("escape").exists(), "no run folder either");
}

#[test]
fn a_plan_sets_its_own_safety_policy_review_and_sandbox_switch() {
    // The plan allows `requests` (blocked by default), turns the review on and fail-open for
    // all its steps, and switches the sandbox off for the step whose module would not import
    // there (no `requests` inside the sandbox).
    let script = "steps:\n  repository:\n    - text: |\n        ```python path=app/repository.py\n        import requests\n\n\n        def fetch(url):\n            return requests.get(url, timeout=5).json()\n        ```\n      times: 5\n  repository.review:\n    - text: 'no verdict here'\n      times: 3\n";
    let dir = tempfile::tempdir().expect("dir");
    let mut plan: serde_json::Value = read_json(&example_plan());
    plan["safety"] = serde_json::json!({"imports": {"allow": ["requests"]}});
    plan["review"] = serde_json::json!({"enabled": true, "fail_open": true});
    let steps = plan["steps"].as_array_mut().expect("steps");
    let repository = steps
        .iter_mut()
        .find(|s| s["id"] == "repository")
        .expect("step");
    repository["context"]["verify"] = serde_json::json!(false);
    let plan_path = dir.path().join("plan.json");
    std::fs::write(&plan_path, plan.to_string()).expect("plan");
    let script_path = dir.path().join("mock.yaml");
    std::fs::write(&script_path, script).expect("script");
    let ws = example_workspace();
    let ran = bin()
        .args(["run", "--offline", "--mock-script"])
        .arg(&script_path)
        .arg(&plan_path)
        .arg("--workspace")
        .arg(&ws)
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .expect("runs");
    assert_eq!(
        ran.status.code(),
        Some(0),
        "{}{}",
        text(&ran.stdout),
        text(&ran.stderr)
    );
    let written = std::fs::read_to_string(ws.join("app/repository.py")).expect("applied");
    assert!(written.contains("import requests"), "{written}");
    let step = step_report(&dir.path().join("out"), "repository");
    assert!(step["rejected"].is_null(), "{step}");
    // The review ran (fail-open: its non-answer did not block), and was paid for.
    assert!(
        step["attempts"].as_array().expect("attempts").len() >= 2,
        "{step}"
    );

    // Without the plan's settings the same answer is blocked by the safety gate.
    plan["safety"] = serde_json::Value::Null;
    std::fs::write(&plan_path, plan.to_string()).expect("plan");
    let ws = example_workspace();
    let ran = bin()
        .args(["run", "--offline", "--mock-script"])
        .arg(&script_path)
        .arg(&plan_path)
        .arg("--workspace")
        .arg(&ws)
        .arg("--out")
        .arg(dir.path().join("out2"))
        .output()
        .expect("runs");
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    assert!(!ws.join("app/repository.py").exists());

    // A bad setting is refused before anything runs, naming where it is.
    plan["safety"] = serde_json::json!({"disable_rules": ["B999"]});
    std::fs::write(&plan_path, plan.to_string()).expect("plan");
    let checked = bin()
        .args(["plan", "validate"])
        .arg(&plan_path)
        .output()
        .expect("runs");
    assert_eq!(checked.status.code(), Some(2), "{}", text(&checked.stdout));
    let said = format!("{}{}", text(&checked.stdout), text(&checked.stderr));
    assert!(said.contains("safety") && said.contains("B999"), "{said}");
}

#[test]
fn tests_named_by_the_plan_run_against_the_step_and_failures_are_repaired() {
    let dir = tempfile::tempdir().expect("dir");
    let ws = dir.path().join("ws");
    std::fs::create_dir_all(ws.join("tests")).expect("mkdir");
    std::fs::write(
        ws.join("tests/test_calc.py"),
        "import unittest\n\nfrom calc import add\n\n\nclass AddTest(unittest.TestCase):\n    def test_adds(self):\n        self.assertEqual(add(2, 3), 5)\n",
    )
    .expect("write");
    let before = tree(&ws);
    let plan = |tests: &str| {
        serde_json::json!({"task_id": "named-tests", "description": "d", "steps": [
            {"id": "calc", "description": "Write calc.py with add(a, b)", "type": "code_generation",
             "context": {"language": "python", "files": ["calc.py"], "tests": [tests]}}]})
        .to_string()
    };
    std::fs::write(dir.path().join("plan.json"), plan("tests/test_calc.py")).expect("plan");
    std::fs::write(
        dir.path().join("mock.yaml"),
        "steps:\n  calc:\n    - text: \"```python path=calc.py\\ndef add(a, b):\\n    return a - b\\n```\\n\"\n    - text: \"```python path=calc.py\\ndef add(a, b):\\n    return a + b\\n```\\n\"\n",
    )
    .expect("script");
    let run = |out: &str| {
        bin()
            .current_dir(dir.path())
            .args([
                "run",
                "plan.json",
                "--offline",
                "--mock-script",
                "mock.yaml",
            ])
            .args(["--workspace", "ws", "--out", out])
            .output()
            .expect("runs")
    };
    let ran = run("out");
    assert_eq!(ran.status.code(), Some(0), "{}", text(&ran.stderr));
    assert_eq!(
        std::fs::read_to_string(ws.join("calc.py")).expect("written"),
        "def add(a, b):\n    return a + b\n"
    );
    let step = task_step_report(&dir.path().join("out"), "named-tests", "calc");
    let rejected = step["rejected"][0].as_str().unwrap_or_default();
    assert!(rejected.contains("test_adds"), "{step}");
    assert_eq!(
        tree(&ws).get("tests/test_calc.py"),
        before.get("tests/test_calc.py")
    );

    // A test file that does not exist fails the step before any call.
    std::fs::write(dir.path().join("plan.json"), plan("tests/test_nope.py")).expect("plan");
    let ran = run("out2");
    assert_eq!(ran.status.code(), Some(1), "{}", text(&ran.stderr));
    let step = task_step_report(&dir.path().join("out2"), "named-tests", "calc");
    assert_eq!(step["failure"], "context", "{step}");
    assert!(
        step["attempts"].as_array().is_some_and(Vec::is_empty),
        "{step}"
    );
}
