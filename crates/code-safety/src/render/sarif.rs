//! SARIF 2.1.0 (the OASIS Static Analysis Results Interchange Format), for code-scanning UIs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::finding::{Confidence, Rule, Severity};
use crate::scan::ScanReport;

/// The SARIF version written.
pub const SARIF_VERSION: &str = "2.1.0";
const SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// Renders reports as one SARIF 2.1.0 run: the rules that fired (with CWE tags, help text and
/// a `security-severity`), one result per finding, and parse failures as tool notifications.
/// Columns are counted in Unicode code points (`columnKind`), lines and columns from 1.
pub fn sarif(reports: &[ScanReport]) -> Value {
    let mut rule_index: BTreeMap<&'static str, (usize, &'static Rule)> = BTreeMap::new();
    for f in reports.iter().flat_map(|r| &r.findings) {
        let next = rule_index.len();
        rule_index.entry(f.rule.id).or_insert((next, f.rule));
    }
    let mut rules: Vec<(usize, &Rule)> = rule_index.values().copied().collect();
    rules.sort_by_key(|(i, _)| *i);
    let rules: Vec<Value> = rules.into_iter().map(|(_, r)| rule(r)).collect();

    let mut results = Vec::new();
    let mut notifications = Vec::new();
    for report in reports {
        let uri = uri(&report.filename);
        if let Some(e) = &report.parse_error {
            notifications.push(json!({
                "level": "error",
                "message": {"text": format!("{} could not be parsed: {}", report.filename, e.message)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": {"startLine": e.line.max(1), "startColumn": e.column.max(1),
                               "snippet": {"text": e.source_line}},
                }}],
            }));
        }
        for f in &report.findings {
            let index = rule_index.get(f.rule.id).map_or(0, |(i, _)| *i);
            results.push(json!({
                "ruleId": f.rule.id,
                "ruleIndex": index,
                "level": level(f.severity),
                "message": {"text": f.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": uri},
                    "region": {
                        "startLine": f.line.max(1),
                        "startColumn": f.column.max(1),
                        "snippet": {"text": f.source_line},
                    },
                }}],
                "properties": {
                    "issue_severity": f.severity.as_str(),
                    "issue_confidence": f.confidence.as_str(),
                    "cwe": f.rule.cwe.to_string(),
                },
            }));
        }
    }
    json!({
        "$schema": SCHEMA,
        "version": SARIF_VERSION,
        "runs": [{
            "tool": {"driver": {
                "name": "aetherflow-code-safety",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/aetherflow/aetherflow",
                "rules": rules,
            }},
            "columnKind": "unicodeCodePoints",
            "invocations": [{
                "executionSuccessful": true,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
        }],
    })
}

fn rule(r: &Rule) -> Value {
    let mut v = json!({
        "id": r.id,
        "name": r.name,
        "shortDescription": {"text": r.name.replace('_', " ")},
        "help": {"text": r.fix},
        "defaultConfiguration": {"level": level(r.severity)},
        "properties": {
            "tags": ["security", r.cwe.to_string()],
            "precision": precision(r.confidence),
            "security-severity": security_severity(r.severity),
        },
    });
    let help_uri = r.more_info().unwrap_or_else(|| r.cwe.link());
    if let Some(obj) = v.as_object_mut() {
        obj.insert("helpUri".into(), json!(help_uri));
    }
    v
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Undefined => "note",
    }
}

fn precision(c: Confidence) -> &'static str {
    match c {
        Confidence::High => "high",
        Confidence::Medium => "medium",
        Confidence::Low | Confidence::Undefined => "low",
    }
}

fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::High => "8.0",
        Severity::Medium => "5.0",
        Severity::Low => "2.0",
        Severity::Undefined => "0.0",
    }
}

/// A relative URI reference for a file name: `\` becomes `/`, and characters outside RFC 3986's
/// unreserved set and `/` are percent-encoded.
fn uri(filename: &str) -> String {
    let path = filename.replace('\\', "/");
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_are_percent_encoded() {
        assert_eq!(uri("src/my file.py"), "src/my%20file.py");
        assert_eq!(uri("a\\b.py"), "a/b.py");
        assert_eq!(uri("é.py"), "%C3%A9.py");
    }
}
