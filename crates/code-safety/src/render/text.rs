//! A plain-text report, in the spirit of bandit's screen output.

use crate::scan::ScanReport;

/// Renders reports as text: one block per finding, then each file's verdict.
pub fn text(reports: &[ScanReport]) -> String {
    let mut out = String::new();
    let mut total = 0;
    for report in reports {
        if let Some(err) = &report.parse_error {
            out.push_str(&format!(
                "{}:{}:{}: syntax error: {}\n    {}\n",
                report.filename, err.line, err.column, err.message, err.source_line
            ));
        }
        for f in &report.findings {
            total += 1;
            out.push_str(&format!(
                ">> Issue: [{}:{}] {}\n   Severity: {}   Confidence: {}\n   CWE: {} ({})\n   Location: {}:{}:{}\n   {}\n",
                f.rule.id,
                f.rule.name,
                f.message,
                f.severity,
                f.confidence,
                f.rule.cwe,
                f.rule.cwe.link(),
                report.filename,
                f.line,
                f.column,
                f.source_line.trim_end(),
            ));
            if let Some(url) = f.rule.more_info() {
                out.push_str(&format!("   More Info: {url}\n"));
            }
        }
        let verdict = if report.verdict().is_allow() {
            "ALLOW"
        } else {
            "BLOCK"
        };
        out.push_str(&format!("{}: {verdict}\n", report.filename));
        for reason in report.verdict().reasons() {
            out.push_str(&format!("  - {reason}\n"));
        }
    }
    out.push_str(&format!("{} file(s), {total} finding(s)\n", reports.len()));
    out
}
