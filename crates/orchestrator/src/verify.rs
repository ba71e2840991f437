//! Sandbox verification of a step's checked files, before they are applied: test files (named
//! `test_*.py` or `*_test.py`, and those the step names in `context.tests`) are run with
//! `unittest`, and every other Python module must
//! import cleanly. Both run in the WebAssembly sandbox, never on the host, together with the
//! workspace's other Python files (so `from app.models import Todo` resolves), the step's new
//! files taking their place. A failure is feedback for the model.

use std::path::Path;

use aetherflow_sandbox::unittest::{TestRequest, run_tests};
use aetherflow_sandbox::{InputFile, Limits, RunRequest, Sandbox};

use crate::extract::ExtractedFile;

/// Workspace Python files sent along at most.
const MAX_CONTEXT_FILES: usize = 500;
/// Their bytes at most.
const MAX_CONTEXT_BYTES: u64 = 4 << 20;

const IMPORT_CHECK: &str = r#"
import importlib, sys, traceback
failed = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except BaseException:
        failed.append(f"importing {name} failed:\n" + traceback.format_exc(limit=6))
if failed:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(1)
"#;

/// Whether `path` names a test module.
pub fn is_test_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".py") && (name.starts_with("test_") || name.ends_with("_test.py"))
}

/// `app/repository.py` → `app.repository`, when every part is an identifier.
fn module_name(path: &str) -> Option<String> {
    let stem = path.strip_suffix(".py")?;
    let ok = stem.split('/').all(|part| {
        part.chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && part.chars().all(|c| c.is_alphanumeric() || c == '_')
    });
    ok.then(|| stem.replace('/', "."))
}

/// The workspace's Python files (skipping hidden folders, virtual environments and caches),
/// within the limits.
pub fn workspace_python(root: &Path) -> Vec<InputFile> {
    let mut files = Vec::new();
    let mut total = 0u64;
    let walk = walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_entry(|e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(name.starts_with('.')
                    || matches!(
                        name.as_ref(),
                        "venv" | "node_modules" | "__pycache__" | "site-packages"
                    ))
        });
    for entry in walk.flatten() {
        if files.len() >= MAX_CONTEXT_FILES {
            break;
        }
        if !entry.file_type().is_file() || entry.path().extension().is_none_or(|e| e != "py") {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let size = entry.metadata().map_or(u64::MAX, |m| m.len());
        if total.saturating_add(size) > MAX_CONTEXT_BYTES {
            continue;
        }
        if let Ok(contents) = std::fs::read(entry.path()) {
            total += size;
            files.push(InputFile {
                path: rel.to_string_lossy().replace('\\', "/"),
                contents,
            });
        }
    }
    files
}

/// Runs the step's Python files in the sandbox. `Err` is feedback for the model.
pub async fn verify(
    sandbox: &Sandbox,
    limits: Limits,
    workspace_files: Vec<InputFile>,
    step_files: &[ExtractedFile],
    named_tests: &[String],
) -> Result<(), String> {
    let python: Vec<&ExtractedFile> = step_files
        .iter()
        .filter(|f| f.path.ends_with(".py"))
        .collect();
    if python.is_empty() && named_tests.is_empty() {
        return Ok(());
    }
    let mut files: Vec<InputFile> = workspace_files
        .into_iter()
        .filter(|w| !python.iter().any(|f| f.path == w.path))
        .collect();
    files.extend(python.iter().map(|f| InputFile {
        path: f.path.clone(),
        contents: f.content.clone().into_bytes(),
    }));

    let mut tests: Vec<String> = python
        .iter()
        .filter(|f| is_test_file(&f.path))
        .map(|f| f.path.clone())
        .collect();
    for named in named_tests {
        if !files.iter().any(|f| &f.path == named) {
            return Err(format!(
                "the test file {named} named in context.tests is neither in the workspace nor among this step's files"
            ));
        }
        if !tests.contains(named) {
            tests.push(named.clone());
        }
    }
    if !tests.is_empty() {
        let report = run_tests(
            sandbox,
            &TestRequest {
                files: files.clone(),
                test_files: tests,
                limits,
            },
        )
        .await
        .map_err(|e| format!("the sandbox could not run the tests: {e}"))?;
        if !report.passed() {
            let mut lines = Vec::new();
            if let Some(why) = report.outcome.failure_summary()
                && report.tests.is_empty()
            {
                lines.push(format!(
                    "the test run {why}: {}",
                    tail(&report.outcome.stderr)
                ));
            }
            if report.tests.is_empty() && report.outcome.success() {
                lines.push("the test files define no unittest test".to_owned());
            }
            for failure in report.failures() {
                lines.push(format!(
                    "{} {:?}: {}",
                    failure.id,
                    failure.status,
                    tail(failure.message.as_deref().unwrap_or_default())
                ));
            }
            return Err(format!(
                "the tests failed in the sandbox:\n{}",
                lines.join("\n")
            ));
        }
    }

    let modules: Vec<String> = python
        .iter()
        .filter(|f| !is_test_file(&f.path))
        .filter_map(|f| module_name(&f.path))
        .collect();
    if !modules.is_empty() {
        let outcome = sandbox
            .run(RunRequest {
                code: IMPORT_CHECK.to_owned(),
                argv: modules,
                files,
                limits,
                ..RunRequest::default()
            })
            .await
            .map_err(|e| format!("the sandbox could not import the modules: {e}"))?;
        if !outcome.success() {
            let why = outcome.failure_summary().unwrap_or_default();
            return Err(format!(
                "importing the generated modules in the sandbox {why}:\n{}",
                tail(&outcome.stderr)
            ));
        }
    }
    Ok(())
}

/// The last lines of a traceback: what the model needs, bounded.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_files_and_module_names_are_recognised() {
        assert!(is_test_file("tests/test_app.py"));
        assert!(is_test_file("app_test.py"));
        assert!(!is_test_file("app/testing.py"));
        assert_eq!(
            module_name("app/repository.py").as_deref(),
            Some("app.repository")
        );
        assert_eq!(module_name("app/my-module.py"), None);
    }
}
