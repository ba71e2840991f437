//! `aetherflow scan`: the code-safety gate as a standalone scanner.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aetherflow_code_safety::{Policy, Severity, render, scan_sources};
use anyhow::Context;

use crate::{ScanArgs, ScanFormat, SeverityArg};

/// Files a scan reads at most.
const MAX_FILES: usize = 100_000;
/// Largest file scanned.
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

pub fn scan(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let mut policy = match &args.policy {
        Some(path) => load_policy(path)?,
        None => Policy::default(),
    };
    if let Some(fail_on) = args.fail_on {
        policy.block.min_severity = Some(match fail_on {
            SeverityArg::Low => Severity::Low,
            SeverityArg::Medium => Severity::Medium,
            SeverityArg::High => Severity::High,
        });
    }
    policy.validate()?;

    let files = collect(&args.paths)?;
    let mut sources: Vec<(String, String)> = Vec::with_capacity(files.len());
    let mut unreadable = 0;
    for path in &files {
        let shown = path.display().to_string();
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if size > MAX_FILE_BYTES {
            eprintln!(
                "{shown}: larger than {MAX_FILE_BYTES} bytes, not scanned (counted as blocked)"
            );
            unreadable += 1;
            continue;
        }
        match std::fs::read(path).map(String::from_utf8) {
            Ok(Ok(text)) => sources.push((shown, text)),
            Ok(Err(_)) => {
                eprintln!("{shown}: not UTF-8 text, not scanned (counted as blocked)");
                unreadable += 1;
            }
            Err(e) => {
                eprintln!("{shown}: {e} (counted as blocked)");
                unreadable += 1;
            }
        }
    }
    let borrowed: Vec<(&str, &str)> = sources
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let reports = scan_sources(&borrowed, &policy, 0);
    match args.format {
        ScanFormat::Text => print!("{}", render::text(&reports)),
        ScanFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&render::bandit_json(&reports, None))?
        ),
        ScanFormat::Sarif => println!(
            "{}",
            serde_json::to_string_pretty(&render::sarif(&reports))?
        ),
    }
    let blocked = reports.iter().filter(|r| !r.verdict().is_allow()).count() + unreadable;
    if !matches!(args.format, ScanFormat::Text) {
        eprintln!("{} file(s) scanned, {blocked} blocked", files.len());
    }
    Ok(if blocked == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn load_policy(path: &Path) -> anyhow::Result<Policy> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("--policy {}", path.display()))?;
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let policy = if yaml {
        serde_norway::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    };
    Ok(policy)
}

/// The `.py` files under `paths`, sorted; symlinks are not followed into other trees.
fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{}: no such file or folder", path.display()))?;
        if meta.is_file() {
            out.push(path.clone());
            continue;
        }
        for entry in walkdir::WalkDir::new(path)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.with_context(|| format!("reading {}", path.display()))?;
            if entry.file_type().is_file()
                && entry.path().extension().and_then(|e| e.to_str()) == Some("py")
            {
                out.push(entry.into_path());
                if out.len() > MAX_FILES {
                    anyhow::bail!(
                        "more than {MAX_FILES} Python files under the given paths; scan a narrower folder"
                    );
                }
            }
        }
    }
    Ok(out)
}
