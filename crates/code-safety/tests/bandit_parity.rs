//! Our bandit rules report what bandit itself reports on the fixture corpus: same test ids,
//! lines, columns, severities, confidences, CWE numbers, messages and test names. The expectations in
//! `fixtures/bandit-expected.json` were recorded by running bandit 1.9 on `fixtures/bandit/`.

use std::collections::BTreeSet;
use std::path::Path;

use aetherflow_code_safety::{NosecPolicy, Policy, RuleKind, scan_source};

type Row = (
    String,
    String,
    usize,
    usize,
    String,
    String,
    u32,
    String,
    String,
);

fn expected() -> BTreeSet<Row> {
    let text = include_str!("fixtures/bandit-expected.json");
    let rows: Vec<serde_json::Value> = serde_json::from_str(text).expect("valid json");
    rows.iter()
        .map(|r| {
            (
                r["file"].as_str().expect("file").to_owned(),
                r["test_id"].as_str().expect("id").to_owned(),
                r["line"].as_u64().expect("line") as usize,
                r["col"].as_u64().expect("col") as usize,
                r["severity"].as_str().expect("sev").to_owned(),
                r["confidence"].as_str().expect("conf").to_owned(),
                r["cwe"].as_u64().expect("cwe") as u32,
                r["text"].as_str().expect("text").to_owned(),
                r["test_name"].as_str().expect("test_name").to_owned(),
            )
        })
        .collect()
}

#[test]
fn bandit_rules_match_bandit_on_the_fixture_corpus() {
    let mut policy = Policy::default();
    policy.imports.allow = vec!["*".into()];
    policy.nosec = NosecPolicy::All;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bandit");
    let mut ours = BTreeSet::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "py") {
            continue;
        }
        files += 1;
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let source = std::fs::read_to_string(&path).expect("read fixture");
        let report = scan_source(&name, &source, &policy);
        assert!(
            report.parse_error.is_none(),
            "{name}: {:?}",
            report.parse_error
        );
        for f in report
            .findings
            .iter()
            .filter(|f| f.rule.kind != RuleKind::AetherFlow)
        {
            ours.insert((
                name.clone(),
                f.rule.id.to_owned(),
                f.line,
                f.col_offset,
                f.severity.as_str().to_owned(),
                f.confidence.as_str().to_owned(),
                f.rule.cwe.0,
                f.message.clone(),
                f.rule.bandit_test_name().to_owned(),
            ));
        }
    }
    assert!(files > 100, "fixture corpus is missing ({files} files)");
    let want = expected();
    let missing: Vec<_> = want.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&want).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "bandit reports but we do not:\n{missing:#?}\nwe report but bandit does not:\n{extra:#?}"
    );
}
