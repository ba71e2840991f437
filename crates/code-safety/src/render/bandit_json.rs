//! Bandit's JSON report format (`bandit -f json`), field for field.

use serde_json::{Map, Value, json};

use crate::finding::{Confidence, Finding, Severity};
use crate::scan::ScanReport;

const LEVELS: [&str; 4] = ["UNDEFINED", "LOW", "MEDIUM", "HIGH"];

/// Renders reports the way `bandit -f json` does: `errors`, `metrics` (per file and `_totals`)
/// and `results` sorted by file name, each with bandit's field names. `generated_at` is written
/// when given (the crate has no clock).
pub fn bandit_json(reports: &[ScanReport], generated_at: Option<&str>) -> Value {
    let mut errors = Vec::new();
    let mut metrics = Map::new();
    let mut totals = empty_counts();
    let mut results = Vec::new();
    for report in reports {
        if let Some(e) = &report.parse_error {
            errors.push(json!({
                "filename": report.filename,
                "reason": format!(
                    "syntax error while parsing AST from file: line {}, column {}: {}",
                    e.line, e.column, e.message
                ),
            }));
            continue;
        }
        let mut counts = empty_counts();
        counts.insert("loc".into(), json!(report.metrics.loc));
        counts.insert("nosec".into(), json!(report.metrics.nosec));
        counts.insert("skipped_tests".into(), json!(report.metrics.skipped_tests));
        for f in &report.findings {
            bump(&mut counts, "SEVERITY", severity_index(f.severity));
            bump(&mut counts, "CONFIDENCE", confidence_index(f.confidence));
            results.push(result(&report.filename, f));
        }
        for (k, v) in &counts {
            let add = v.as_u64().unwrap_or(0);
            let entry = totals.entry(k.clone()).or_insert(json!(0));
            *entry = json!(entry.as_u64().unwrap_or(0) + add);
        }
        metrics.insert(report.filename.clone(), Value::Object(counts));
    }
    for k in ["loc", "nosec", "skipped_tests"] {
        totals.entry(k.to_owned()).or_insert(json!(0));
    }
    metrics.insert("_totals".into(), Value::Object(totals));
    results.sort_by(|a, b| a["filename"].as_str().cmp(&b["filename"].as_str()));
    let mut out = Map::new();
    out.insert("errors".into(), Value::Array(errors));
    if let Some(t) = generated_at {
        out.insert("generated_at".into(), json!(t));
    }
    out.insert("metrics".into(), Value::Object(metrics));
    out.insert("results".into(), Value::Array(results));
    Value::Object(out)
}

fn result(filename: &str, f: &Finding) -> Value {
    let more_info = f.rule.more_info().unwrap_or_else(|| f.rule.cwe.link());
    json!({
        "code": f.code,
        "col_offset": f.col_offset,
        "end_col_offset": f.end_col_offset,
        "filename": filename,
        "issue_confidence": f.confidence.as_str(),
        "issue_cwe": {"id": f.rule.cwe.0, "link": f.rule.cwe.link()},
        "issue_severity": f.severity.as_str(),
        "issue_text": f.message,
        "line_number": f.line,
        "line_range": (f.line_range.0..=f.line_range.1).collect::<Vec<_>>(),
        "more_info": more_info,
        "test_id": f.rule.id,
        "test_name": f.rule.bandit_test_name(),
    })
}

fn empty_counts() -> Map<String, Value> {
    let mut m = Map::new();
    for c in ["SEVERITY", "CONFIDENCE"] {
        for l in LEVELS {
            m.insert(format!("{c}.{l}"), json!(0));
        }
    }
    m
}

fn bump(m: &mut Map<String, Value>, criterion: &str, level: usize) {
    let key = format!("{criterion}.{}", LEVELS[level]);
    let v = m.get(&key).and_then(Value::as_u64).unwrap_or(0) + 1;
    m.insert(key, json!(v));
}

fn severity_index(s: Severity) -> usize {
    s as usize
}

fn confidence_index(c: Confidence) -> usize {
    c as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NosecPolicy, Policy, scan_source};

    #[test]
    fn matches_bandit_field_names_and_metrics() {
        let mut p = Policy::default();
        p.imports.allow.push("pickle".into());
        p.nosec = NosecPolicy::All;
        let ok = scan_source("b.py", "import pickle\nassert x\nassert y  # nosec\n", &p);
        let bad = scan_source("a.py", "def f(:\n", &p);
        let v = bandit_json(&[ok, bad], Some("2026-01-01T00:00:00Z"));
        assert_eq!(v["generated_at"], "2026-01-01T00:00:00Z");
        assert_eq!(v["errors"][0]["filename"], "a.py");
        let r = &v["results"][0];
        assert_eq!(r["test_id"], "B403");
        assert_eq!(r["test_name"], "blacklist");
        assert_eq!(r["issue_severity"], "LOW");
        assert_eq!(r["issue_confidence"], "HIGH");
        assert_eq!(
            r["issue_cwe"],
            json!({"id": 502, "link": "https://cwe.mitre.org/data/definitions/502.html"})
        );
        assert_eq!(r["line_number"], 1);
        assert_eq!(r["col_offset"], 0);
        assert_eq!(r["end_col_offset"], 13);
        assert_eq!(r["line_range"], json!([1]));
        assert_eq!(
            r["code"],
            "1 import pickle\n2 assert x\n3 assert y  # nosec\n"
        );
        assert_eq!(r["filename"], "b.py");
        let m = &v["metrics"]["b.py"];
        assert_eq!(m["loc"], 3);
        assert_eq!(m["nosec"], 1);
        assert_eq!(m["SEVERITY.LOW"], 2);
        assert_eq!(m["CONFIDENCE.HIGH"], 2);
        assert_eq!(v["metrics"]["_totals"]["SEVERITY.LOW"], 2);
        assert_eq!(v["results"].as_array().map(Vec::len), Some(2));
    }
}
