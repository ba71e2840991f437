//! The 144 real plans of the original tool: each one validates, or is rejected for the reason
//! recorded in `expected-rejections.txt`.
//!
//! The corpus lives outside the repository (`../shared/corpus/original-plans`, or the folder in
//! `AETHERFLOW_CORPUS_DIR`). When it is absent the test says so and checks nothing; when the
//! variable is set, the folder must exist.

use std::collections::BTreeMap;
use std::path::PathBuf;

use aetherflow_domain::plan::{PlanFormat, load_plan};

fn corpus_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("AETHERFLOW_CORPUS_DIR") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.is_dir(),
            "AETHERFLOW_CORPUS_DIR={} is not a folder: point it at shared/corpus/original-plans",
            dir.display()
        );
        return Some(dir);
    }
    let default =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/original-plans");
    default.is_dir().then_some(default)
}

fn expected_rejections() -> BTreeMap<String, String> {
    include_str!("expected-rejections.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (file, reason) = l.split_once('\t').expect("file<TAB>reason");
            (file.to_owned(), reason.to_owned())
        })
        .collect()
}

#[test]
fn every_real_plan_validates_or_is_rejected_for_its_recorded_reason() {
    let Some(dir) = corpus_dir() else {
        eprintln!(
            "corpus not found (../shared/corpus/original-plans); set AETHERFLOW_CORPUS_DIR to check it"
        );
        return;
    };
    let expected = expected_rejections();
    let mut checked = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus folder is readable")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("plan is UTF-8 text");
        let outcome = load_plan(&text, PlanFormat::from_path(&path));
        checked += 1;
        match (outcome, expected.get(&name)) {
            (Ok(_), None) => {}
            (Ok(_), Some(reason)) => failures.push(format!(
                "{name}: expected rejection ({reason}) but it validated"
            )),
            (Err(e), None) => failures.push(format!("{name}: rejected: {e}")),
            (Err(e), Some(reason)) if !e.to_string().contains(reason.as_str()) => {
                failures.push(format!("{name}: rejected for another reason: {e}"))
            }
            (Err(_), Some(_)) => {}
        }
    }
    assert!(checked > 0, "no plans found in {}", dir.display());
    assert!(
        failures.is_empty(),
        "{} of {checked} plans:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("{checked} corpus plans checked");
}
