//! `pyproject.toml`: PEP 621 `[project]` dependencies and Poetry's dependency tables.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    DependencyPolicy, DependencyProblem, DependencyReport, DepsError, RequirementSummary,
    check_name, check_requirement, normalize, requirement,
};

#[derive(Deserialize)]
struct Pyproject {
    project: Option<Project>,
    tool: Option<Tool>,
}

#[derive(Deserialize)]
struct Project {
    #[serde(default)]
    dependencies: Vec<toml::Spanned<String>>,
    #[serde(default, rename = "optional-dependencies")]
    optional_dependencies: BTreeMap<String, Vec<toml::Spanned<String>>>,
}

#[derive(Deserialize)]
struct Tool {
    poetry: Option<Poetry>,
}

#[derive(Deserialize)]
struct Poetry {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default, rename = "dev-dependencies")]
    dev_dependencies: BTreeMap<String, toml::Spanned<toml::Value>>,
    #[serde(default)]
    group: BTreeMap<String, PoetryGroup>,
}

#[derive(Deserialize)]
struct PoetryGroup {
    #[serde(default)]
    dependencies: BTreeMap<String, toml::Spanned<toml::Value>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    1 + text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
}

/// Checks `[project].dependencies`, `[project.optional-dependencies]` and Poetry's dependency
/// tables of a `pyproject.toml`. (`[build-system].requires` is not checked: build back-ends are
/// rarely pinned exactly.)
pub fn check_pyproject(
    text: &str,
    policy: &DependencyPolicy,
) -> Result<DependencyReport, DepsError> {
    let doc: Pyproject = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| {
            let line = line_of(text, s.start);
            let line_start = text[..s.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            (
                line,
                text[line_start..s.start.min(text.len())].chars().count() + 1,
            )
        });
        DepsError::Toml {
            line,
            column,
            message: e.message().to_owned(),
        }
    })?;
    let mut report = DependencyReport::default();
    if let Some(project) = &doc.project {
        let all = project
            .dependencies
            .iter()
            .chain(project.optional_dependencies.values().flatten());
        for dep in all {
            let line = line_of(text, dep.span().start);
            match requirement::parse(dep.get_ref(), line) {
                Ok(r) => check_requirement(&r, policy, &mut report),
                Err(reason) => report.problems.push(DependencyProblem::Unparseable {
                    line,
                    text: dep.get_ref().clone(),
                    reason,
                }),
            }
        }
    }
    if let Some(poetry) = doc.tool.as_ref().and_then(|t| t.poetry.as_ref()) {
        let tables = std::iter::once(&poetry.dependencies)
            .chain(std::iter::once(&poetry.dev_dependencies))
            .chain(poetry.group.values().map(|g| &g.dependencies));
        for table in tables {
            for (name, value) in table {
                if name == "python" {
                    continue;
                }
                check_poetry(text, name, value, policy, &mut report);
            }
        }
    }
    Ok(report)
}

fn check_poetry(
    text: &str,
    name: &str,
    value: &toml::Spanned<toml::Value>,
    policy: &DependencyPolicy,
    report: &mut DependencyReport,
) {
    let line = line_of(text, value.span().start);
    let normalized = normalize(name);
    let version = match value.get_ref() {
        toml::Value::String(v) => Some(v.clone()),
        toml::Value::Table(t) => {
            if let Some((key, reference)) = ["git", "path", "url", "file"]
                .iter()
                .find_map(|k| t.get(*k).map(|v| (*k, v)))
            {
                report.requirements.push(RequirementSummary {
                    name: normalized.clone(),
                    specifier: String::new(),
                    line,
                });
                report.problems.push(DependencyProblem::DirectReference {
                    line,
                    reference: format!("{name} = {{ {key} = {reference} }}"),
                });
                check_name(&normalized, line, policy, report);
                return;
            }
            t.get("version").and_then(|v| v.as_str()).map(str::to_owned)
        }
        _ => None,
    };
    let spec = version.unwrap_or_default();
    report.requirements.push(RequirementSummary {
        name: normalized.clone(),
        specifier: spec.clone(),
        line,
    });
    check_name(&normalized, line, policy, report);
    // Poetry writes an exact pin as `1.2.3` or `==1.2.3`.
    let exact = spec.strip_prefix("==").unwrap_or(&spec);
    let pinned = !exact.is_empty()
        && exact
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '!'))
        && exact.starts_with(|c: char| c.is_ascii_digit());
    if policy.require_exact_pins && !pinned {
        report.problems.push(DependencyProblem::NotPinned {
            line,
            name: normalized,
            specifier: spec,
        });
    }
}
