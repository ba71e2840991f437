//! The original's `context.patch`: insert a fragment before or after an anchor line, or replace
//! a marked region, in an existing file — only the fragment changes, never the whole file. An
//! `idempotent` patch whose fragment is already in place changes nothing.

use aetherflow_domain::plan::{Patch, PatchPosition};

/// Why a patch cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The anchor is not in the file.
    #[error("the patch anchor {0:?} is not in the file; fix the plan's marker or line")]
    AnchorNotFound(String),
    /// The line number is past the end.
    #[error("the patch line {line} is past the end of the file ({lines} lines)")]
    LineOutOfRange {
        /// The line asked for.
        line: u64,
        /// Lines in the file.
        lines: usize,
    },
    /// The patch names no anchor its position needs.
    #[error("a `{0}` patch needs a `marker` or a `line`")]
    NoAnchor(&'static str),
    /// The region's end marker comes before its start.
    #[error("the region end {end:?} is not after its start {start:?}")]
    BadRegion {
        /// The start marker.
        start: String,
        /// The end marker.
        end: String,
    },
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// The index of the first line containing `marker`, searching from `from`.
fn find(lines: &[&str], marker: &str, from: usize) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.contains(marker))
        .map(|(i, _)| i)
}

/// Applies `patch` with `fragment` to `original`.
pub fn apply_patch(original: &str, patch: &Patch, fragment: &str) -> Result<String, PatchError> {
    let fragment = with_newline(fragment);
    if patch.idempotent == Some(true)
        && !fragment.trim().is_empty()
        && original.contains(fragment.trim_end())
    {
        return Ok(original.to_owned());
    }
    let lines: Vec<&str> = original.split_inclusive('\n').collect();
    let anchor = |name: &'static str| -> Result<usize, PatchError> {
        if let Some(marker) = &patch.marker {
            return find(&lines, marker, 0)
                .ok_or_else(|| PatchError::AnchorNotFound(marker.clone()));
        }
        if let Some(line) = patch.line {
            let index = usize::try_from(line)
                .unwrap_or(usize::MAX)
                .saturating_sub(1);
            if line == 0 || index >= lines.len() {
                return Err(PatchError::LineOutOfRange {
                    line,
                    lines: lines.len(),
                });
            }
            return Ok(index);
        }
        Err(PatchError::NoAnchor(name))
    };
    let (start, end) = match patch.position {
        PatchPosition::Before => {
            let at = anchor("before")?;
            (at, at)
        }
        PatchPosition::After => {
            let at = anchor("after")? + 1;
            (at, at)
        }
        PatchPosition::Replace => match (&patch.marker_start, &patch.marker_end) {
            (Some(s), Some(e)) => {
                let first =
                    find(&lines, s, 0).ok_or_else(|| PatchError::AnchorNotFound(s.clone()))?;
                let last = find(&lines, e, first + 1).ok_or_else(|| {
                    if find(&lines, e, 0).is_some() {
                        PatchError::BadRegion {
                            start: s.clone(),
                            end: e.clone(),
                        }
                    } else {
                        PatchError::AnchorNotFound(e.clone())
                    }
                })?;
                // The marker lines stay; what lies between them is replaced.
                (first + 1, last)
            }
            _ if patch.marker.is_some() || patch.line.is_some() => {
                let at = anchor("replace")?;
                (at, at + 1)
            }
            // No anchor at all: the whole file.
            _ => (0, lines.len()),
        },
        PatchPosition::Append => (lines.len(), lines.len()),
        PatchPosition::Prepend => (0, 0),
    };
    let mut out = String::with_capacity(original.len() + fragment.len());
    for l in &lines[..start] {
        out.push_str(l);
    }
    if start > 0 && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&fragment);
    for l in &lines[end..] {
        out.push_str(l);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch(position: PatchPosition) -> Patch {
        Patch {
            position,
            marker: None,
            marker_start: None,
            marker_end: None,
            line: None,
            idempotent: None,
            target_file: None,
            replacement: None,
            description: None,
            extra: Default::default(),
        }
    }

    const FILE: &str = "import os\n\n# ROUTES\ndef a():\n    pass\n# END ROUTES\n";

    #[test]
    fn inserts_after_and_before_a_marker() {
        let mut p = patch(PatchPosition::After);
        p.marker = Some("# ROUTES".into());
        let out = apply_patch(FILE, &p, "def b():\n    pass").unwrap();
        assert_eq!(
            out,
            "import os\n\n# ROUTES\ndef b():\n    pass\ndef a():\n    pass\n# END ROUTES\n"
        );
        p.position = PatchPosition::Before;
        let out = apply_patch(FILE, &p, "# routes below\n").unwrap();
        assert!(out.contains("\n# routes below\n# ROUTES\n"), "{out}");
    }

    #[test]
    fn replaces_only_the_marked_region() {
        let mut p = patch(PatchPosition::Replace);
        p.marker_start = Some("# ROUTES".into());
        p.marker_end = Some("# END ROUTES".into());
        let out = apply_patch(FILE, &p, "def c():\n    return 1\n").unwrap();
        assert_eq!(
            out,
            "import os\n\n# ROUTES\ndef c():\n    return 1\n# END ROUTES\n"
        );
    }

    #[test]
    fn appends_and_prepends() {
        let p = patch(PatchPosition::Append);
        assert_eq!(apply_patch("a", &p, "b").unwrap(), "a\nb\n");
        let p = patch(PatchPosition::Prepend);
        assert_eq!(apply_patch("b\n", &p, "a").unwrap(), "a\nb\n");
    }

    #[test]
    fn a_line_anchor_is_one_based() {
        let mut p = patch(PatchPosition::Before);
        p.line = Some(1);
        assert_eq!(apply_patch("b\n", &p, "a").unwrap(), "a\nb\n");
        p.line = Some(5);
        assert!(matches!(
            apply_patch("b\n", &p, "a"),
            Err(PatchError::LineOutOfRange { line: 5, lines: 1 })
        ));
    }

    #[test]
    fn an_idempotent_patch_applied_twice_changes_nothing_more() {
        let mut p = patch(PatchPosition::After);
        p.marker = Some("# ROUTES".into());
        p.idempotent = Some(true);
        let once = apply_patch(FILE, &p, "def b():\n    pass\n").unwrap();
        let twice = apply_patch(&once, &p, "def b():\n    pass\n").unwrap();
        assert_eq!(once, twice);
    }

    #[test]
    fn a_missing_anchor_is_an_error_naming_it() {
        let mut p = patch(PatchPosition::After);
        p.marker = Some("# NOWHERE".into());
        let err = apply_patch(FILE, &p, "x").unwrap_err();
        assert!(err.to_string().contains("# NOWHERE"), "{err}");
        let p = patch(PatchPosition::After);
        assert_eq!(
            apply_patch(FILE, &p, "x"),
            Err(PatchError::NoAnchor("after"))
        );
    }
}
