//! Bandit's string tests: B104 (bind all interfaces), B105 (hard-coded password), B108
//! (temporary directories), B608 (SQL built from strings) and B613 (trojan source).

use rustpython_parser::ast::{self, Constant, Expr};
use rustpython_parser::text_size::TextRange;

use super::is_execute_call;
use crate::finding::{Confidence as C, Severity as S};
use crate::rules::catalog as r;
use crate::rules::literal::{const_str, constant_text};
use crate::rules::{Analyzer, Parent, start};

const TMP_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm"];

/// Bandit's `RE_CANDIDATES`: `(^W$|_W_|^W_|_W$)` with
/// `W = (pas+wo?r?d|pass(phrase)?|pwd|token|secrete?)`, case-insensitive.
pub(super) fn password_like(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let b = lower.as_bytes();
    (0..b.len()).any(|s| {
        (s == 0 || b[s - 1] == b'_')
            && word_ends(&b[s..])
                .into_iter()
                .any(|e| s + e == b.len() || b[s + e] == b'_')
    })
}

fn word_ends(b: &[u8]) -> Vec<usize> {
    let mut ends = Vec::new();
    let lit = |w: &[u8]| b.starts_with(w);
    // pas+wo?r?d
    if lit(b"pas") {
        let mut i = 3;
        while b.get(i) == Some(&b's') {
            i += 1;
        }
        if b.get(i) == Some(&b'w') {
            i += 1;
            for o in [0, 1] {
                if o == 1 && b.get(i) != Some(&b'o') {
                    continue;
                }
                for rr in [0, 1] {
                    let j = i + o;
                    if rr == 1 && b.get(j) != Some(&b'r') {
                        continue;
                    }
                    if b.get(j + rr) == Some(&b'd') {
                        ends.push(j + rr + 1);
                    }
                }
            }
        }
    }
    if lit(b"passphrase") {
        ends.push(10);
    }
    if lit(b"pass") {
        ends.push(4);
    }
    if lit(b"pwd") {
        ends.push(3);
    }
    if lit(b"token") {
        ends.push(5);
    }
    if lit(b"secrete") {
        ends.push(7);
    }
    if lit(b"secret") {
        ends.push(6);
    }
    ends
}

/// Bandit's `SIMPLE_SQL_RE`, case-insensitive and dot-all.
fn looks_like_sql(s: &str) -> bool {
    let l = s.to_lowercase();
    let after_kw_ws = |from: usize, kw: &str, many: bool| -> Option<usize> {
        let mut at = from;
        while let Some(i) = l.get(at..)?.find(kw) {
            let pos = at + i + kw.len();
            let mut chars = l[pos..].char_indices().peekable();
            let mut end = None;
            while let Some(&(o, c)) = chars.peek() {
                if !c.is_whitespace() {
                    break;
                }
                end = Some(pos + o + c.len_utf8());
                chars.next();
                if !many {
                    break;
                }
            }
            if let Some(e) = end {
                return Some(e);
            }
            at = at + i + 1;
        }
        None
    };
    let later = |from: usize, kw: &str, next: &dyn Fn(char) -> bool| -> bool {
        let mut at = from;
        while let Some(i) = l.get(at..).and_then(|t| t.find(kw)) {
            let pos = at + i + kw.len();
            if l[pos..].chars().next().is_some_and(next) {
                return true;
            }
            at = at + i + 1;
        }
        false
    };
    let ws = |c: char| c.is_whitespace();
    if let Some(p) = after_kw_ws(0, "select", false)
        && later(p, "from", &ws)
    {
        return true;
    }
    let mut at = 0;
    while let Some(p) = after_kw_ws(at, "delete", true) {
        if l[p..].starts_with("from") && l[p + 4..].chars().next().is_some_and(ws) {
            return true;
        }
        at = p;
    }
    let mut at = 0;
    while let Some(p) = after_kw_ws(at, "insert", true) {
        if l[p..].starts_with("into")
            && l[p + 4..].chars().next().is_some_and(ws)
            && later(p + 5, "values", &|c| c.is_whitespace() || c == '(')
        {
            return true;
        }
        at = p;
    }
    if let Some(p) = after_kw_ws(0, "update", false)
        && later(p, "set", &ws)
    {
        return true;
    }
    false
}

/// Bandit's `concat_string` traversal: the strings of `top`'s chain outside `stop`'s subtree.
fn collect_bits<'e>(node: &'e ast::ExprBinOp, stop: &ast::ExprBinOp, bits: &mut Vec<&'e str>) {
    if std::ptr::eq(node, stop) {
        return;
    }
    for side in [node.left.as_ref(), node.right.as_ref()] {
        match side {
            Expr::BinOp(inner) => collect_bits(inner, stop, bits),
            other => {
                if let Some(s) = const_str(other) {
                    bits.push(s);
                }
            }
        }
    }
}

impl<'a> Analyzer<'a> {
    /// Bandit's `Str` tests: B104, B105, B108 (B608 is handled at the parent).
    pub(in crate::rules) fn string(
        &mut self,
        node: &ast::ExprConstant,
        s: &str,
        parent: Parent<'a>,
    ) {
        if s == "0.0.0.0" {
            self.emit(&r::B104, node.range, "Possible binding to all interfaces.");
        }
        if TMP_DIRS.iter().any(|d| s.starts_with(d)) {
            self.emit(
                &r::B108,
                node.range,
                "Probable insecure usage of temp file/directory.",
            );
        }
        let password = match parent {
            Parent::Assign(a) => a
                .targets
                .iter()
                .any(|t| match t {
                    Expr::Name(n) => password_like(n.id.as_str()),
                    Expr::Attribute(at) => password_like(at.attr.as_str()),
                    _ => false,
                })
                .then(|| s.to_owned()),
            Parent::Dict(d) if password_like(s) => d
                .keys
                .iter()
                .position(|k| matches!(k, Some(Expr::Constant(k)) if std::ptr::eq(k, node)))
                .and_then(|i| match d.values.get(i) {
                    Some(Expr::Constant(v)) => Some(constant_text(&v.value)),
                    _ => None,
                }),
            Parent::Subscript(Some(a)) if password_like(s) => {
                const_str(&a.value).map(str::to_owned)
            }
            Parent::Compare(c) => {
                let left = match c.left.as_ref() {
                    Expr::Name(n) => Some(n.id.as_str()),
                    Expr::Attribute(a) => Some(a.attr.as_str()),
                    _ => None,
                };
                match (left, c.comparators.first()) {
                    (Some(l), Some(first)) if password_like(l) => {
                        const_str(first).map(str::to_owned)
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(p) = password {
            self.emit(
                &r::B105,
                node.range,
                format!("Possible hardcoded password: '{p}'"),
            );
        }
    }

    pub(in crate::rules) fn sql(
        &mut self,
        range: TextRange,
        statement: &str,
        execute: bool,
        replace: bool,
    ) {
        if looks_like_sql(statement) {
            let confidence = if execute && !replace {
                C::Medium
            } else {
                C::Low
            };
            self.emit_rated(
                &r::B608,
                S::Medium,
                confidence,
                range,
                "Possible SQL injection vector through string-based query construction.",
                None,
            );
        }
    }

    /// B608 for strings inside a `+`/`%` chain, reproducing bandit's `concat_string`.
    pub(in crate::rules) fn sql_binop(&mut self, top: &ast::ExprBinOp, parent: Parent<'a>) {
        let execute = is_execute_call(parent);
        let mut stack = vec![top];
        let mut hits = Vec::new();
        while let Some(b) = stack.pop() {
            for side in [b.left.as_ref(), b.right.as_ref()] {
                match side {
                    Expr::BinOp(inner) => stack.push(inner),
                    Expr::Constant(c) => {
                        if let Constant::Str(s) = &c.value {
                            let mut bits = vec![s.as_str()];
                            collect_bits(top, b, &mut bits);
                            hits.push((c.range, bits.join(" ")));
                        }
                    }
                    _ => {}
                }
            }
        }
        hits.sort_by_key(|(r, _)| start(*r));
        for (range, statement) in hits {
            self.sql(range, &statement, execute, false);
        }
    }

    /// B608 for f-strings, and AF111 for dunders reached from their fields.
    pub(in crate::rules) fn joined_str(&mut self, j: &ast::ExprJoinedStr, parent: Parent<'a>) {
        let parts: Vec<(&str, TextRange)> = j
            .values
            .iter()
            .filter_map(|v| match v {
                Expr::Constant(c) => match &c.value {
                    Constant::Str(s) => Some((s.as_str(), c.range)),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        if let Some(&(_, range)) = parts.first() {
            let statement: String = parts.iter().map(|(s, _)| *s).collect();
            self.sql(range, &statement, is_execute_call(parent), false);
        }
        self.fstring_dunder(j);
    }

    /// B613: bidirectional control characters anywhere in the file (first one only).
    pub(in crate::rules) fn trojansource(&mut self) {
        const BIDI: &[char] = &[
            '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}', '\u{202e}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200f}',
        ];
        // Every listed character is encoded with a 0xE2 lead byte.
        if !self.source.as_bytes().contains(&0xE2) {
            return;
        }
        let mut offset = 0;
        for line in self.source.split_inclusive('\n') {
            for ch in BIDI {
                if let Some(i) = line.find(*ch) {
                    let at = offset + i;
                    let range =
                        TextRange::new((at as u32).into(), ((at + ch.len_utf8()) as u32).into());
                    self.emit(
                        &r::B613,
                        range,
                        format!(
                            "A Python source file contains bidirectional control characters ('\\u{:04x}').",
                            *ch as u32
                        ),
                    );
                    if let Some(last) = self.raws.last_mut() {
                        last.col_offset = Some(line[..i].chars().count() + 1);
                    }
                    return;
                }
            }
            offset += line.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_names_match_bandit_regex() {
        for yes in [
            "password",
            "PASSWORD",
            "db_password",
            "passwd",
            "user_pwd_x",
            "token",
            "api_token",
            "secret",
            "secrete",
            "passphrase",
            "pass",
            "my_pass_word",
        ] {
            assert!(password_like(yes), "{yes}");
        }
        for no in [
            "passport",
            "tokens",
            "secretary",
            "compass",
            "bypassed",
            "username",
        ] {
            assert!(!password_like(no), "{no}");
        }
    }

    #[test]
    fn sql_detection_matches_bandit_regex() {
        assert!(looks_like_sql("SELECT * FROM users WHERE id = "));
        assert!(looks_like_sql("delete   from t"));
        assert!(!looks_like_sql("delete from"));
        assert!(looks_like_sql("INSERT INTO t (a) VALUES("));
        assert!(looks_like_sql("update t set a="));
        assert!(!looks_like_sql(
            "select the best option from the list"[..13].as_ref()
        ));
        assert!(!looks_like_sql("please update the settings"));
    }
}
