//! Typo-squat detection against the shipped list of popular PyPI names.

use std::collections::HashSet;
use std::sync::LazyLock;

static POPULAR: LazyLock<Vec<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/popular-pypi.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
});

static POPULAR_SET: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| POPULAR.iter().copied().collect());

/// Prefixes and suffixes squatters add to or drop from real names.
const AFFIXES: &[&str] = &["python-", "py-", "py", "-python", "-py", "python"];

fn strip_affixes(name: &str) -> Vec<&str> {
    let mut out = vec![name];
    for a in AFFIXES {
        if let Some(s) = name.strip_prefix(a) {
            out.push(s.trim_start_matches('-'));
        }
        if let Some(s) = name.strip_suffix(a) {
            out.push(s.trim_end_matches('-'));
        }
    }
    out.retain(|s| s.len() >= 3);
    out
}

/// The popular package `name` (PEP 503-normalised) most likely imitates, if any: same name
/// after dropping separators or `python`/`py` affixes, or within a small edit distance.
pub(super) fn similar_popular(name: &str, max_distance: usize) -> Option<&'static str> {
    if POPULAR_SET.contains(name) {
        return None;
    }
    let squashed: String = name.chars().filter(|c| *c != '-').collect();
    let variants = strip_affixes(name);
    let mut best: Option<(usize, &'static str)> = None;
    for &popular in POPULAR.iter() {
        let pop_squashed: String = popular.chars().filter(|c| *c != '-').collect();
        if squashed == pop_squashed
            || variants
                .iter()
                .any(|v| *v == popular || strip_affixes(popular).contains(v))
        {
            return Some(popular);
        }
        let limit = if name.len().min(popular.len()) < 9 {
            1
        } else {
            max_distance
        };
        if name.len() < 5 || popular.len() < 5 || limit == 0 {
            continue;
        }
        let d = strsim::damerau_levenshtein(name, popular);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, popular));
        }
    }
    best.map(|(_, p)| p)
}
