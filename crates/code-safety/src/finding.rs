//! What a rule found: severity, confidence, CWE and where in the source.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How bad a finding is if it is real, on bandit's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    /// Bandit's `UNDEFINED`; no rule here uses it, but thresholds may name it.
    Undefined,
    /// `LOW`.
    Low,
    /// `MEDIUM`.
    Medium,
    /// `HIGH`.
    High,
}

/// How sure a rule is that a finding is real, on bandit's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Confidence {
    /// Bandit's `UNDEFINED`.
    Undefined,
    /// `LOW`.
    Low,
    /// `MEDIUM`.
    Medium,
    /// `HIGH`.
    High,
}

impl Severity {
    /// The upper-case word bandit prints (`HIGH`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Undefined => "UNDEFINED",
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
        }
    }
}

impl Confidence {
    /// The upper-case word bandit prints (`HIGH`).
    pub fn as_str(self) -> &'static str {
        match self {
            Confidence::Undefined => "UNDEFINED",
            Confidence::Low => "LOW",
            Confidence::Medium => "MEDIUM",
            Confidence::High => "HIGH",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Confidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A MITRE Common Weakness Enumeration number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cwe(pub u32);

impl Cwe {
    /// The MITRE page describing the weakness.
    pub fn link(self) -> String {
        format!("https://cwe.mitre.org/data/definitions/{}.html", self.0)
    }
}

impl fmt::Display for Cwe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CWE-{}", self.0)
    }
}

/// Which family a rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A bandit plugin re-implemented with bandit's id, name and ratings.
    Bandit,
    /// A bandit call or import black-list entry (`B3xx`, `B4xx`); bandit names the test `blacklist`.
    BanditBlacklist,
    /// An AetherFlow sandbox-escape or import-policy rule (`AFxxx`).
    AetherFlow,
}

/// The fixed description of one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `B101`, `AF001`, ...
    pub id: &'static str,
    /// Bandit's plugin or black-list name (`assert_used`, `import_pickle`), or the AF rule name.
    pub name: &'static str,
    /// Family of the rule.
    pub kind: RuleKind,
    /// Usual severity (some bandit rules raise or lower it per finding).
    pub severity: Severity,
    /// Usual confidence.
    pub confidence: Confidence,
    /// The weakness the rule guards against.
    pub cwe: Cwe,
    /// One sentence a model can act on to fix the code.
    pub fix: &'static str,
}

impl Rule {
    /// The `test_name` bandit writes for this rule: `blacklist` for black-list entries.
    pub fn bandit_test_name(&self) -> &'static str {
        match self.kind {
            RuleKind::BanditBlacklist => "blacklist",
            _ => self.name,
        }
    }

    /// Bandit's documentation page for this rule, when it is a bandit rule.
    pub fn more_info(&self) -> Option<String> {
        const BASE: &str = "https://bandit.readthedocs.io/en/latest/";
        let id = self.id.to_ascii_lowercase();
        match self.kind {
            RuleKind::AetherFlow => None,
            RuleKind::Bandit => Some(format!("{BASE}plugins/{id}_{}.html", self.name)),
            RuleKind::BanditBlacklist => {
                let name = self.name.replace('_', "-");
                let (kind, anchor) = match self.id {
                    "B304" | "B305" => ("calls", "b304-b305-ciphers-and-modes".to_owned()),
                    "B313" | "B314" | "B315" | "B316" | "B317" | "B318" | "B319" => {
                        ("calls", format!("b313-b320-{name}"))
                    }
                    _ if self.id.starts_with("B3") => ("calls", format!("{id}-{name}")),
                    _ => ("imports", format!("{id}-{name}")),
                };
                Some(format!(
                    "{BASE}blacklists/blacklist_{kind}.html#{}",
                    anchor.to_ascii_lowercase()
                ))
            }
        }
    }
}

/// One problem found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule that fired.
    pub rule: &'static Rule,
    /// Severity of this finding (may differ from the rule's usual one).
    pub severity: Severity,
    /// Confidence of this finding.
    pub confidence: Confidence,
    /// What was found, in bandit's words for bandit rules.
    pub message: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    /// 0-based column in UTF-8 bytes, as CPython's `col_offset` and bandit report it.
    pub col_offset: usize,
    /// 0-based end column in UTF-8 bytes on the node's last line (bandit's `end_col_offset`).
    pub end_col_offset: usize,
    /// First and last line of the flagged node.
    pub line_range: (usize, usize),
    /// The text of `line`, without its line break.
    pub source_line: String,
    /// Bandit's `code` excerpt: numbered lines around the finding.
    pub code: String,
}

impl Finding {
    /// The weakness this finding points at.
    pub fn cwe(&self) -> Cwe {
        self.rule.cwe
    }
}
