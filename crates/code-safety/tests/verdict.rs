//! Import policy, verdicts, suppressions and parse failures as a caller sees them.

use aetherflow_code_safety::{
    ImportOverrides, NosecPolicy, Policy, PolicyOverrides, Severity, scan_source, scan_sources,
};

fn rule_ids(src: &str, policy: &Policy) -> Vec<&'static str> {
    scan_source("t.py", src, policy)
        .findings
        .iter()
        .map(|f| f.rule.id)
        .collect()
}

#[test]
fn safe_code_is_allowed_by_default() {
    let src = "import json\nfrom collections import OrderedDict\nfrom collections.abc import Mapping\nimport os.path as osp\n\n\ndef f(x):\n    return json.dumps(OrderedDict(a=x))\n";
    let report = scan_source("ok.py", src, &Policy::default());
    assert!(report.verdict().is_allow(), "{:?}", report.verdict());
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(
        report.imports.iter().cloned().collect::<Vec<_>>(),
        ["collections", "collections.abc", "json", "os.path"]
    );
}

#[test]
fn every_import_form_is_checked_against_the_allow_list() {
    let p = Policy::default();
    for src in [
        "import socket\n",
        "import os\n",
        "from os import system\n",
        "from . import sibling\n",
        "from .pkg import thing\n",
        "__import__('socket')\n",
        "import importlib\nimportlib.import_module('socket')\n",
        "import os.path\n",
    ] {
        let report = scan_source("t.py", src, &p);
        assert!(rule_ids(src, &p).contains(&"AF001"), "{src}");
        assert!(!report.verdict().is_allow(), "{src}");
    }
    assert!(!rule_ids("from os import path\n", &p).contains(&"AF001"));
    assert!(!rule_ids("import os.path as p\n", &p).contains(&"AF001"));
}

#[test]
fn computed_dynamic_imports_and_sys_modules_are_blocked() {
    let mut p = Policy::default();
    p.imports
        .allow
        .extend(["importlib".to_owned(), "sys".to_owned()]);
    for src in [
        "__import__(name)\n",
        "import importlib\nimportlib.import_module('js' + 'on')\n",
        "import importlib\nimportlib.util.spec_from_file_location('m', path)\n",
        "import sys\nm = sys.modules['os']\n",
        "from sys import modules\n",
        "import sys as s\ns.meta_path.insert(0, finder)\n",
    ] {
        assert!(rule_ids(src, &p).contains(&"AF002"), "{src}");
        assert!(!scan_source("t.py", src, &p).verdict().is_allow(), "{src}");
    }
}

#[test]
fn overrides_layer_per_plan_and_step() {
    let base = Policy::default();
    let plan = base
        .layered(&PolicyOverrides {
            imports: ImportOverrides {
                allow: vec!["requests".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid overrides");
    let src = "import requests\nrequests.get(url, timeout=5)\n";
    assert!(!scan_source("t.py", src, &base).verdict().is_allow());
    assert!(scan_source("t.py", src, &plan).verdict().is_allow());
    let step = plan
        .layered(&PolicyOverrides {
            imports: ImportOverrides {
                deny: vec!["requests".into()],
                ..Default::default()
            },
            ..Default::default()
        })
        .expect("valid overrides");
    let report = scan_source("t.py", src, &step);
    assert!(
        report.findings[0].message.contains("denied"),
        "{:?}",
        report.findings
    );
}

#[test]
fn fullwidth_identifiers_are_normalised_before_matching() {
    let p = Policy::default();
    assert!(rule_ids("ｅｖａｌ(payload)\n", &p).contains(&"B307"));
    assert!(rule_ids("ｅｘｅｃ(payload)\n", &p).contains(&"AF104"));
    assert!(rule_ids("x = ().__ｃｌａｓｓ__.__ｍｒｏ__\n", &p).contains(&"AF101"));
    assert!(rule_ids("s = f'{x.__ｉｎｉｔ__}'\n", &p).contains(&"AF111"));
    assert!(rule_ids("s = f'{ｅｖａｌ(x)}'\n", &p).contains(&"AF104"));
}

#[test]
fn verdict_blocks_on_high_severity_but_not_on_low_by_default() {
    let mut p = Policy::default();
    p.imports.allow.push("subprocess".into());
    let low = scan_source(
        "t.py",
        "import subprocess\nsubprocess.run(['/bin/ls'])\n",
        &p,
    );
    assert!(!low.findings.is_empty());
    assert!(low.verdict().is_allow(), "{:?}", low.verdict());
    let high = scan_source(
        "t.py",
        "import subprocess\nsubprocess.run(cmd, shell=True)\n",
        &p,
    );
    let reasons = high.verdict().reasons();
    assert_eq!(reasons.len(), 1);
    assert_eq!(reasons[0].rule_id, "B602");
    assert_eq!(reasons[0].line, 2);
    let feedback = high.verdict().feedback("t.py");
    assert!(feedback.contains("line 2, column 1 [B602]"), "{feedback}");
    assert!(feedback.contains("drop shell=True"), "{feedback}");

    p.block.min_severity = Some(Severity::Low);
    assert!(
        !scan_source(
            "t.py",
            "import subprocess\nsubprocess.run(['/bin/ls'])\n",
            &p
        )
        .verdict()
        .is_allow()
    );
}

#[test]
fn nosec_is_honoured_only_when_the_policy_allows_it() {
    let src = "assert x  # nosec B101\neval(y)  # nosec\n";
    let mut p = Policy::default();
    assert_eq!(rule_ids(src, &p), ["B101", "B307", "AF104"]);
    p.nosec = NosecPolicy::BanditRules;
    let report = scan_source("t.py", src, &p);
    assert_eq!(
        report
            .findings
            .iter()
            .map(|f| f.rule.id)
            .collect::<Vec<_>>(),
        ["AF104"]
    );
    assert_eq!((report.metrics.nosec, report.metrics.skipped_tests), (1, 1));
    assert!(!report.verdict().is_allow());
    p.nosec = NosecPolicy::All;
    assert!(rule_ids(src, &p).is_empty());
    // A nosec naming another test does not suppress this one.
    assert_eq!(rule_ids("assert x  # nosec B102\n", &p), ["B101"]);
}

#[test]
fn syntax_errors_are_a_blocking_verdict_with_position() {
    let report = scan_source(
        "bad.py",
        "def ok():\n    return 1\n\nprint 'py2'\n",
        &Policy::default(),
    );
    let err = report.parse_error.as_ref().expect("parse error");
    assert_eq!(err.line, 4);
    assert_eq!(err.source_line, "print 'py2'");
    let reasons = report.verdict().reasons();
    assert_eq!(reasons[0].rule_id, "syntax");
    assert!(reasons[0].to_string().contains("line 4"), "{}", reasons[0]);
}

#[test]
fn findings_carry_position_cwe_and_source_line() {
    let report = scan_source(
        "t.py",
        "x = 1\nif ok:\n    é = eval(data)\n",
        &Policy::default(),
    );
    let f = report
        .findings
        .iter()
        .find(|f| f.rule.id == "B307")
        .expect("B307");
    assert_eq!((f.line, f.column, f.col_offset), (3, 9, 9));
    assert_eq!(f.cwe().0, 78);
    assert_eq!(f.source_line, "    é = eval(data)");
    assert_eq!(f.code, "2 if ok:\n3     é = eval(data)\n");
}

#[test]
fn disabled_rules_do_not_run() {
    let p = Policy {
        disabled_rules: vec!["B101".into()],
        ..Default::default()
    };
    assert!(rule_ids("assert x\n", &p).is_empty());
}

#[test]
fn deeply_nested_code_is_still_analysed() {
    let chain = format!("x = {}eval(y)\n", "1 + ".repeat(900));
    let report = scan_source("deep.py", &chain, &Policy::default());
    assert!(report.parse_error.is_none(), "{:?}", report.parse_error);
    assert!(report.findings.iter().any(|f| f.rule.id == "B307"));
    let parens = format!("x = {}eval(y){}\n", "(".repeat(190), ")".repeat(190));
    let report = scan_source("deep.py", &parens, &Policy::default());
    assert!(
        report.findings.iter().any(|f| f.rule.id == "AF104"),
        "{:?}",
        report.parse_error
    );
    let too_deep = format!("x = {}1\n", "1 + ".repeat(1500));
    let report = scan_source("deep.py", &too_deep, &Policy::default());
    assert!(report.parse_error.is_some());
    assert!(!report.verdict().is_allow());
}

#[test]
fn many_files_scan_in_parallel_in_input_order() {
    let sources: Vec<(String, String)> = (0..25)
        .map(|i| {
            (
                format!("f{i}.py"),
                if i % 2 == 0 {
                    "x = 1\n".to_owned()
                } else {
                    format!("eval(v{i})\n")
                },
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    for threads in [0, 1, 4] {
        let reports = scan_sources(&refs, &Policy::default(), threads);
        assert_eq!(reports.len(), 25);
        for (i, r) in reports.iter().enumerate() {
            assert_eq!(r.filename, format!("f{i}.py"));
            assert_eq!(r.verdict().is_allow(), i % 2 == 0);
        }
    }
    assert!(scan_sources(&[], &Policy::default(), 0).is_empty());
}
