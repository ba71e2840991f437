//! PEP 508 requirement lines, as far as a gate needs them: name, extras, version clauses,
//! marker, and whether the requirement is a direct (URL, VCS or path) reference.

/// One parsed requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The name as written.
    pub name: String,
    /// The PEP 503 normalised name (lower case, runs of `-_.` as one `-`).
    pub normalized: String,
    /// Extras, as written.
    pub extras: Vec<String>,
    /// Version clauses such as `==1.2.3` or `>=2,<3`, with spaces removed ("" when none).
    pub specifier: String,
    /// The environment marker after `;`, if any.
    pub marker: Option<String>,
    /// A URL, VCS or path the requirement points at instead of the index.
    pub direct_reference: Option<String>,
    /// 1-based line in the file it came from.
    pub line: usize,
}

impl Requirement {
    /// The exact version when the requirement is pinned with a single `==` (no wildcard) or
    /// `===` clause.
    pub fn pinned_version(&self) -> Option<&str> {
        if self.specifier.contains(',') {
            return None;
        }
        if let Some(v) = self.specifier.strip_prefix("===") {
            return (!v.is_empty()).then_some(v);
        }
        let v = self.specifier.strip_prefix("==")?;
        (!v.is_empty() && !v.contains('*')).then_some(v)
    }
}

/// PEP 503 normalisation.
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('-');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

fn looks_like_reference(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    lower.contains("://")
        || ["git+", "hg+", "svn+", "bzr+", "file:"]
            .iter()
            .any(|p| lower.starts_with(p))
        || s.starts_with(['.', '/', '~', '\\'])
        || (s.len() > 2 && s.as_bytes()[1] == b':' && s.as_bytes()[0].is_ascii_alphabetic())
        || [".whl", ".tar.gz", ".zip", ".tgz"]
            .iter()
            .any(|e| lower.ends_with(e))
}

/// Parses one PEP 508 requirement (without pip options or comments).
pub fn parse(text: &str, line: usize) -> Result<Requirement, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty requirement".into());
    }
    let (spec, marker) = match text.split_once(';') {
        Some((s, m)) => (s.trim(), Some(m.trim().to_owned())),
        None => (text, None),
    };
    let first = spec.split_whitespace().next().unwrap_or("");
    if looks_like_reference(first) {
        return Ok(Requirement {
            name: String::new(),
            normalized: String::new(),
            extras: Vec::new(),
            specifier: String::new(),
            marker,
            direct_reference: Some(spec.to_owned()),
            line,
        });
    }
    let name_end = spec
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        .unwrap_or(spec.len());
    let name = &spec[..name_end];
    let valid_name = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid_name {
        return Err(format!("`{spec}` does not start with a valid package name"));
    }
    let mut rest = spec[name_end..].trim_start();
    let mut extras = Vec::new();
    if let Some(after) = rest.strip_prefix('[') {
        let close = after
            .find(']')
            .ok_or_else(|| format!("unclosed `[` in `{spec}`"))?;
        extras = after[..close]
            .split(',')
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect();
        rest = after[close + 1..].trim_start();
    }
    if let Some(url) = rest.strip_prefix('@') {
        return Ok(Requirement {
            name: name.to_owned(),
            normalized: normalize(name),
            extras,
            specifier: String::new(),
            marker,
            direct_reference: Some(url.trim().to_owned()),
            line,
        });
    }
    let rest = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or(rest);
    let specifier: String = rest.chars().filter(|c| !c.is_whitespace()).collect();
    for clause in specifier.split(',').filter(|c| !c.is_empty()) {
        let op_len = ["===", "==", "!=", "~=", "<=", ">=", "<", ">"]
            .iter()
            .find(|op| clause.starts_with(**op))
            .map(|op| op.len())
            .ok_or_else(|| {
                format!("`{clause}` in `{spec}` is not a version clause (such as ==1.2.3)")
            })?;
        let version = &clause[op_len..];
        if version.is_empty()
            || !version.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '*' | '+' | '-' | '_' | '!')
            })
        {
            return Err(format!("`{clause}` in `{spec}` has no valid version"));
        }
    }
    Ok(Requirement {
        name: name.to_owned(),
        normalized: normalize(name),
        extras,
        specifier,
        marker,
        direct_reference: None,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_extras_specifiers_and_markers() {
        let r = parse(
            "Requests[security, socks] == 2.31.0 ; python_version >= '3.8'",
            3,
        )
        .expect("ok");
        assert_eq!(r.name, "Requests");
        assert_eq!(r.normalized, "requests");
        assert_eq!(r.extras, ["security", "socks"]);
        assert_eq!(r.pinned_version(), Some("2.31.0"));
        assert_eq!(r.marker.as_deref(), Some("python_version >= '3.8'"));
        assert_eq!(r.line, 3);
        assert_eq!(
            parse("numpy>=1.24,<2", 1).expect("ok").pinned_version(),
            None
        );
        assert_eq!(parse("numpy==1.*", 1).expect("ok").pinned_version(), None);
        assert_eq!(parse("numpy", 1).expect("ok").pinned_version(), None);
        assert_eq!(
            parse("a===1.0", 1).expect("ok").pinned_version(),
            Some("1.0")
        );
    }

    #[test]
    fn direct_references_are_recognised() {
        for s in [
            "pkg @ https://example.com/pkg-1.0.tar.gz",
            "git+https://github.com/x/y.git#egg=y",
            "./local/pkg",
            "/abs/path/pkg.whl",
            "file:///tmp/x.zip",
            "C:\\pkgs\\x.whl",
        ] {
            assert!(
                parse(s, 1).expect("parses").direct_reference.is_some(),
                "{s}"
            );
        }
    }

    #[test]
    fn invalid_lines_say_why() {
        assert!(parse("-bad", 1).is_err());
        assert!(
            parse("pkg=1.0", 1)
                .expect_err("err")
                .contains("version clause")
        );
        assert!(parse("pkg[extra", 1).is_err());
    }

    #[test]
    fn normalisation_follows_pep_503() {
        assert_eq!(normalize("Python_Dateutil"), "python-dateutil");
        assert_eq!(normalize("zope.interface"), "zope-interface");
        assert_eq!(normalize("a--b__c"), "a-b-c");
    }
}
