//! Maps a model's answer to the step's files: one fenced block per target file, each naming its
//! path, matched one to one. The original wrote the first block into every file of a step (its
//! own test files were overwritten with the module); here a missing, extra, duplicate or
//! unlabelled block is an error whose message goes back to the model.
//!
//! A block names its file in its info string (```` ```python path=src/app.py ````, `file=`,
//! `title=`, or a bare `src/app.py` token) or on its first line (`# file: src/app.py`,
//! `// path: src/app.py`, `<!-- file: src/app.py -->`); that marker line is not part of the
//! file. A step with a single target also accepts a single unlabelled block.

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

/// A file taken from an answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExtractedFile {
    /// The target path, exactly as the plan lists it.
    pub path: String,
    /// The file's new content (ending with a newline).
    pub content: String,
}

/// Everything wrong with how an answer's blocks map to the step's files.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.feedback())]
pub struct ExtractProblems {
    /// Targets no block names.
    pub missing: Vec<String>,
    /// Paths blocks name that are not targets.
    pub extra: Vec<String>,
    /// Targets named by more than one block.
    pub duplicate: Vec<String>,
    /// Blocks (1-based) that name no file, when the step has several.
    pub unlabelled: Vec<usize>,
    /// The targets, for the message.
    pub targets: Vec<String>,
}

impl ExtractProblems {
    /// The message for the model (and the report): every problem, then what to send.
    pub fn feedback(&self) -> String {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            parts.push(format!("no code block for {}", self.missing.join(", ")));
        }
        if !self.extra.is_empty() {
            parts.push(format!(
                "code blocks for files this step does not change: {}",
                self.extra.join(", ")
            ));
        }
        if !self.duplicate.is_empty() {
            parts.push(format!(
                "more than one code block for {}",
                self.duplicate.join(", ")
            ));
        }
        if !self.unlabelled.is_empty() {
            let n: Vec<String> = self.unlabelled.iter().map(ToString::to_string).collect();
            parts.push(format!("code block(s) {} name no file", n.join(", ")));
        }
        format!(
            "{}. Answer with exactly one fenced code block per file, its path in the info string, \
             e.g. ```python path={}, for each of: {}",
            parts.join("; "),
            self.targets.first().map_or("src/app.py", String::as_str),
            self.targets.join(", ")
        )
    }
}

struct Block {
    info: String,
    text: String,
}

fn fenced_blocks(answer: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for event in Parser::new(answer) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                current = Some(Block {
                    info: info.into_string(),
                    text: String::new(),
                });
            }
            Event::Text(text) => {
                if let Some(block) = current.as_mut() {
                    block.text.push_str(&text);
                }
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some(block) = current.take() {
                    blocks.push(block);
                }
            }
            _ => {}
        }
    }
    blocks
}

/// The contents of every fenced block of an answer, in order.
pub fn fenced_block_texts(answer: &str) -> Vec<String> {
    fenced_blocks(answer).into_iter().map(|b| b.text).collect()
}

fn normalise(path: &str) -> String {
    let path = path
        .trim()
        .trim_matches(|c| c == '`' || c == '"' || c == '\'');
    let path = path.replace('\\', "/");
    path.strip_prefix("./").unwrap_or(&path).to_owned()
}

/// A token that reads as a file path: it has a folder or an extension (`app.py`,
/// `src/app.py`), which language names (`python`, `c++`) do not.
fn looks_like_path(token: &str) -> bool {
    let token = token.trim_matches(|c| c == '`' || c == '"' || c == '\'');
    if token.is_empty() || token.contains('=') {
        return false;
    }
    let name = token.rsplit('/').next().unwrap_or(token);
    let has_extension = name.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty()
            && (1..=8).contains(&ext.len())
            && ext.chars().all(|c| c.is_ascii_alphanumeric())
    });
    has_extension || (token.contains('/') && !name.is_empty())
}

/// The path a block's info string names, if any.
fn path_from_info(info: &str) -> Option<String> {
    let tokens: Vec<&str> = info.split_whitespace().collect();
    // ```python:src/app.py
    if let Some((_, path)) = tokens.first()?.split_once(':')
        && looks_like_path(path)
    {
        return Some(normalise(path));
    }
    for token in &tokens {
        for key in ["path=", "file=", "filename=", "title="] {
            if let Some(value) = token.strip_prefix(key) {
                return Some(normalise(value));
            }
        }
    }
    // ```src/app.py or ```python src/app.py
    tokens
        .iter()
        .copied()
        .find(|t| looks_like_path(t))
        .map(normalise)
}

/// The path a block's first line names (`# file: x`), and the text without that line.
fn path_from_first_line(text: &str) -> Option<(String, String)> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let line = first.trim();
    let body = line
        .strip_prefix("<!--")
        .and_then(|l| l.strip_suffix("-->"))
        .or_else(|| line.strip_prefix("#"))
        .or_else(|| line.strip_prefix("//"))
        .or_else(|| line.strip_prefix("--"))?
        .trim();
    let lower = body.to_ascii_lowercase();
    for key in ["file:", "path:", "filename:"] {
        if lower.starts_with(key) {
            let path = normalise(&body[key.len()..]);
            if !path.is_empty() {
                return Some((path, rest.to_owned()));
            }
        }
    }
    None
}

fn with_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

/// Maps the answer's fenced blocks to `targets` one to one.
pub fn extract_files(
    answer: &str,
    targets: &[String],
) -> Result<Vec<ExtractedFile>, ExtractProblems> {
    let blocks = fenced_blocks(answer);
    let mut labelled: Vec<(String, String)> = Vec::new();
    let mut unlabelled: Vec<(usize, String)> = Vec::new();
    for (i, block) in blocks.into_iter().enumerate() {
        if let Some(path) = path_from_info(&block.info) {
            // A marker line repeating the path is dropped too.
            let text = match path_from_first_line(&block.text) {
                Some((again, rest)) if again == path => rest,
                _ => block.text,
            };
            labelled.push((path, text));
        } else if let Some((path, rest)) = path_from_first_line(&block.text) {
            labelled.push((path, rest));
        } else {
            unlabelled.push((i + 1, block.text));
        }
    }
    let mut problems = ExtractProblems {
        missing: Vec::new(),
        extra: Vec::new(),
        duplicate: Vec::new(),
        unlabelled: Vec::new(),
        targets: targets.to_vec(),
    };
    // The single-file convenience: one target, no labelled block, exactly one block.
    if targets.len() == 1 && labelled.is_empty() && unlabelled.len() == 1 {
        let (_, text) = unlabelled.remove(0);
        return Ok(vec![ExtractedFile {
            path: targets[0].clone(),
            content: with_newline(text),
        }]);
    }
    let wanted: Vec<String> = targets.iter().map(|t| normalise(t)).collect();
    let mut found: Vec<Option<String>> = vec![None; targets.len()];
    for (path, text) in labelled {
        match wanted.iter().position(|w| *w == path) {
            Some(i) if found[i].is_some() => {
                if !problems.duplicate.contains(&targets[i]) {
                    problems.duplicate.push(targets[i].clone());
                }
            }
            Some(i) => found[i] = Some(text),
            None => problems.extra.push(path),
        }
    }
    if !unlabelled.is_empty() && targets.len() > 1 {
        problems.unlabelled = unlabelled.iter().map(|(n, _)| *n).collect();
    }
    for (i, text) in found.iter().enumerate() {
        if text.is_none() {
            problems.missing.push(targets[i].clone());
        }
    }
    if problems.missing.is_empty()
        && problems.extra.is_empty()
        && problems.duplicate.is_empty()
        && problems.unlabelled.is_empty()
    {
        Ok(targets
            .iter()
            .zip(found)
            .map(|(path, text)| ExtractedFile {
                path: path.clone(),
                content: with_newline(text.unwrap_or_default()),
            })
            .collect())
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(paths: &[&str]) -> Vec<String> {
        paths.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn each_block_goes_to_the_file_it_names() {
        let answer = "Here you go.\n\n```python path=src/app.py\ndef app():\n    return 1\n```\n\n\
                      And the tests:\n\n```python\n# file: tests/test_app.py\nimport unittest\n```\n";
        let files = extract_files(answer, &targets(&["src/app.py", "tests/test_app.py"])).unwrap();
        assert_eq!(files[0].path, "src/app.py");
        assert_eq!(files[0].content, "def app():\n    return 1\n");
        assert_eq!(files[1].path, "tests/test_app.py");
        // The marker line is not part of the file.
        assert_eq!(files[1].content, "import unittest\n");
    }

    #[test]
    fn the_original_bug_one_block_for_two_files_is_refused() {
        let answer = "```python\nprint('module')\n```\n";
        let err = extract_files(answer, &targets(&["app.py", "test_app.py"])).unwrap_err();
        assert_eq!(err.unlabelled, vec![1]);
        assert_eq!(err.missing, targets(&["app.py", "test_app.py"]));
        let feedback = err.feedback();
        assert!(
            feedback.contains("no code block for app.py, test_app.py"),
            "{feedback}"
        );
        assert!(feedback.contains("path="), "{feedback}");
    }

    #[test]
    fn missing_extra_and_duplicate_blocks_are_all_reported() {
        let answer = "```python path=a.py\nA\n```\n```python path=a.py\nA2\n```\n\
                      ```python path=evil.py\nX\n```\n";
        let err = extract_files(answer, &targets(&["a.py", "b.py"])).unwrap_err();
        assert_eq!(err.missing, targets(&["b.py"]));
        assert_eq!(err.extra, targets(&["evil.py"]));
        assert_eq!(err.duplicate, targets(&["a.py"]));
    }

    #[test]
    fn info_string_forms_are_understood() {
        for (info, want) in [
            ("python path=src/x.py", Some("src/x.py")),
            ("py file=./src/x.py", Some("src/x.py")),
            ("python title=\"src/x.py\"", Some("src/x.py")),
            ("python:src/x.py", Some("src/x.py")),
            ("src/x.py", Some("src/x.py")),
            ("python src/x.py", Some("src/x.py")),
            ("python", None),
            ("c++", None),
            ("", None),
        ] {
            assert_eq!(path_from_info(info).as_deref(), want, "{info:?}");
        }
    }

    #[test]
    fn first_line_markers_are_understood() {
        for text in [
            "# file: a/b.py\nx\n",
            "// path: a/b.py\nx\n",
            "<!-- file: a/b.py -->\nx\n",
            "# File: ./a/b.py\nx\n",
        ] {
            let (path, rest) = path_from_first_line(text).unwrap();
            assert_eq!(path, "a/b.py", "{text:?}");
            assert_eq!(rest, "x\n");
        }
        assert!(path_from_first_line("# a comment\nx").is_none());
    }

    #[test]
    fn a_single_target_accepts_a_single_unlabelled_block() {
        let files = extract_files("```python\nx = 1\n```", &targets(&["x.py"])).unwrap();
        assert_eq!(files[0].content, "x = 1\n");
        // But not two unlabelled blocks: which one is the file?
        let err = extract_files("```\na\n```\n```\nb\n```", &targets(&["x.py"])).unwrap_err();
        assert_eq!(err.missing, targets(&["x.py"]));
    }

    #[test]
    fn no_block_at_all_is_reported() {
        let err = extract_files("I cannot do that.", &targets(&["x.py"])).unwrap_err();
        assert_eq!(err.missing, targets(&["x.py"]));
    }

    #[test]
    fn nested_fences_inside_markdown_files_survive() {
        let answer = "````markdown path=README.md\n# Title\n\n```sh\nmake\n```\n````\n";
        let files = extract_files(answer, &targets(&["README.md"])).unwrap();
        assert_eq!(files[0].content, "# Title\n\n```sh\nmake\n```\n");
    }
}
