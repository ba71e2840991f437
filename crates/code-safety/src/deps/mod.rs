//! Dependency checks for generated projects: `requirements.txt`, `pyproject.toml` and the
//! third-party modules a file imports. Packages must be on an allow-list, pinned exactly
//! (`==`), fetched from the index (no URL, VCS or path requirements), and not look like a typo
//! of a popular package (`reqeusts`, `python-numpy`).

mod imports;
mod pyproject;
mod requirement;
mod typo;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use imports::{check_imports, distribution_for_import, is_stdlib};
pub use pyproject::check_pyproject;
pub use requirement::{Requirement, normalize};

/// What a generated project may depend on. The default allows no package at all: list the
/// distributions a plan may use in `allow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DependencyPolicy {
    /// Allowed distribution names (compared after PEP 503 normalisation); `*` allows any name.
    pub allow: Vec<String>,
    /// Require every requirement to be pinned with `==` (or `===`).
    pub require_exact_pins: bool,
    /// Largest edit distance to a popular name that counts as a likely typo-squat (names of
    /// fewer than 9 characters use at most 1).
    pub max_typo_distance: usize,
}

impl Default for DependencyPolicy {
    fn default() -> Self {
        DependencyPolicy {
            allow: Vec::new(),
            require_exact_pins: true,
            max_typo_distance: 2,
        }
    }
}

impl DependencyPolicy {
    fn allows(&self, normalized: &str) -> bool {
        self.allow
            .iter()
            .any(|a| a == "*" || normalize(a) == normalized)
    }
}

/// One thing wrong with a dependency, said so the author (or model) knows what to change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DependencyProblem {
    /// The line is not a requirement.
    #[error("line {line}: cannot parse `{text}`: {reason}")]
    Unparseable {
        /// 1-based line.
        line: usize,
        /// The text as written.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// A pip option that changes where or what is installed.
    #[error("line {line}: option `{option}` is not allowed: {reason}")]
    ForbiddenOption {
        /// 1-based line.
        line: usize,
        /// The option as written.
        option: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The package is not on the allow-list.
    #[error(
        "line {line}: package `{name}` is not on the dependency allow-list; use an allowed package or ask for it to be allowed"
    )]
    NotAllowed {
        /// 1-based line (0 for an import).
        line: usize,
        /// Normalised name.
        name: String,
    },
    /// Not pinned to one exact version.
    #[error(
        "line {line}: `{name}` must be pinned to one exact version (`{name}==X.Y.Z`), not `{specifier}`"
    )]
    NotPinned {
        /// 1-based line.
        line: usize,
        /// Normalised name.
        name: String,
        /// The specifier as written ("" when none).
        specifier: String,
    },
    /// A URL, VCS or local-path requirement.
    #[error(
        "line {line}: `{reference}` installs from a URL, VCS or path; depend on a pinned release from the package index instead"
    )]
    DirectReference {
        /// 1-based line.
        line: usize,
        /// The reference as written.
        reference: String,
    },
    /// The name looks like a typo of a popular package.
    #[error(
        "line {line}: `{name}` looks like a typo-squat of the popular package `{similar_to}`; did you mean `{similar_to}`?"
    )]
    TypoSquat {
        /// 1-based line (0 for an import).
        line: usize,
        /// Normalised name.
        name: String,
        /// The popular name it resembles.
        similar_to: String,
    },
}

/// The result of checking one dependency source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DependencyReport {
    /// Requirements that parsed.
    pub requirements: Vec<RequirementSummary>,
    /// Every problem, in file order.
    pub problems: Vec<DependencyProblem>,
}

/// A requirement as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequirementSummary {
    /// Normalised name ("" for a bare URL or path).
    pub name: String,
    /// Version clauses as written.
    pub specifier: String,
    /// 1-based line.
    pub line: usize,
}

impl DependencyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for DependencyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A `pyproject.toml` that cannot be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepsError {
    /// The TOML does not parse or has the wrong shape.
    #[error("pyproject.toml line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line (0 when unknown).
        line: usize,
        /// 1-based column (0 when unknown).
        column: usize,
        /// The parser's message.
        message: String,
    },
}

/// Checks a `requirements.txt`: pip options, comments and line continuations are understood;
/// `--hash` options are allowed; `-r`, `-c`, `-e`, index and find-links options are refused.
pub fn check_requirements(text: &str, policy: &DependencyPolicy) -> DependencyReport {
    let mut report = DependencyReport::default();
    let mut pending = String::new();
    let mut start_line = 0;
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        if pending.is_empty() {
            start_line = line_no;
        }
        let line = strip_comment(raw);
        if let Some(cont) = line.trim_end().strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        pending.push_str(line);
        let logical = std::mem::take(&mut pending);
        check_line(logical.trim(), start_line, policy, &mut report);
    }
    if !pending.trim().is_empty() {
        check_line(pending.trim(), start_line, policy, &mut report);
    }
    report
}

fn strip_comment(line: &str) -> &str {
    let b = line.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'#' && (i == 0 || b[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn check_line(
    line: &str,
    line_no: usize,
    policy: &DependencyPolicy,
    report: &mut DependencyReport,
) {
    if line.is_empty() {
        return;
    }
    if line.starts_with('-') {
        let option = line.split([' ', '=']).next().unwrap_or(line);
        let reason = match option {
            "-e" | "--editable" => {
                let target = line[option.len()..].trim_start_matches(['=', ' ']).trim();
                report.problems.push(DependencyProblem::DirectReference {
                    line: line_no,
                    reference: target.to_owned(),
                });
                return;
            }
            "-r" | "--requirement" | "-c" | "--constraint" => {
                "other requirement files are not checked; list every requirement here"
            }
            "-i" | "--index-url" | "--extra-index-url" | "-f" | "--find-links"
            | "--trusted-host" => {
                "installing from another index or location enables dependency confusion"
            }
            "--pre" | "--prefer-binary" | "--only-binary" | "--no-binary" | "--require-hashes"
            | "--no-deps" => return,
            _ => "unknown pip option",
        };
        report.problems.push(DependencyProblem::ForbiddenOption {
            line: line_no,
            option: option.to_owned(),
            reason,
        });
        return;
    }
    // Per-requirement options (`--hash=...`) follow the requirement.
    let spec = match line.find(" --") {
        Some(i) => &line[..i],
        None => line,
    };
    match requirement::parse(spec, line_no) {
        Ok(r) => check_requirement(&r, policy, report),
        Err(reason) => report.problems.push(DependencyProblem::Unparseable {
            line: line_no,
            text: line.to_owned(),
            reason,
        }),
    }
}

pub(super) fn check_requirement(
    r: &Requirement,
    policy: &DependencyPolicy,
    report: &mut DependencyReport,
) {
    report.requirements.push(RequirementSummary {
        name: r.normalized.clone(),
        specifier: r.specifier.clone(),
        line: r.line,
    });
    if let Some(reference) = &r.direct_reference {
        report.problems.push(DependencyProblem::DirectReference {
            line: r.line,
            reference: reference.clone(),
        });
    }
    if r.normalized.is_empty() {
        return;
    }
    check_name(&r.normalized, r.line, policy, report);
    if policy.require_exact_pins && r.direct_reference.is_none() && r.pinned_version().is_none() {
        report.problems.push(DependencyProblem::NotPinned {
            line: r.line,
            name: r.normalized.clone(),
            specifier: r.specifier.clone(),
        });
    }
}

fn check_name(
    normalized: &str,
    line: usize,
    policy: &DependencyPolicy,
    report: &mut DependencyReport,
) {
    let allowed = policy.allows(normalized);
    if !allowed {
        report.problems.push(DependencyProblem::NotAllowed {
            line,
            name: normalized.to_owned(),
        });
    }
    // A name someone put on the allow-list explicitly has been vetted.
    let vetted = policy.allow.iter().any(|a| normalize(a) == normalized);
    if !vetted && let Some(similar) = typo::similar_popular(normalized, policy.max_typo_distance) {
        report.problems.push(DependencyProblem::TypoSquat {
            line,
            name: normalized.to_owned(),
            similar_to: similar.to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str]) -> DependencyPolicy {
        DependencyPolicy {
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            ..DependencyPolicy::default()
        }
    }

    #[test]
    fn pinned_allowed_requirements_pass() {
        let text = "# deps\nrequests==2.31.0  # http\nnumpy==1.26.4 \\\n    --hash=sha256:abc\n\n--require-hashes\n";
        let report = check_requirements(text, &policy(&["requests", "numpy"]));
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.requirements.len(), 2);
        assert_eq!(report.requirements[1].line, 3);
    }

    #[test]
    fn unpinned_unlisted_and_direct_requirements_are_reported() {
        let text = "requests>=2\nleftpad==1.0\ngit+https://github.com/x/y.git\n-e ./local\n--index-url https://evil.example/simple\n-r other.txt\nflask @ https://x.example/flask.whl\nbad=1\n";
        let report = check_requirements(text, &policy(&["requests", "flask"]));
        let kinds: Vec<String> = report.problems.iter().map(|p| format!("{p}")).collect();
        let has = |needle: &str| kinds.iter().any(|k| k.contains(needle));
        assert!(has("line 1: `requests` must be pinned"), "{kinds:#?}");
        assert!(
            has("line 2: package `leftpad` is not on the dependency allow-list"),
            "{kinds:#?}"
        );
        assert!(
            has("line 3: `git+https://github.com/x/y.git` installs from a URL"),
            "{kinds:#?}"
        );
        assert!(has("line 4: `./local` installs"), "{kinds:#?}");
        assert!(
            has("line 5: option `--index-url` is not allowed"),
            "{kinds:#?}"
        );
        assert!(has("line 6: option `-r` is not allowed"), "{kinds:#?}");
        assert!(
            has("line 7: `https://x.example/flask.whl` installs"),
            "{kinds:#?}"
        );
        assert!(has("line 8: cannot parse `bad=1`"), "{kinds:#?}");
    }

    #[test]
    fn typo_squats_of_popular_packages_are_caught() {
        let p = policy(&["*"]);
        for (name, popular) in [
            ("reqeusts", "requests"),
            ("requets", "requests"),
            ("python-numpy", "numpy"),
            ("numpy-python", "numpy"),
            ("py-yaml", "pyyaml"),
            ("urlib3", "urllib3"),
            ("beautifulsoup", "beautifulsoup4"),
        ] {
            let report = check_requirements(&format!("{name}==1.0\n"), &p);
            assert!(
                report.problems.iter().any(|pr| matches!(pr, DependencyProblem::TypoSquat { similar_to, .. } if similar_to == popular)),
                "{name}: {report}"
            );
        }
        for ok in [
            "requests",
            "python-dateutil",
            "Python_Dateutil",
            "my-internal-tool",
            "six",
        ] {
            let report = check_requirements(&format!("{ok}==1.0\n"), &p);
            assert!(report.is_ok(), "{ok}: {report}");
        }
        // A name put on the allow-list explicitly is trusted.
        assert!(check_requirements("reqeusts==1.0\n", &policy(&["reqeusts"])).is_ok());
    }

    #[test]
    fn pyproject_dependencies_are_checked_with_lines() {
        let text = r#"
[project]
name = "demo"
dependencies = [
  "requests==2.31.0",
  "numpy>=1.26",
]

[project.optional-dependencies]
dev = ["pytset==8.0.0"]

[tool.poetry.dependencies]
python = "^3.11"
flask = "3.0.0"
django = "^5.0"
mylib = { git = "https://github.com/x/mylib.git" }
"#;
        let report = check_pyproject(
            text,
            &policy(&["requests", "numpy", "pytset", "flask", "django", "mylib"]),
        )
        .expect("valid toml");
        let msgs: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("line 6: `numpy` must be pinned")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("line 15: `django` must be pinned")),
            "{msgs:#?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.starts_with("line 16: `mylib = { git")),
            "{msgs:#?}"
        );
        assert!(!msgs.iter().any(|m| m.contains("`flask`")), "{msgs:#?}");
        assert!(!msgs.iter().any(|m| m.contains("`requests`")), "{msgs:#?}");
        assert_eq!(report.requirements.len(), 6);
    }

    #[test]
    fn broken_pyproject_is_an_error_with_position() {
        let err = check_pyproject("[project\nname = 1\n", &DependencyPolicy::default())
            .expect_err("toml error");
        let DepsError::Toml { line, .. } = &err;
        assert_eq!(*line, 1, "{err}");
        assert!(
            check_pyproject(
                "[project]\ndependencies = \"requests\"\n",
                &DependencyPolicy::default()
            )
            .is_err()
        );
    }

    #[test]
    fn third_party_imports_map_to_distributions() {
        let imports = [
            "json",
            "os.path",
            "yaml",
            "requests.adapters",
            "reqeusts",
            "numpy",
        ];
        let report = check_imports(
            imports,
            &["numpy".to_owned()],
            &policy(&["pyyaml", "requests"]),
        );
        let names: Vec<&str> = report
            .requirements
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(names, ["pyyaml", "requests", "reqeusts"]);
        assert_eq!(report.problems.len(), 2, "{report}");
        assert!(is_stdlib("collections.abc"));
        assert!(!is_stdlib("yaml"));
        assert_eq!(
            distribution_for_import("sklearn.linear_model"),
            "scikit-learn"
        );
    }
}
