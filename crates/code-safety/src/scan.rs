//! Scanning one file: parse, run the rules, apply suppressions, decide the verdict.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;

use serde::Serialize;

use crate::finding::{Finding, RuleKind};
use crate::policy::{NosecPolicy, Policy};
use crate::rules::{Analyzer, INLINE_WALK_DEPTH, MAX_WALK_DEPTH, Raw};
use crate::source::{self, LineIndex, ParseFailure};

/// Stack for the thread that walks and drops a deeply nested tree. The token limits bound the
/// depth; this leaves room for the recursive walk and drop even in debug builds.
const SCAN_STACK_BYTES: usize = 256 * 1024 * 1024;

/// What the gate decided about one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "reasons", rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing the policy blocks on was found.
    Allow,
    /// The code must not be written or run; each reason says what to change.
    Block(Vec<BlockReason>),
}

/// One reason a file was blocked, written so it can be given back to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockReason {
    /// The rule (`AF001`, `B602`), or `syntax` for a parse failure.
    pub rule_id: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
    /// The offending line.
    pub source_line: String,
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {} [{}]: {} -- fix: {}\n    {}",
            self.line,
            self.column,
            self.rule_id,
            self.message,
            self.fix,
            self.source_line.trim()
        )
    }
}

impl Verdict {
    /// Whether the file may be used.
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// The reasons, empty when allowed.
    pub fn reasons(&self) -> &[BlockReason] {
        match self {
            Verdict::Allow => &[],
            Verdict::Block(r) => r,
        }
    }

    /// A repair instruction for the model: every reason with its line and fix.
    pub fn feedback(&self, filename: &str) -> String {
        match self {
            Verdict::Allow => String::new(),
            Verdict::Block(reasons) => {
                let mut out = format!(
                    "The code in `{filename}` was rejected by the safety check. Rewrite it so none of these problems remain:\n"
                );
                for r in reasons {
                    out.push_str(&format!("- {r}\n"));
                }
                out
            }
        }
    }
}

/// Bandit's per-file metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FileMetrics {
    /// Lines that are neither blank nor comments.
    pub loc: usize,
    /// Findings suppressed by a bare `# nosec`.
    pub nosec: usize,
    /// Findings suppressed by a `# nosec` naming their test.
    pub skipped_tests: usize,
}

/// Everything the gate learnt about one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// The name the caller gave the file.
    pub filename: String,
    /// Findings after suppressions and disabled rules, in visiting order.
    pub findings: Vec<Finding>,
    /// Why the file could not be analysed, if it could not.
    pub parse_error: Option<ParseFailure>,
    /// Counts for bandit's `metrics`.
    pub metrics: FileMetrics,
    /// Absolute module names the file imports (statements and constant dynamic imports).
    pub imports: BTreeSet<String>,
    verdict: Verdict,
}

impl ScanReport {
    /// The decision for this file under the policy it was scanned with.
    pub fn verdict(&self) -> &Verdict {
        &self.verdict
    }
}

/// Scans one Python source file under `policy`. Never panics on any input: syntax errors,
/// inputs past the parser's limits and internal failures all become a blocking verdict.
pub fn scan_source(filename: &str, source: &str, policy: &Policy) -> ScanReport {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        scan_inline(filename, source, policy)
    }))
    .unwrap_or_else(|_| internal_failure(filename, source))
}

/// Scans many files, spreading them over up to `threads` threads (`0` = one per available
/// core); reports come back in input order. Files are independent, so this is the way to scan
/// a generated project quickly.
pub fn scan_sources(files: &[(&str, &str)], policy: &Policy, threads: usize) -> Vec<ScanReport> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .min(files.len().max(1));
    if threads <= 1 {
        return files
            .iter()
            .map(|(name, src)| scan_source(name, src, policy))
            .collect();
    }
    let chunk = files.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = files
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|(name, src)| scan_source(name, src, policy))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .zip(files.chunks(chunk))
            .flat_map(|(h, part)| {
                // scan_source does not panic; should the thread die anyway, scan its files here.
                h.join().unwrap_or_else(|_| {
                    part.iter()
                        .map(|(name, src)| scan_source(name, src, policy))
                        .collect()
                })
            })
            .collect()
    })
}

fn internal_failure(filename: &str, source: &str) -> ScanReport {
    let failure = ParseFailure {
        line: 1,
        column: 1,
        message: "the analyser failed on this input; it cannot be checked".into(),
        source_line: LineIndex::new(source).line_text(1).to_owned(),
    };
    finish_failed(filename, source, failure)
}

fn scan_inline(filename: &str, source: &str, policy: &Policy) -> ScanReport {
    let index = LineIndex::new(source);
    let parsed = match source::parse(filename, source, &index) {
        Ok(p) => p,
        Err(failure) => return finish_failed(filename, source, failure),
    };
    let mut analyzer = Analyzer::new(policy, source, INLINE_WALK_DEPTH);
    analyzer.run(&parsed.suite);
    if analyzer.too_deep.is_none() {
        return build_report(filename, source, policy, &index, &parsed.nosec, analyzer);
    }
    drop(analyzer);
    // A deeply nested tree: walk it, and drop it, on a thread with a big stack.
    let deep = move || {
        let index = LineIndex::new(source);
        let mut analyzer = Analyzer::new(policy, source, MAX_WALK_DEPTH);
        analyzer.run(&parsed.suite);
        if let Some(offset) = analyzer.too_deep {
            let failure =
                source::failure(&index, offset, "code is nested too deeply to check".into());
            return finish_failed(filename, source, failure);
        }
        build_report(filename, source, policy, &index, &parsed.nosec, analyzer)
    };
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("code-safety-deep".into())
            .stack_size(SCAN_STACK_BYTES)
            .spawn_scoped(scope, deep)
            .ok()
            .and_then(|h| h.join().ok())
    })
    .unwrap_or_else(|| internal_failure(filename, source))
}

fn loc(source: &str) -> usize {
    source
        .lines()
        .filter(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
        .count()
}

fn finish_failed(filename: &str, source: &str, failure: ParseFailure) -> ScanReport {
    let reason = BlockReason {
        rule_id: "syntax".into(),
        line: failure.line,
        column: failure.column,
        message: format!("the file does not parse: {}", failure.message),
        fix: "write syntactically valid Python 3".into(),
        source_line: failure.source_line.clone(),
    };
    ScanReport {
        filename: filename.to_owned(),
        findings: Vec::new(),
        parse_error: Some(failure),
        metrics: FileMetrics {
            loc: loc(source),
            ..FileMetrics::default()
        },
        imports: BTreeSet::new(),
        verdict: Verdict::Block(vec![reason]),
    }
}

fn build_report(
    filename: &str,
    source: &str,
    policy: &Policy,
    index: &LineIndex<'_>,
    nosec: &HashMap<usize, source::NosecTests>,
    analyzer: Analyzer<'_>,
) -> ScanReport {
    let mut metrics = FileMetrics {
        loc: loc(source),
        ..FileMetrics::default()
    };
    let mut seen = HashSet::new();
    let mut findings = Vec::new();
    for raw in analyzer.raws {
        if !policy.rule_enabled(raw.rule.id) {
            continue;
        }
        let start = u32::from(raw.range.start()) as usize;
        if !seen.insert((raw.rule.id, start, raw.message.clone())) {
            continue;
        }
        let finding = locate(index, raw);
        match suppression(&finding, nosec, policy.nosec) {
            Some(true) => metrics.nosec += 1,
            Some(false) => metrics.skipped_tests += 1,
            None => findings.push(finding),
        }
    }
    let verdict = decide(&findings, policy);
    ScanReport {
        filename: filename.to_owned(),
        findings,
        parse_error: None,
        metrics,
        imports: analyzer.modules,
        verdict,
    }
}

fn locate(index: &LineIndex<'_>, raw: Raw) -> Finding {
    let start = u32::from(raw.range.start()) as usize;
    let end = u32::from(raw.range.end()) as usize;
    let (start_line, byte_col) = index.line_col(start);
    let col_offset = raw.col_offset.unwrap_or(byte_col);
    let (end_line, end_col_offset) = index.line_col(end);
    let line = raw.line_at.map_or(start_line, |o| index.line_col(o).0);
    let column = if line == start_line {
        index.char_column(line, byte_col)
    } else {
        1
    };
    Finding {
        rule: raw.rule,
        severity: raw.severity,
        confidence: raw.confidence,
        message: raw.message,
        line,
        column,
        col_offset,
        end_col_offset,
        line_range: (start_line, end_line.max(start_line)),
        source_line: index.line_text(line).to_owned(),
        code: index.code_excerpt(line, (start_line, end_line.max(start_line))),
    }
}

/// Bandit's nosec logic: the finding's own line plus the first nosec line within the node's
/// lines. `Some(true)` = bare nosec, `Some(false)` = named test, `None` = not suppressed.
fn suppression(
    f: &Finding,
    nosec: &HashMap<usize, source::NosecTests>,
    policy: NosecPolicy,
) -> Option<bool> {
    let honoured = match policy {
        NosecPolicy::Ignore => false,
        NosecPolicy::BanditRules => f.rule.kind != RuleKind::AetherFlow,
        NosecPolicy::All => true,
    };
    if !honoured {
        return None;
    }
    let base = nosec.get(&f.line);
    let context = (f.line_range.0..=f.line_range.1).find_map(|l| nosec.get(&l));
    if base.is_none() && context.is_none() {
        return None;
    }
    let tests: Vec<&str> = base.into_iter().chain(context).flatten().copied().collect();
    if tests.is_empty() {
        Some(true)
    } else if tests.contains(&f.rule.id) {
        Some(false)
    } else {
        None
    }
}

fn decide(findings: &[Finding], policy: &Policy) -> Verdict {
    let b = &policy.block;
    let reasons: Vec<BlockReason> = findings
        .iter()
        .filter(|f| match f.rule.kind {
            RuleKind::AetherFlow if f.rule.id.starts_with("AF0") => b.disallowed_imports,
            RuleKind::AetherFlow => b.aetherflow_rules,
            _ => b
                .min_severity
                .is_some_and(|s| f.severity >= s && f.confidence >= b.min_confidence),
        })
        .map(|f| BlockReason {
            rule_id: f.rule.id.to_owned(),
            line: f.line,
            column: f.column,
            message: format!("{} ({}, severity {})", f.message, f.rule.name, f.severity),
            fix: f.rule.fix.to_owned(),
            source_line: f.source_line.clone(),
        })
        .collect();
    if reasons.is_empty() {
        Verdict::Allow
    } else {
        Verdict::Block(reasons)
    }
}
