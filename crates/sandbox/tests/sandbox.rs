//! Every limit and isolation point of the sandbox, against the real CPython-for-WASI runtime.
//! The runtime must be installed first (`python3 scripts/fetch-sandbox-runtime.py`, which
//! `scripts/test.sh` runs).

use std::sync::OnceLock;
use std::time::Duration;

use aetherflow_sandbox::unittest::{TestRequest, TestStatus, run_tests};
use aetherflow_sandbox::{
    InputFile, Limits, ModuleSource, RunOutcome, RunRequest, Sandbox, SandboxConfig,
};

fn config() -> SandboxConfig {
    let config = SandboxConfig::default();
    assert!(
        config.runtime_dir.join("python-3.11.1.wasm").is_file(),
        "the sandbox runtime is not installed in {}: run `python3 scripts/fetch-sandbox-runtime.py` \
         (scripts/test.sh does) or set AETHERFLOW_SANDBOX_RUNTIME",
        config.runtime_dir.display()
    );
    config
}

fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| Sandbox::new(config()).expect("sandbox loads"))
}

fn run_with(code: &str, limits: Limits) -> RunOutcome {
    let request = RunRequest {
        limits,
        ..RunRequest::code(code)
    };
    sandbox().run_blocking(&request).expect("sandbox runs")
}

fn run(code: &str) -> RunOutcome {
    run_with(code, Limits::default())
}

fn short() -> Limits {
    Limits {
        timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[test]
fn runs_python_and_captures_its_output() {
    let out = run("import sys\nprint(1 + 1)\nprint('to stderr', file=sys.stderr)");
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "2\n");
    assert_eq!(out.stderr, "to stderr\n");
    assert!(out.success());
}

#[test]
fn exit_codes_and_exceptions_come_back() {
    let out = run("import sys; sys.exit(3)");
    assert_eq!(out.exit_code, Some(3));
    let out = run("raise ValueError('boom')");
    assert_eq!(out.exit_code, Some(1));
    assert!(out.stderr.contains("ValueError: boom"), "{}", out.stderr);
    assert!(!out.success());
}

#[test]
fn argv_stdin_and_input_files_reach_the_code() {
    let request = RunRequest {
        code: "import sys\nprint(sys.argv[1:])\nprint(sys.stdin.read().upper())\n\
               print(open('data/in.txt').read())\nopen('out.txt', 'w').write('written')"
            .to_owned(),
        argv: vec!["--flag".into(), "value".into()],
        stdin: b"from stdin".to_vec(),
        files: vec![InputFile {
            path: "data/in.txt".into(),
            contents: b"from a file".to_vec(),
        }],
        limits: Limits::default(),
        collect: vec!["out.txt".into(), "missing.txt".into()],
    };
    let out = sandbox().run_blocking(&request).unwrap();
    assert_eq!(
        out.stdout, "['--flag', 'value']\nFROM STDIN\nfrom a file\n",
        "{out:?}"
    );
    assert_eq!(out.collected.len(), 1);
    assert_eq!(out.collected[0].path, "out.txt");
    assert_eq!(out.collected[0].contents, b"written");
}

#[test]
fn an_infinite_loop_stops_at_the_wall_clock_limit() {
    let out = run_with("while True:\n    pass", short());
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, None);
    assert!(
        out.duration < Duration::from_millis(1500),
        "{:?}",
        out.duration
    );
    assert_eq!(out.failure_summary().as_deref(), Some("timed out"));
}

#[test]
fn a_huge_computation_stops_at_the_wall_clock_limit() {
    let out = run_with("x = 10**10**8", short());
    assert!(out.timed_out, "{out:?}");
    assert!(
        out.duration < Duration::from_millis(1500),
        "{:?}",
        out.duration
    );
}

#[test]
fn a_long_sleep_is_cut_at_the_deadline() {
    let out = run_with("import time\ntime.sleep(3600)", short());
    assert!(out.timed_out, "{out:?}");
    assert!(
        out.duration < Duration::from_millis(1500),
        "{:?}",
        out.duration
    );
    // Short sleeps still sleep.
    let out = run(
        "import time\nt = time.monotonic()\ntime.sleep(0.05)\nprint(time.monotonic() - t >= 0.05)",
    );
    assert_eq!(out.stdout, "True\n", "{out:?}");
}

#[test]
fn memory_past_the_cap_is_an_out_of_memory_outcome() {
    let limits = Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    };
    let out = run_with("x = 'a' * 10**9", limits);
    assert!(out.out_of_memory, "{out:?}");
    assert!(out.stderr.contains("MemoryError"), "{}", out.stderr);
    assert_ne!(out.exit_code, Some(0));
    // The sandbox is still fine afterwards.
    assert_eq!(run("print('alive')").stdout, "alive\n");
}

#[test]
fn output_past_the_cap_is_dropped_and_flagged() {
    let limits = Limits {
        output_bytes: 100,
        ..Limits::default()
    };
    let out = run_with(
        "import sys\nfor _ in range(1000):\n    print('x' * 50)\n    print('y' * 50, file=sys.stderr)\nprint('done')",
        limits,
    );
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(out.stdout.len(), 100);
    assert_eq!(out.stderr.len(), 100);
    assert!(out.stdout_truncated && out.stderr_truncated);
}

#[test]
fn there_is_no_network() {
    let out = run(r#"
import socket, urllib.request, http.client
failed = []
for name, attempt in [
    ("socket", lambda: socket.create_connection(("93.184.216.34", 80), timeout=1)),
    ("urllib", lambda: urllib.request.urlopen("http://example.com", timeout=1)),
    ("http.client", lambda: http.client.HTTPConnection("example.com", timeout=1).request("GET", "/")),
    ("dns", lambda: socket.getaddrinfo("example.com", 80)),
]:
    try:
        attempt()
        print(name, "CONNECTED")
    except Exception as e:
        failed.append(name)
print(",".join(failed))
"#);
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        "socket,urllib,http.client,dns",
        "{out:?}"
    );
}

#[test]
fn no_host_environment_variable_reaches_the_guest() {
    // The host has variables (PATH at least); the guest sees only the four the sandbox sets.
    let host_path = std::env::var("PATH").unwrap_or_default();
    assert!(!host_path.is_empty());
    let out = run("import os\nprint(sorted(os.environ))");
    assert_eq!(
        out.stdout.trim(),
        "['PYTHONDONTWRITEBYTECODE', 'PYTHONHASHSEED', 'PYTHONHOME', 'PYTHONNOUSERSITE']",
        "{out:?}"
    );
}

#[test]
fn the_host_filesystem_and_processes_are_out_of_reach() {
    let out = run(r#"
import os
results = {}
def attempt(name, f):
    try:
        f()
        results[name] = "ALLOWED"
    except BaseException as e:
        results[name] = type(e).__name__
attempt("read /etc/passwd", lambda: open("/etc/passwd").read())
attempt("read ../../etc/passwd", lambda: open("../../etc/passwd").read())
attempt("write stdlib", lambda: open("/usr/local/lib/evil.txt", "w").write("x"))
attempt("os.system", lambda: os.system("echo pwned") == 0 or 1 / 0)
attempt("subprocess", lambda: __import__("subprocess").run(["echo", "pwned"]))
attempt("ctypes", lambda: __import__("ctypes").CDLL(None))
attempt("os.fork", lambda: os.fork())
print(sorted(os.listdir("/")))
for k, v in results.items():
    print(k, v)
"#);
    assert_eq!(out.exit_code, Some(0), "{out:?}");
    let mut lines = out.stdout.lines();
    // The guest's root is its own scratch folder (plus the read-only stdlib mount).
    assert_eq!(lines.next(), Some("['main.py']"), "{out:?}");
    for line in lines {
        assert!(!line.ends_with("ALLOWED"), "{line}\n{out:?}");
    }
    assert!(!out.stdout.contains("pwned"));
}

#[test]
fn the_scratch_folder_is_capped_and_deleted() {
    let root = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        scratch_root: Some(root.path().to_path_buf()),
        ..config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let request = RunRequest {
        limits: Limits {
            scratch_bytes: 4 << 20,
            ..short()
        },
        ..RunRequest::code(
            "with open('big.bin', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
        )
    };
    let out = sandbox.run_blocking(&request).unwrap();
    assert!(out.scratch_exceeded, "{out:?}");
    assert!(!out.timed_out);
    let out = sandbox
        .run_blocking(&RunRequest::code("open('f.txt', 'w').write('x')"))
        .unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn a_crashing_interpreter_is_a_trap_not_a_host_crash() {
    let out = run("import os\nos.abort()");
    assert!(
        out.trap
            .as_deref()
            .is_some_and(|t| t.contains("unreachable")),
        "{out:?}"
    );
    assert_eq!(out.exit_code, None);
    assert!(!out.success());
    // Runaway recursion ends in a limit too, never in the host.
    let out = run_with(
        "import sys\nsys.setrecursionlimit(10**7)\ndef f(n):\n    return f(n + 1)\nf(0)",
        Limits {
            memory_bytes: 64 << 20,
            ..short()
        },
    );
    assert!(!out.success(), "{out:?}");
    assert_eq!(run("print('alive')").stdout, "alive\n");
}

#[test]
fn fuel_limits_instructions() {
    let config = SandboxConfig {
        fuel_metering: true,
        ..config()
    };
    let sandbox = Sandbox::new(config).unwrap();
    let request = RunRequest {
        limits: Limits {
            fuel: Some(50_000_000),
            ..Limits::default()
        },
        ..RunRequest::code("while True:\n    pass")
    };
    let out = sandbox.run_blocking(&request).unwrap();
    assert!(out.fuel_exhausted, "{out:?}");
    assert!(!out.timed_out);
    // Without fuel metering a fuel limit is refused, not ignored.
    let err = sandbox_without_fuel_refuses_fuel();
    assert!(err.contains("fuel metering"), "{err}");
}

fn sandbox_without_fuel_refuses_fuel() -> String {
    let request = RunRequest {
        limits: Limits {
            fuel: Some(1),
            ..Limits::default()
        },
        ..RunRequest::code("pass")
    };
    sandbox()
        .run_blocking(&request)
        .expect_err("a fuel limit without fuel metering is refused")
        .to_string()
}

#[test]
fn the_compiled_module_is_cached_and_a_damaged_cache_is_recompiled() {
    let compiled = tempfile::tempdir().unwrap();
    let config = SandboxConfig {
        compiled_dir: Some(compiled.path().join("c")),
        ..config()
    };
    let first = Sandbox::new(config.clone()).unwrap();
    assert_eq!(
        first.load_report().expect("built").source,
        ModuleSource::Compiled
    );
    let path = first.load_report().expect("built").compiled_path.clone();
    assert!(path.is_file());
    let second = Sandbox::new(config.clone()).unwrap();
    assert_eq!(
        second.load_report().expect("built").source,
        ModuleSource::Cache
    );
    assert_eq!(
        second
            .run_blocking(&RunRequest::code("print(6 * 7)"))
            .unwrap()
            .stdout,
        "42\n"
    );

    // Damage it the way a crash or a bad disk would: replace it with bytes that are not a
    // module (by rename, as anything that writes it must, since live sandboxes still use it).
    let damaged = path.with_extension("tmp");
    std::fs::write(&damaged, b"not a compiled module").unwrap();
    std::fs::rename(&damaged, &path).unwrap();
    let third = Sandbox::new(config).unwrap();
    assert_eq!(
        third.load_report().expect("built").source,
        ModuleSource::Compiled
    );
    assert_eq!(
        third
            .run_blocking(&RunRequest::code("print(6 * 7)"))
            .unwrap()
            .stdout,
        "42\n"
    );
}

#[test]
fn fifty_concurrent_runs_all_finish_correctly() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let outcomes = rt.block_on(async {
        let runs = (0..50).map(|i| {
            let sandbox = sandbox().clone();
            async move {
                let out = sandbox
                    .run(RunRequest::code(format!("print({i} * {i})")))
                    .await
                    .unwrap();
                (i, out)
            }
        });
        futures_join_all(runs).await
    });
    assert_eq!(outcomes.len(), 50);
    for (i, out) in outcomes {
        assert_eq!(out.stdout, format!("{}\n", i * i), "{out:?}");
        assert!(out.success());
    }
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("sandbox task"));
    }
    out
}

#[test]
fn unittest_results_come_back_per_test() {
    let files = vec![
        InputFile {
            path: "calc.py".into(),
            contents: b"def add(a, b):\n    return a + b\n\ndef div(a, b):\n    return a / b\n"
                .to_vec(),
        },
        InputFile {
            path: "tests/test_calc.py".into(),
            contents: br#"
import unittest
from calc import add, div

class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(add(2, 3), 5)

    def test_add_wrong(self):
        self.assertEqual(add(2, 2), 5)

    def test_div_zero(self):
        div(1, 0)

    @unittest.skip("not today")
    def test_skipped(self):
        pass
"#
            .to_vec(),
        },
    ];
    let request = TestRequest {
        files,
        test_files: vec!["tests/test_calc.py".into()],
        limits: Limits::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let report = rt.block_on(run_tests(sandbox(), &request)).unwrap();
    let status = |name: &str| {
        report
            .tests
            .iter()
            .find(|t| t.id.ends_with(name))
            .map(|t| t.status)
    };
    assert_eq!(status("test_add"), Some(TestStatus::Passed), "{report:?}");
    assert_eq!(status("test_add_wrong"), Some(TestStatus::Failed));
    assert_eq!(status("test_div_zero"), Some(TestStatus::Error));
    assert_eq!(status("test_skipped"), Some(TestStatus::Skipped));
    assert!(!report.passed());
    let failed: Vec<_> = report.failures().map(|t| t.id.as_str()).collect();
    assert_eq!(failed.len(), 2);
    assert!(report.failures().any(|t| {
        t.message
            .as_deref()
            .is_some_and(|m| m.contains("ZeroDivisionError"))
    }));
}

#[test]
fn a_test_module_that_does_not_import_is_an_error_result() {
    let request = TestRequest {
        files: vec![InputFile {
            path: "test_broken.py".into(),
            contents: b"import does_not_exist\n".to_vec(),
        }],
        test_files: vec!["test_broken.py".into()],
        limits: Limits::default(),
    };
    let report = aetherflow_sandbox::unittest::run_tests_blocking(sandbox(), &request).unwrap();
    assert!(!report.passed());
    assert!(
        report.tests.iter().any(|t| t.status == TestStatus::Error
            && t.message
                .as_deref()
                .is_some_and(|m| m.contains("does_not_exist"))),
        "{report:?}"
    );
}

#[test]
fn a_lazy_sandbox_loads_on_its_first_run_and_reports_a_missing_runtime_then() {
    let lazy = Sandbox::lazy(config());
    assert!(lazy.load_report().is_none(), "nothing loaded yet");
    assert_eq!(
        lazy.run_blocking(&RunRequest::code("print(6 * 7)"))
            .expect("runs")
            .stdout,
        "42\n"
    );
    assert!(lazy.load_report().is_some(), "loaded by the run");

    let empty = tempfile::tempdir().unwrap();
    let missing = Sandbox::lazy(SandboxConfig {
        runtime_dir: empty.path().to_path_buf(),
        ..config()
    });
    let err = missing
        .run_blocking(&RunRequest::code("pass"))
        .expect_err("no runtime")
        .to_string();
    assert!(err.contains("fetch-sandbox-runtime"), "{err}");
}
