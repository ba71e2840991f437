//! Turning text into an AST: positions, `# nosec` comments, NFKC identifiers and the limits that
//! keep hostile input from costing unbounded time or stack.

use std::collections::HashMap;
use std::fmt;

use rustpython_parser::lexer::{self, LexResult, LexicalError, LexicalErrorType};
use rustpython_parser::text_size::TextSize;
use rustpython_parser::{Mode, Parse, Tok, ast};
use serde::Serialize;
use unicode_normalization::UnicodeNormalization;

use crate::rules::catalog;

/// CPython refuses more than 200 nested brackets ("too many nested parentheses"); so do we.
pub(crate) const MAX_BRACKET_DEPTH: usize = 200;
/// Longest chain of operators (`a + b + ...`, `a.b.c...`) in one expression we accept; each link
/// is one level of AST depth, and walking and dropping the tree recurse. CPython's default
/// recursion limit (and so bandit, which walks recursively) stops at about the same depth.
pub(crate) const MAX_OPERATOR_CHAIN: usize = 1000;

/// Why source text could not be analysed: a syntax error or a limit, with its position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("syntax error at line {line}, column {column}: {message}\n    {source_line}")]
pub struct ParseFailure {
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error, counted in characters.
    pub column: usize,
    /// The parser's description of the problem.
    pub message: String,
    /// The offending line, without its line break.
    pub source_line: String,
}

/// Line starts of a text, for turning byte offsets into lines and columns.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\n' => starts.push(i + 1),
                b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
                _ => {}
            }
            i += 1;
        }
        LineIndex { text, starts }
    }

    /// 1-based line and 0-based byte column of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        (line + 1, offset - self.starts[line])
    }

    /// The text of a 1-based line without its line break ("" past the end).
    pub(crate) fn line_text(&self, line: usize) -> &'a str {
        let Some(&start) = self.starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self.starts.get(line).copied().unwrap_or(self.text.len());
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches(['\n', '\r'])
    }

    /// Number of lines.
    pub(crate) fn line_count(&self) -> usize {
        self.starts.len()
    }

    /// 1-based character column for a 0-based byte column on a line.
    pub(crate) fn char_column(&self, line: usize, byte_col: usize) -> usize {
        let text = self.line_text(line);
        let mut end = byte_col.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].chars().count() + 1
    }

    /// Bandit's `code` excerpt: up to three numbered lines starting one line above the finding,
    /// extended by the node's extra lines.
    pub(crate) fn code_excerpt(&self, line: usize, line_range: (usize, usize)) -> String {
        let span = line_range.1.saturating_sub(line_range.0) + 1;
        let first = line.saturating_sub(1).max(1);
        let last = first + span + 2;
        let mut out = String::new();
        for n in first..last {
            if n > self.line_count() || (n == self.line_count() && self.line_text(n).is_empty()) {
                break;
            }
            out.push_str(&format!("{n} {}\n", self.line_text(n)));
        }
        out
    }
}

/// Tests a `# nosec` comment names; empty means all.
pub(crate) type NosecTests = Vec<&'static str>;

/// A parsed module and the side information collected while lexing it.
pub(crate) struct Parsed {
    pub(crate) suite: ast::Suite,
    pub(crate) nosec: HashMap<usize, NosecTests>,
}

/// Parses `source` as a module, normalising identifiers to NFKC as CPython does.
pub(crate) fn parse(
    filename: &str,
    source: &str,
    index: &LineIndex<'_>,
) -> Result<Parsed, ParseFailure> {
    let mut nosec = HashMap::new();
    let tokens = Tokens {
        inner: lexer::lex(source, Mode::Module),
        source,
        prev_end: 0,
        chains: vec![0],
        chain_total: 0,
        nosec: &mut nosec,
        done: false,
    };
    match ast::Suite::parse_tokens(tokens, filename) {
        Ok(suite) => Ok(Parsed { suite, nosec }),
        Err(err) => {
            let offset = u32::from(err.offset) as usize;
            Err(failure(index, offset, err.error.to_string()))
        }
    }
}

pub(crate) fn failure(index: &LineIndex<'_>, offset: usize, message: String) -> ParseFailure {
    let (line, col) = index.line_col(offset);
    ParseFailure {
        line,
        column: index.char_column(line, col),
        message,
        source_line: index.line_text(line).to_owned(),
    }
}

/// NFKC-normalises an identifier; ASCII is returned as is.
pub(crate) fn nfkc(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_ascii() {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.nfkc().collect())
    }
}

struct Tokens<'s, 'n, I> {
    inner: I,
    source: &'s str,
    prev_end: usize,
    /// Operators since the last separator, one counter per open bracket.
    chains: Vec<usize>,
    /// Sum of `chains`.
    chain_total: usize,
    nosec: &'n mut HashMap<usize, NosecTests>,
    done: bool,
}

impl<I> Tokens<'_, '_, I> {
    fn limit(&mut self, at: TextSize, message: String) -> Option<LexResult> {
        self.done = true;
        Some(Err(LexicalError {
            error: LexicalErrorType::OtherError(message),
            location: at,
        }))
    }

    fn scan_gap(&mut self, start: usize) {
        if start <= self.prev_end {
            return;
        }
        let Some(gap) = self.source.get(self.prev_end..start) else {
            return;
        };
        let mut rest = gap;
        let mut base = self.prev_end;
        while let Some(hash) = rest.find('#') {
            let comment_start = base + hash;
            let after = &rest[hash..];
            let end = after.find(['\n', '\r']).unwrap_or(after.len());
            let comment = &after[..end];
            if let Some(tests) = parse_nosec(comment) {
                let line = 1 + self.source[..comment_start].matches('\n').count();
                self.nosec.insert(line, tests);
            }
            base = comment_start + end;
            rest = &after[end..];
        }
    }
}

impl<I: Iterator<Item = LexResult>> Iterator for Tokens<'_, '_, I> {
    type Item = LexResult;

    fn next(&mut self) -> Option<LexResult> {
        if self.done {
            return None;
        }
        let item = self.inner.next()?;
        let (mut tok, range) = match item {
            Ok(pair) => pair,
            Err(e) => {
                self.done = true;
                return Some(Err(e));
            }
        };
        let start = u32::from(range.start()) as usize;
        self.scan_gap(start);
        self.prev_end = self.prev_end.max(u32::from(range.end()) as usize);
        match &mut tok {
            Tok::Name { name } if !name.is_ascii() => {
                *name = name.nfkc().collect();
            }
            Tok::Lpar | Tok::Lsqb | Tok::Lbrace => {
                self.chains.push(0);
                if self.chains.len() > MAX_BRACKET_DEPTH + 1 {
                    return self.limit(
                        range.start(),
                        format!("too many nested parentheses (more than {MAX_BRACKET_DEPTH})"),
                    );
                }
            }
            Tok::Rpar | Tok::Rsqb | Tok::Rbrace if self.chains.len() > 1 => {
                self.chain_total -= self.chains.pop().unwrap_or(0);
            }
            Tok::Comma | Tok::Colon | Tok::Semi | Tok::Newline | Tok::Equal => {
                if let Some(last) = self.chains.last_mut() {
                    self.chain_total -= *last;
                    *last = 0;
                }
            }
            t if is_chain_operator(t) => {
                if let Some(last) = self.chains.last_mut() {
                    *last += 1;
                }
                self.chain_total += 1;
                if self.chain_total > MAX_OPERATOR_CHAIN {
                    return self.limit(
                        range.start(),
                        format!("expression too complex (more than {MAX_OPERATOR_CHAIN} chained operators)"),
                    );
                }
            }
            _ => {}
        }
        Some(Ok((tok, range)))
    }
}

fn is_chain_operator(tok: &Tok) -> bool {
    matches!(
        tok,
        Tok::Plus
            | Tok::Minus
            | Tok::Star
            | Tok::DoubleStar
            | Tok::Slash
            | Tok::DoubleSlash
            | Tok::Percent
            | Tok::At
            | Tok::LeftShift
            | Tok::RightShift
            | Tok::Amper
            | Tok::Vbar
            | Tok::CircumFlex
            | Tok::Tilde
            | Tok::Less
            | Tok::Greater
            | Tok::LessEqual
            | Tok::GreaterEqual
            | Tok::EqEqual
            | Tok::NotEqual
            | Tok::Dot
            | Tok::And
            | Tok::Or
            | Tok::Not
            | Tok::In
            | Tok::Is
            | Tok::If
            | Tok::Lambda
            | Tok::Await
    )
}

/// Parses a comment the way bandit does (`#\s*nosec:?\s*tests`). `None` when it is not a nosec
/// comment; an empty list when it names no known test (bandit then skips every test).
pub(crate) fn parse_nosec(comment: &str) -> Option<NosecTests> {
    let mut search = comment;
    loop {
        let hash = search.find('#')?;
        let after = search[hash + 1..].trim_start();
        if let Some(rest) = after.strip_prefix("nosec") {
            let rest = rest.strip_prefix(':').unwrap_or(rest).trim_start();
            let tests = rest.split('#').next().unwrap_or("");
            let mut ids: NosecTests = tests
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|t| !t.is_empty())
                .filter_map(catalog::find)
                .map(|r| r.id)
                .collect();
            ids.dedup();
            return Some(ids);
        }
        search = &search[hash + 1..];
    }
}

impl fmt::Display for LineIndex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lines", self.starts.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nosec_comments_follow_bandit_syntax() {
        assert_eq!(parse_nosec("# nosec"), Some(vec![]));
        assert_eq!(
            parse_nosec("#nosec: B101, B602"),
            Some(vec!["B101", "B602"])
        );
        assert_eq!(
            parse_nosec("# noqa # nosec assert_used"),
            Some(vec!["B101"])
        );
        assert_eq!(parse_nosec("# nosec - reviewed by Ann"), Some(vec![]));
        assert_eq!(parse_nosec("# no security here"), None);
    }

    #[test]
    fn syntax_errors_carry_line_column_and_text() {
        let src = "x = 1\ndef f(:\n    pass\n";
        let index = LineIndex::new(src);
        let err = parse("t.py", src, &index).err().expect("a syntax error");
        assert_eq!(err.line, 2);
        assert_eq!(err.source_line, "def f(:");
        assert!(err.column >= 6, "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let src = format!("x = {}1{}\n", "(".repeat(500), ")".repeat(500));
        let index = LineIndex::new(&src);
        let err = parse("t.py", &src, &index).err().expect("limit");
        assert!(err.message.contains("nested parentheses"), "{err:?}");
        let src = format!("x = {}1\n", "1 + ".repeat(MAX_OPERATOR_CHAIN + 10));
        let index = LineIndex::new(&src);
        let err = parse("t.py", &src, &index).err().expect("limit");
        assert!(err.message.contains("too complex"), "{err:?}");
    }

    #[test]
    fn identifiers_are_nfkc_normalised() {
        let src = "ｅｖａｌ(x)\n";
        let index = LineIndex::new(src);
        let parsed = parse("t.py", src, &index).expect("parses");
        let ast::Stmt::Expr(e) = &parsed.suite[0] else {
            panic!("expr")
        };
        let ast::Expr::Call(c) = e.value.as_ref() else {
            panic!("call")
        };
        let ast::Expr::Name(n) = c.func.as_ref() else {
            panic!("name")
        };
        assert_eq!(n.id.as_str(), "eval");
    }

    #[test]
    fn line_index_maps_offsets_and_excerpts() {
        let src = "a\nbé = 1\nc\nd\n";
        let index = LineIndex::new(src);
        assert_eq!(index.line_col(2), (2, 0));
        assert_eq!(index.line_text(2), "bé = 1");
        assert_eq!(index.char_column(2, 4), 4);
        assert_eq!(index.code_excerpt(2, (2, 2)), "1 a\n2 bé = 1\n3 c\n");
    }
}
