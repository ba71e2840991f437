//! Scans every `.py` file of a CPython standard library (site-packages excluded) and reports
//! throughput: bytes/s (MB/s) and elements/s (files/s). Set `AETHERFLOW_BENCH_PYLIB` to choose
//! the library folder; otherwise the first of a few usual locations that exists is used.

#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use aetherflow_code_safety::{Policy, scan_source, scan_sources};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CANDIDATES: &[&str] = &[
    "/root/.pyenv/versions/3.11.7/lib/python3.11",
    "/usr/lib/python3.11",
    "/usr/lib/python3.12",
    "/usr/lib/python3.13",
    "/usr/lib/python3",
];

fn library() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("AETHERFLOW_BENCH_PYLIB") {
        return Some(PathBuf::from(dir));
    }
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.is_dir())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() {
            if name != "site-packages" && name != "dist-packages" && name != "__pycache__" {
                collect(&path, out);
            }
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "py") {
            out.push(path);
        }
    }
}

fn load() -> Vec<(String, String)> {
    let Some(dir) = library() else {
        eprintln!("no CPython standard library found; set AETHERFLOW_BENCH_PYLIB");
        return Vec::new();
    };
    let mut paths = Vec::new();
    collect(&dir, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let bytes = std::fs::read(&p).ok()?;
            // A few test files are Latin-1; scan them as the replacement-decoded text.
            Some((
                p.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        })
        .collect()
}

fn scan_all(files: &[(String, String)], policy: &Policy) -> usize {
    files
        .iter()
        .map(|(name, src)| scan_source(name, src, policy).findings.len())
        .sum()
}

fn scan_parallel(files: &[(String, String)], policy: &Policy) -> usize {
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    scan_sources(&refs, policy, 0)
        .iter()
        .map(|r| r.findings.len())
        .sum()
}

/// CPU seconds this thread has used (user + system), from `/proc/thread-self/stat` on Linux
/// (clock ticks assumed to be 100 Hz). Wall time is unreliable on a shared machine; CPU time
/// compares fairly with `time bandit` (user + sys).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn bench(c: &mut Criterion) {
    let files = load();
    if files.is_empty() {
        return;
    }
    let policy = Policy::default();
    let bytes: usize = files.iter().map(|(_, s)| s.len()).sum();
    let started = std::time::Instant::now();
    let findings = scan_all(&files, &policy);
    let parse_errors = files
        .iter()
        .filter(|(n, s)| scan_source(n, s, &policy).parse_error.is_some())
        .count();
    eprintln!(
        "stdlib corpus: {} files, {:.1} MB, {findings} findings, {parse_errors} files not parsed; one pass {:?}",
        files.len(),
        bytes as f64 / 1e6,
        started.elapsed()
    );

    if let Some(before) = thread_cpu_seconds() {
        let passes = 3;
        for _ in 0..passes {
            scan_all(&files, &policy);
        }
        if let Some(after) = thread_cpu_seconds() {
            let per_pass = (after - before) / f64::from(passes);
            eprintln!(
                "CPU time per single-threaded pass: {per_pass:.2} s ({:.0} files/s, {:.1} MB/s of CPU)",
                files.len() as f64 / per_pass,
                bytes as f64 / 1e6 / per_pass
            );
        }
    }

    let mut group = c.benchmark_group("stdlib");
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(3));
    group.measurement_time(Duration::from_secs(40));
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("scan_bytes", |b| b.iter(|| scan_all(&files, &policy)));
    group.throughput(Throughput::Elements(files.len() as u64));
    group.bench_function("scan_files", |b| b.iter(|| scan_all(&files, &policy)));
    group.bench_function("scan_files_all_cores", |b| {
        b.iter(|| scan_parallel(&files, &policy))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
