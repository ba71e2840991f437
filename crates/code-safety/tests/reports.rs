//! Text, bandit JSON and SARIF reports have the shape their consumers expect.

use std::collections::BTreeSet;

use aetherflow_code_safety::{Policy, ScanReport, render, scan_source};
use serde_json::Value;

fn reports() -> Vec<ScanReport> {
    let p = Policy::default();
    vec![
        scan_source(
            "src/app.py",
            "import subprocess\nsubprocess.call(cmd, shell=True)\nassert ok\n",
            &p,
        ),
        scan_source("src/my tool.py", "x = 'ok'\nｅｖａｌ(x)\n", &p),
        scan_source("src/broken.py", "def f(:\n    pass\n", &p),
        scan_source("src/clean.py", "import json\n", &p),
    ]
}

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn bandit_json_has_bandits_fields() {
    let v = render::bandit_json(&reports(), None);
    assert_eq!(keys(&v), BTreeSet::from(["errors", "metrics", "results"]));
    let result_keys = BTreeSet::from([
        "code",
        "col_offset",
        "end_col_offset",
        "filename",
        "issue_confidence",
        "issue_cwe",
        "issue_severity",
        "issue_text",
        "line_number",
        "line_range",
        "more_info",
        "test_id",
        "test_name",
    ]);
    let results = v["results"].as_array().expect("results");
    assert!(results.len() >= 5);
    for r in results {
        assert_eq!(keys(r), result_keys, "{r}");
        assert!(r["issue_cwe"]["id"].as_u64().is_some());
        assert!(
            r["issue_cwe"]["link"]
                .as_str()
                .is_some_and(|l| l.starts_with("https://cwe.mitre.org/"))
        );
    }
    let files: Vec<&str> = results
        .iter()
        .filter_map(|r| r["filename"].as_str())
        .collect();
    let mut sorted = files.clone();
    sorted.sort_unstable();
    assert_eq!(files, sorted, "bandit sorts results by file name");
    assert_eq!(v["errors"][0]["filename"], "src/broken.py");
    let metric_keys = BTreeSet::from([
        "CONFIDENCE.HIGH",
        "CONFIDENCE.LOW",
        "CONFIDENCE.MEDIUM",
        "CONFIDENCE.UNDEFINED",
        "SEVERITY.HIGH",
        "SEVERITY.LOW",
        "SEVERITY.MEDIUM",
        "SEVERITY.UNDEFINED",
        "loc",
        "nosec",
        "skipped_tests",
    ]);
    assert_eq!(keys(&v["metrics"]["_totals"]), metric_keys);
    assert_eq!(keys(&v["metrics"]["src/app.py"]), metric_keys);
    assert_eq!(v["metrics"]["_totals"]["loc"], 6);
}

fn level_ok(v: &Value) -> bool {
    matches!(v.as_str(), Some("none" | "note" | "warning" | "error"))
}

fn positive(v: &Value) -> bool {
    v.as_u64().is_some_and(|n| n >= 1)
}

#[test]
fn sarif_follows_the_2_1_0_structure() {
    let v = render::sarif(&reports());
    assert_eq!(v["version"], "2.1.0");
    assert!(
        v["$schema"]
            .as_str()
            .is_some_and(|s| s.ends_with("sarif-2.1.0.json"))
    );
    assert_eq!(keys(&v), BTreeSet::from(["$schema", "version", "runs"]));
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1);
    let run = &runs[0];
    assert_eq!(
        keys(run),
        BTreeSet::from(["tool", "columnKind", "invocations", "results"])
    );
    assert!(matches!(
        run["columnKind"].as_str(),
        Some("unicodeCodePoints")
    ));
    let driver = &run["tool"]["driver"];
    assert!(driver["name"].as_str().is_some_and(|n| !n.is_empty()));
    let rules = driver["rules"].as_array().expect("rules");
    let mut ids = BTreeSet::new();
    for r in rules {
        assert!(
            ids.insert(r["id"].as_str().expect("rule id")),
            "duplicate rule {r}"
        );
        assert!(
            r["shortDescription"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        assert!(r["help"]["text"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(
            r["helpUri"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://"))
        );
        assert!(level_ok(&r["defaultConfiguration"]["level"]));
        let tags = r["properties"]["tags"].as_array().expect("tags");
        assert!(
            tags.iter()
                .any(|t| t.as_str().is_some_and(|t| t.starts_with("CWE-")))
        );
        let sev: f64 = r["properties"]["security-severity"]
            .as_str()
            .expect("sev")
            .parse()
            .expect("number");
        assert!((0.0..=10.0).contains(&sev));
    }
    let results = run["results"].as_array().expect("results");
    assert!(results.len() >= 5);
    for res in results {
        assert_eq!(
            keys(res),
            BTreeSet::from([
                "ruleId",
                "ruleIndex",
                "level",
                "message",
                "locations",
                "properties"
            ])
        );
        let index = res["ruleIndex"].as_u64().expect("index") as usize;
        assert!(index < rules.len());
        assert_eq!(res["ruleId"], rules[index]["id"]);
        assert!(level_ok(&res["level"]));
        assert!(
            res["message"]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
        );
        let locations = res["locations"].as_array().expect("locations");
        assert_eq!(locations.len(), 1);
        let phys = &locations[0]["physicalLocation"];
        let uri = phys["artifactLocation"]["uri"].as_str().expect("uri");
        assert!(!uri.contains(' ') && !uri.contains('\\'), "{uri}");
        assert!(positive(&phys["region"]["startLine"]));
        assert!(positive(&phys["region"]["startColumn"]));
    }
    assert!(results.iter().any(
        |r| r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "src/my%20tool.py"
    ));
    let inv = &run["invocations"][0];
    assert_eq!(inv["executionSuccessful"], true);
    let notes = inv["toolExecutionNotifications"]
        .as_array()
        .expect("notifications");
    assert_eq!(notes.len(), 1);
    assert!(level_ok(&notes[0]["level"]));
    assert!(
        notes[0]["message"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("broken.py"))
    );
    assert!(positive(
        &notes[0]["locations"][0]["physicalLocation"]["region"]["startLine"]
    ));
}

#[test]
fn text_report_lists_findings_and_verdicts() {
    let text = render::text(&reports());
    assert!(
        text.contains(">> Issue: [B602:subprocess_popen_with_shell_equals_true]"),
        "{text}"
    );
    assert!(text.contains("Location: src/app.py:2:1"), "{text}");
    assert!(text.contains("CWE: CWE-78"), "{text}");
    assert!(text.contains("src/app.py: BLOCK"), "{text}");
    assert!(text.contains("src/clean.py: ALLOW"), "{text}");
    assert!(text.contains("src/broken.py:1:"), "{text}");
}
