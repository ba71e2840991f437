//! Random and mutated Python never makes the scanner panic or run away.

use std::time::{Duration, Instant};

use aetherflow_code_safety::deps::{DependencyPolicy, check_pyproject, check_requirements};
use aetherflow_code_safety::{Policy, ScanReport, scan_source};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "import ",
    "from ",
    " import ",
    "os",
    "sys",
    "def ",
    "class ",
    "lambda ",
    "return ",
    "yield ",
    "if ",
    "else:",
    "elif ",
    "for ",
    " in ",
    "while ",
    "try:",
    "except",
    "finally:",
    "with ",
    " as ",
    "async ",
    "await ",
    "match ",
    "case ",
    "global ",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ":",
    ",",
    ".",
    "=",
    "==",
    "+",
    "-",
    "*",
    "**",
    "/",
    "%",
    "@",
    "<<",
    "|",
    "&",
    "~",
    "not ",
    " and ",
    " or ",
    "'",
    "\"",
    "'''",
    "f'",
    "{x.__class__}",
    "b'",
    "r'",
    "\\",
    "#",
    "# nosec",
    "\n",
    "    ",
    "\t",
    "eval",
    "exec",
    "__import__",
    "getattr",
    "globals()",
    "__subclasses__",
    "subprocess",
    "shell=True",
    "0x1F",
    "1e9",
    "1_000",
    "3j",
    "x",
    "y",
    "_",
    "ｅｖａｌ",
    "\u{202e}",
    "é",
    "𝔡",
    "\r\n",
    "\0",
];

fn python_like() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..200).prop_map(|v| v.concat())
}

fn seeds() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bandit");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("fixtures")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect();
    out.sort();
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete(usize, usize),
    Insert(usize, &'static str),
    Duplicate(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0usize..20).prop_map(|(a, n)| Mutation::Delete(a, n)),
        (any::<usize>(), prop::sample::select(FRAGMENTS)).prop_map(|(a, s)| Mutation::Insert(a, s)),
        (any::<usize>(), 0usize..40).prop_map(|(a, n)| Mutation::Duplicate(a, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn boundary(s: &str, at: usize) -> usize {
    let mut i = if s.is_empty() { 0 } else { at % (s.len() + 1) };
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn apply(mut s: String, m: &Mutation) -> String {
    match *m {
        Mutation::Delete(a, n) => {
            let start = boundary(&s, a);
            let end = boundary(&s, start + n);
            s.replace_range(start..end.max(start), "");
        }
        Mutation::Insert(a, frag) => {
            let at = boundary(&s, a);
            s.insert_str(at, frag);
        }
        Mutation::Duplicate(a, n) => {
            let start = boundary(&s, a);
            let end = boundary(&s, start + n).max(start);
            let piece = s[start..end].to_owned();
            s.insert_str(end, &piece);
        }
        Mutation::Truncate(a) => {
            let at = boundary(&s, a);
            s.truncate(at);
        }
    }
    s
}

fn check(source: &str) -> ScanReport {
    let started = Instant::now();
    let report = scan_source("fuzz.py", source, &Policy::default());
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "scan took {took:?} for {} bytes",
        source.len()
    );
    if let Some(err) = &report.parse_error {
        assert!(
            !err.message.contains("analyser failed"),
            "internal failure on {source:?}"
        );
        assert!(!report.verdict().is_allow());
    }
    report
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn random_python_like_text_never_panics(src in python_like()) {
        check(&src);
    }

    #[test]
    fn arbitrary_unicode_never_panics(src in "\\PC{0,300}") {
        check(&src);
    }

    #[test]
    fn mutated_fixtures_never_panic(seed in any::<prop::sample::Index>(), muts in prop::collection::vec(mutation(), 1..8)) {
        let seeds = seeds();
        let mut src = seed.get(&seeds).clone();
        for m in &muts {
            src = apply(src, m);
        }
        check(&src);
    }

    #[test]
    fn dependency_files_never_panic(text in "(\\PC|\n|==|\\[|\\]|;|@|-e |--hash=|#){0,200}") {
        let _ = check_requirements(&text, &DependencyPolicy::default());
        let _ = check_pyproject(&text, &DependencyPolicy::default());
    }
}

#[test]
fn pathological_inputs_finish_quickly() {
    for src in [
        "(".repeat(100_000),
        "[".repeat(199) + &"]".repeat(199),
        "x = ".to_owned() + &"-".repeat(50_000) + "1",
        "a".repeat(1_000_000),
        "'".repeat(100_001),
        "if x:\n".repeat(120) + "    pass\n",
        "x = 1\n".repeat(200_000),
        (0..400)
            .map(|i| format!("{}if x:\n", " ".repeat(i)))
            .collect::<String>()
            + &" ".repeat(400)
            + "eval(y)\n",
    ] {
        check(&src);
    }
}
