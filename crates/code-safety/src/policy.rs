//! What the gate allows: the import allow-list, which findings block, and whether `# nosec`
//! comments count. Policies layer: a base (safe defaults or configuration) plus per-plan and
//! per-step [`PolicyOverrides`].

use serde::{Deserialize, Serialize};

use crate::finding::{Confidence, Severity};
use crate::rules::catalog;

/// Standard-library modules generated code may import unless a policy says otherwise: pure
/// computation, text, data formats and dates; nothing that starts processes, opens sockets,
/// loads native code or imports by name.
pub const DEFAULT_ALLOWED_IMPORTS: &[&str] = &[
    "__future__",
    "abc",
    "argparse",
    "array",
    "base64",
    "binascii",
    "bisect",
    "calendar",
    "cmath",
    "collections.*",
    "colorsys",
    "contextlib",
    "copy",
    "csv",
    "dataclasses",
    "datetime",
    "decimal",
    "difflib",
    "enum",
    "errno",
    "fnmatch",
    "fractions",
    "functools",
    "graphlib",
    "hashlib",
    "heapq",
    "hmac",
    "html.*",
    "io",
    "itertools",
    "json.*",
    "keyword",
    "logging",
    "math",
    "numbers",
    "operator",
    "os.path",
    "pathlib",
    "pprint",
    "queue",
    "random",
    "re",
    "reprlib",
    "secrets",
    "shlex",
    "statistics",
    "string",
    "struct",
    "textwrap",
    "time",
    "tomllib",
    "traceback",
    "typing",
    "unicodedata",
    "unittest.*",
    "urllib.parse",
    "uuid",
    "warnings",
    "weakref",
    "zoneinfo",
];

/// A policy that cannot be used as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// A module pattern is not a dotted name, `name.*` or `*`.
    #[error(
        "import pattern `{pattern}` is invalid: {reason} (write a dotted module name such as `json`, `collections.*` or `*`)"
    )]
    InvalidModulePattern {
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A rule id in `disabled_rules` (or an override) is not a rule this crate knows.
    #[error("unknown rule `{id}` in {field} (rule ids look like B101 or AF001)")]
    UnknownRule {
        /// The id as written.
        id: String,
        /// Which list it was in.
        field: &'static str,
    },
}

/// Whether `# nosec` comments in the scanned code suppress findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NosecPolicy {
    /// Comments are ignored: generated code cannot silence the gate (the default).
    #[default]
    Ignore,
    /// Comments suppress bandit rules (`B...`), never AetherFlow rules.
    BanditRules,
    /// Comments suppress any rule.
    All,
}

/// Which modules may be imported. A module is allowed when an `allow` pattern matches it and
/// no `deny` pattern does. `name` matches exactly that module; `name.*` matches the module and
/// its submodules; `*` matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportPolicy {
    /// Allowed module patterns.
    pub allow: Vec<String>,
    /// Denied module patterns; they win over `allow`.
    pub deny: Vec<String>,
    /// Whether `from . import x` / `from .m import y` are allowed.
    pub allow_relative: bool,
}

impl Default for ImportPolicy {
    fn default() -> Self {
        ImportPolicy {
            allow: DEFAULT_ALLOWED_IMPORTS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            deny: Vec::new(),
            allow_relative: false,
        }
    }
}

/// Whether one module may be imported, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImportDecision {
    /// An allow pattern matches and no deny pattern does.
    Allowed,
    /// No allow pattern matches.
    NotAllowed,
    /// A deny pattern matches (the pattern is given).
    Denied(String),
}

impl ImportPolicy {
    /// Decides whether `module` (a dotted name) may be imported.
    pub fn decide(&self, module: &str) -> ImportDecision {
        if let Some(p) = self.deny.iter().find(|p| pattern_matches(p, module)) {
            return ImportDecision::Denied(p.clone());
        }
        if self.allow.iter().any(|p| pattern_matches(p, module)) {
            ImportDecision::Allowed
        } else {
            ImportDecision::NotAllowed
        }
    }

    /// Whether `module` may be imported.
    pub fn allows(&self, module: &str) -> bool {
        self.decide(module) == ImportDecision::Allowed
    }

    fn validate(&self) -> Result<(), PolicyError> {
        for p in self.allow.iter().chain(&self.deny) {
            validate_pattern(p)?;
        }
        Ok(())
    }
}

fn pattern_matches(pattern: &str, module: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(prefix) => {
            module == prefix
                || (module.len() > prefix.len()
                    && module.starts_with(prefix)
                    && module.as_bytes()[prefix.len()] == b'.')
        }
        None => module == pattern,
    }
}

fn validate_pattern(pattern: &str) -> Result<(), PolicyError> {
    let bad = |reason| PolicyError::InvalidModulePattern {
        pattern: pattern.to_owned(),
        reason,
    };
    if pattern == "*" {
        return Ok(());
    }
    let name = pattern.strip_suffix(".*").unwrap_or(pattern);
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    for part in name.split('.') {
        let mut chars = part.chars();
        match chars.next() {
            None => return Err(bad("it has an empty component")),
            Some(c) if !(c.is_alphabetic() || c == '_') => {
                return Err(bad(
                    "a component does not start with a letter or underscore",
                ));
            }
            _ => {}
        }
        if !chars.all(|c| c.is_alphanumeric() || c == '_') {
            return Err(bad("only `*` as the last component may be a wildcard"));
        }
    }
    Ok(())
}

/// Which findings turn the verdict into a block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlockPolicy {
    /// Block on imports the import policy does not allow (`AF001`, `AF002`).
    pub disallowed_imports: bool,
    /// Block on any other AetherFlow (`AF1xx`) finding.
    pub aetherflow_rules: bool,
    /// Block on bandit findings of at least this severity (`None`: never on severity).
    pub min_severity: Option<Severity>,
    /// ... and at least this confidence.
    pub min_confidence: Confidence,
}

impl Default for BlockPolicy {
    fn default() -> Self {
        BlockPolicy {
            disallowed_imports: true,
            aetherflow_rules: true,
            min_severity: Some(Severity::High),
            min_confidence: Confidence::Low,
        }
    }
}

/// The whole policy of the gate. `Policy::default()` is the safe default; callers may load one
/// from TOML/YAML with serde (every field is optional) and layer overrides on top.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// Import allow-list.
    pub imports: ImportPolicy,
    /// Which findings block.
    pub block: BlockPolicy,
    /// Whether `# nosec` comments suppress findings.
    pub nosec: NosecPolicy,
    /// Rule ids that are not run at all.
    pub disabled_rules: Vec<String>,
}

/// Changes a plan or a step makes to the policy it inherits. Lists add to the inherited ones;
/// an `allow` entry removes the same entry from the inherited `deny` and vice versa, so the
/// later layer wins.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyOverrides {
    /// Import changes.
    pub imports: ImportOverrides,
    /// Replaces the block policy when set.
    pub block: Option<BlockPolicy>,
    /// Replaces the nosec policy when set.
    pub nosec: Option<NosecPolicy>,
    /// Rules to stop running.
    pub disable_rules: Vec<String>,
    /// Rules to run again although an earlier layer disabled them.
    pub enable_rules: Vec<String>,
}

/// Import changes one layer makes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportOverrides {
    /// Patterns to allow.
    pub allow: Vec<String>,
    /// Patterns to deny.
    pub deny: Vec<String>,
    /// Replaces `allow_relative` when set.
    pub allow_relative: Option<bool>,
}

impl Policy {
    /// Checks every pattern and rule id, so a bad configuration fails at start-up.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.imports.validate()?;
        check_rules(&self.disabled_rules, "disabled_rules")
    }

    /// This policy with `overrides` applied on top; validates the overrides.
    pub fn layered(&self, overrides: &PolicyOverrides) -> Result<Policy, PolicyError> {
        let o = &overrides.imports;
        for p in o.allow.iter().chain(&o.deny) {
            validate_pattern(p)?;
        }
        check_rules(&overrides.disable_rules, "disable_rules")?;
        check_rules(&overrides.enable_rules, "enable_rules")?;
        let mut out = self.clone();
        out.imports.deny.retain(|p| !o.allow.contains(p));
        out.imports.allow.retain(|p| !o.deny.contains(p));
        push_new(&mut out.imports.allow, &o.allow);
        push_new(&mut out.imports.deny, &o.deny);
        if let Some(rel) = o.allow_relative {
            out.imports.allow_relative = rel;
        }
        if let Some(block) = &overrides.block {
            out.block = block.clone();
        }
        if let Some(nosec) = overrides.nosec {
            out.nosec = nosec;
        }
        out.disabled_rules.retain(|r| {
            !overrides
                .enable_rules
                .iter()
                .any(|e| e.eq_ignore_ascii_case(r))
        });
        push_new(&mut out.disabled_rules, &overrides.disable_rules);
        Ok(out)
    }

    /// This policy, also allowing the project's own top-level modules and packages (`app` allows
    /// `app` and `app.*`). Names of standard-library modules are never added, so a workspace file
    /// called `subprocess.py` cannot unlock `import subprocess`; names that are not Python
    /// identifiers are ignored, and the deny list still wins.
    pub fn allowing_local_modules<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Policy {
        let mut out = self.clone();
        for name in names {
            let pattern = format!("{name}.*");
            if crate::stdlib::is_stdlib_module(name)
                || validate_pattern(name).is_err()
                || name.contains('.')
                || out.imports.allow.contains(&pattern)
            {
                continue;
            }
            out.imports.allow.push(pattern);
        }
        out
    }

    /// Whether the rule with this id runs.
    pub fn rule_enabled(&self, id: &str) -> bool {
        !self
            .disabled_rules
            .iter()
            .any(|r| r.eq_ignore_ascii_case(id))
    }
}

fn push_new(into: &mut Vec<String>, from: &[String]) {
    for p in from {
        if !into.contains(p) {
            into.push(p.clone());
        }
    }
}

fn check_rules(ids: &[String], field: &'static str) -> Result<(), PolicyError> {
    for id in ids {
        if catalog::find(id).is_none() {
            return Err(PolicyError::UnknownRule {
                id: id.clone(),
                field,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_exact_and_wildcard() {
        let p = ImportPolicy::default();
        assert!(p.allows("json"));
        assert!(p.allows("json.decoder"));
        assert!(p.allows("collections"));
        assert!(p.allows("collections.abc"));
        assert!(!p.allows("collectionsx"));
        assert!(p.allows("os.path"));
        assert!(!p.allows("os"));
        assert!(!p.allows("subprocess"));
        assert!(!p.allows("re.x") || p.allows("re"));
    }

    #[test]
    fn local_modules_are_allowed_but_never_shadow_the_standard_library() {
        let mut base = Policy::default();
        base.imports.deny.push("legacy.*".into());
        let p = base.allowing_local_modules([
            "app",
            "tests",
            "subprocess",
            "os",
            "legacy",
            "a-b",
            "x.y",
        ]);
        assert!(p.imports.allows("app"));
        assert!(p.imports.allows("app.models"));
        assert!(p.imports.allows("tests.test_app"));
        assert!(
            !p.imports.allows("subprocess"),
            "a local subprocess.py unlocks nothing"
        );
        assert!(!p.imports.allows("os"));
        assert!(!p.imports.allows("legacy"), "deny still wins");
        assert!(!p.imports.allows("a-b") && !p.imports.allows("x"));
    }

    #[test]
    fn deny_wins_and_later_layers_override() {
        let base = Policy::default();
        let plan = PolicyOverrides {
            imports: ImportOverrides {
                allow: vec!["requests".into(), "os".into()],
                deny: vec!["json.*".into()],
                allow_relative: Some(true),
            },
            ..Default::default()
        };
        let layered = base.layered(&plan).expect("valid");
        assert!(layered.imports.allows("requests"));
        assert!(layered.imports.allow_relative);
        assert_eq!(
            layered.imports.decide("json"),
            ImportDecision::Denied("json.*".into())
        );
        let step = PolicyOverrides {
            imports: ImportOverrides {
                allow: vec!["json.*".into()],
                deny: vec!["os".into()],
                allow_relative: None,
            },
            disable_rules: vec!["B101".into()],
            ..Default::default()
        };
        let layered = layered.layered(&step).expect("valid");
        assert!(layered.imports.allows("json"));
        assert!(!layered.imports.allows("os"));
        assert!(!layered.rule_enabled("b101"));
        assert!(layered.rule_enabled("B102"));
    }

    #[test]
    fn bad_patterns_and_rules_are_rejected_with_a_hint() {
        let mut p = Policy::default();
        p.imports.allow.push("json.*.x".into());
        let err = p.validate().expect_err("invalid");
        assert!(err.to_string().contains("json.*.x"), "{err}");
        let err = Policy::default()
            .layered(&PolicyOverrides {
                disable_rules: vec!["B999".into()],
                ..Default::default()
            })
            .expect_err("unknown rule");
        assert!(matches!(err, PolicyError::UnknownRule { .. }));
        assert!(Policy::default().validate().is_ok());
    }

    #[test]
    fn policy_loads_from_toml_with_defaults() {
        let p: Policy = toml::from_str(
            "nosec = \"bandit_rules\"\n[imports]\nallow = [\"json\"]\n[block]\nmin_severity = \"MEDIUM\"\n",
        )
        .expect("toml");
        assert_eq!(p.nosec, NosecPolicy::BanditRules);
        assert_eq!(p.imports.allow, vec!["json".to_owned()]);
        assert_eq!(p.block.min_severity, Some(Severity::Medium));
        assert!(p.block.aetherflow_rules);
        assert!(toml::from_str::<Policy>("unknown = 1").is_err());
    }
}
