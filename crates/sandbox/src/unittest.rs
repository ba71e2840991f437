//! Running a generated module with its `unittest` tests inside the sandbox (unittest is in the
//! standard library zip; pytest is not), with one result per test.
//!
//! The harness runs in the same interpreter as the code under test, so a hostile module could
//! forge its own results; what it cannot do is leave the sandbox. The results are a verdict on
//! generated code that has already passed the safety gate, not a security boundary.

use serde::{Deserialize, Serialize};

use crate::{InputFile, Limits, RunOutcome, RunRequest, Sandbox, SandboxError};

const HARNESS: &str = r#"
import json, sys, traceback, unittest

results_path, names = sys.argv[1], sys.argv[2:]
sys.path.insert(0, "/")


class Collect(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.rows = []

    def _row(self, test, status, message=None):
        self.rows.append({"id": test.id(), "status": status, "message": message})

    def addSuccess(self, test):
        self._row(test, "passed")

    def addFailure(self, test, err):
        self._row(test, "failed", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        self._row(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        self._row(test, "skipped", reason)

    def addExpectedFailure(self, test, err):
        self._row(test, "passed", "expected failure")

    def addUnexpectedSuccess(self, test):
        self._row(test, "failed", "unexpected success")

    def addSubTest(self, test, subtest, err):
        if err is not None:
            status = "failed" if issubclass(err[0], test.failureException) else "error"
            self._row(subtest, status, self._exc_info_to_string(err, test))


rows = []
suite = unittest.TestSuite()
loader = unittest.TestLoader()
for name in names:
    try:
        suite.addTests(loader.loadTestsFromName(name))
    except BaseException:
        rows.append({"id": name, "status": "error", "message": traceback.format_exc()})
result = Collect()
suite.run(result)
rows.extend(result.rows)
for error in loader.errors:
    rows.append({"id": "(loader)", "status": "error", "message": error})
with open(results_path, "w") as f:
    json.dump(rows, f)
ok = rows and all(r["status"] in ("passed", "skipped") for r in rows)
print(f"{len(rows)} tests, {'ok' if ok else 'FAILED'}", file=sys.stderr)
sys.exit(0 if ok else 1)
"#;

/// A module and its tests.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestRequest {
    /// Every file the tests need (the module under test, the test files, data).
    pub files: Vec<InputFile>,
    /// Which of `files` hold tests (relative `.py` paths).
    pub test_files: Vec<String>,
    /// Limits for the whole test run.
    pub limits: Limits,
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestStatus {
    /// Passed (or failed as expected).
    Passed,
    /// An assertion failed.
    Failed,
    /// The test raised, or its module could not be imported.
    Error,
    /// Skipped by the test itself.
    Skipped,
}

/// One test's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// unittest's id, e.g. `tests.test_app.AppTest.test_add`.
    pub id: String,
    /// How it ended.
    pub status: TestStatus,
    /// The traceback or skip reason.
    pub message: Option<String>,
}

/// The results of a test run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestReport {
    /// One entry per test (empty when the run never got to report: timeout, crash).
    pub tests: Vec<TestResult>,
    /// The underlying sandbox run.
    pub outcome: RunOutcome,
}

impl TestReport {
    /// Every test passed (or was skipped), at least one ran, and the run hit no limit.
    pub fn passed(&self) -> bool {
        self.outcome.success()
            && !self.tests.is_empty()
            && self
                .tests
                .iter()
                .all(|t| matches!(t.status, TestStatus::Passed | TestStatus::Skipped))
    }

    /// The tests that failed or errored.
    pub fn failures(&self) -> impl Iterator<Item = &TestResult> {
        self.tests
            .iter()
            .filter(|t| matches!(t.status, TestStatus::Failed | TestStatus::Error))
    }
}

const RESULTS_FILE: &str = ".aetherflow-test-results.json";

fn module_name(path: &str) -> Result<String, SandboxError> {
    let stem = path.strip_suffix(".py").ok_or_else(|| {
        SandboxError::InvalidRequest(format!("test file {path:?} must be a .py file"))
    })?;
    let ok = !stem.is_empty()
        && stem.split('/').all(|part| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_alphanumeric() || c == '_')
        });
    if !ok {
        return Err(SandboxError::InvalidRequest(format!(
            "test file {path:?} is not importable: every part of its path must be a Python identifier"
        )));
    }
    Ok(stem.replace('/', "."))
}

fn build(request: &TestRequest) -> Result<RunRequest, SandboxError> {
    if request.test_files.is_empty() {
        return Err(SandboxError::InvalidRequest(
            "no test files given".to_owned(),
        ));
    }
    let mut argv = vec![RESULTS_FILE.to_owned()];
    for path in &request.test_files {
        if !request.files.iter().any(|f| &f.path == path) {
            return Err(SandboxError::InvalidRequest(format!(
                "test file {path:?} is not among the files sent"
            )));
        }
        argv.push(module_name(path)?);
    }
    Ok(RunRequest {
        code: HARNESS.to_owned(),
        argv,
        stdin: Vec::new(),
        files: request.files.clone(),
        limits: request.limits,
        collect: vec![RESULTS_FILE.to_owned()],
    })
}

fn report(mut outcome: RunOutcome) -> TestReport {
    let tests = outcome
        .collected
        .iter()
        .find(|f| f.path == RESULTS_FILE)
        .and_then(|f| serde_json::from_slice::<Vec<TestResult>>(&f.contents).ok())
        .unwrap_or_default();
    outcome.collected.retain(|f| f.path != RESULTS_FILE);
    TestReport { tests, outcome }
}

/// Runs the tests on tokio's blocking pool.
pub async fn run_tests(
    sandbox: &Sandbox,
    request: &TestRequest,
) -> Result<TestReport, SandboxError> {
    let run = build(request)?;
    sandbox.run(run).await.map(report)
}

/// Runs the tests on the calling thread.
pub fn run_tests_blocking(
    sandbox: &Sandbox,
    request: &TestRequest,
) -> Result<TestReport, SandboxError> {
    let run = build(request)?;
    sandbox.run_blocking(&run).map(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_paths_become_module_names() {
        assert_eq!(module_name("tests/test_app.py").unwrap(), "tests.test_app");
        assert!(module_name("tests/test-app.py").is_err());
        assert!(module_name("tests/test_app.txt").is_err());
        assert!(module_name("../x.py").is_err());
    }

    #[test]
    fn a_test_file_must_be_among_the_files() {
        let request = TestRequest {
            files: vec![InputFile {
                path: "app.py".into(),
                contents: b"x = 1".to_vec(),
            }],
            test_files: vec!["test_app.py".into()],
            limits: Limits::default(),
        };
        let err = build(&request).unwrap_err().to_string();
        assert!(err.contains("not among the files"), "{err}");
    }
}
