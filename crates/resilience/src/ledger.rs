//! The cost ledger: an append-only JSON Lines file with one record per provider call. Each
//! batch is one `write` of whole lines to a file opened for appending, then flushed to disk, so
//! a crash can at worst leave the last line torn; readers skip such a line, and the next
//! writer terminates it before appending.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};

use aetherflow_domain::{Money, Usage};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One provider call, as billed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostRecord {
    /// When the call started.
    pub at: DateTime<Utc>,
    /// The run it belongs to.
    pub run_id: String,
    /// The plan's task.
    pub task_id: String,
    /// The step.
    pub step_id: String,
    /// The provider.
    pub provider: String,
    /// The model.
    pub model: String,
    /// Tokens.
    pub usage: Usage,
    /// Cost in micro-dollars.
    pub cost: Money,
    /// `ok`, or the error kind.
    pub outcome: String,
}

/// How long the background writer gathers records before writing them.
pub const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

/// The ledger could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("cost ledger {path}: {source}")]
pub struct LedgerError {
    /// The file.
    pub path: String,
    /// Why.
    pub source: std::io::Error,
}

/// An append-only ledger file, shared by the runs of one process (and safe to append to from
/// several processes: each batch is a single appending write).
///
/// Appends are group-committed: callers that arrive while a batch is being flushed queue their
/// lines, and the next flush writes and syncs all of them at once. Each `append` still returns
/// only when its records are on disk, but concurrent callers share one `fsync` instead of
/// waiting for one each.
#[derive(Debug)]
pub struct CostLedger {
    path: PathBuf,
    file: Mutex<File>,
    group: Mutex<Group>,
    flushed: Condvar,
    /// The background writer's queue, started on the first [`CostLedger::append_later`].
    later: OnceLock<std::sync::mpsc::Sender<Vec<CostRecord>>>,
}

/// Lines waiting for the next flush, and how far flushing has got.
#[derive(Debug, Default)]
struct Group {
    pending: Vec<u8>,
    /// Sequence number of the last batch queued.
    queued: u64,
    /// Every batch up to this one has been flushed (or failed).
    flushed: u64,
    /// A flush is under way.
    flushing: bool,
    /// Recent failed flushes: (first, last) batch sequence numbers and the error.
    failures: Vec<(u64, u64, String)>,
}

impl CostLedger {
    /// Opens (or creates) the ledger at `path`, terminating a torn last line if a crash left one.
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let err = |source| LedgerError {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1)).map_err(err)?;
            file.read_exact(&mut last).map_err(err)?;
            if last[0] != b'\n' {
                file.write_all(b"\n").map_err(err)?;
                file.sync_data().map_err(err)?;
            }
        }
        Ok(CostLedger {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            group: Mutex::new(Group::default()),
            flushed: Condvar::new(),
            later: OnceLock::new(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues records for a background thread that appends whatever has queued in one write
    /// and one sync; the caller never waits for the disk. Records still queued when the process
    /// dies are lost (up to [`BATCH_DELAY`]'s worth); use [`CostLedger::append`] where that matters.
    pub fn append_later(self: &Arc<Self>, records: Vec<CostRecord>) {
        if records.is_empty() {
            return;
        }
        let sender = self.later.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Vec<CostRecord>>();
            let ledger: Weak<CostLedger> = Arc::downgrade(self);
            let spawned = std::thread::Builder::new()
                .name("aetherflow-ledger".into())
                .spawn(move || {
                    // Ends when the ledger (which holds the sender) is dropped.
                    while let Ok(first) = rx.recv() {
                        // Gather what arrives over a short while: one write and one sync for
                        // a busy moment's calls, and few wake-ups under load.
                        std::thread::sleep(BATCH_DELAY);
                        let mut batch = first;
                        while let Ok(more) = rx.try_recv() {
                            batch.extend(more);
                        }
                        let Some(ledger) = ledger.upgrade() else {
                            break;
                        };
                        if let Err(e) = ledger.append(&batch) {
                            tracing::error!(error = %e, "cost ledger not written");
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "no ledger thread: records are written by the caller");
            }
            tx
        });
        if let Err(unsent) = sender.send(records) {
            // No writer thread: write here rather than lose the records.
            if let Err(e) = self.append(&unsent.0) {
                tracing::error!(error = %e, "cost ledger not written");
            }
        }
    }

    fn lock_group(&self) -> std::sync::MutexGuard<'_, Group> {
        self.group
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends records as whole lines and returns once they are on disk (flushed together with
    /// whatever other callers queued meanwhile).
    pub fn append(&self, records: &[CostRecord]) -> Result<(), LedgerError> {
        if records.is_empty() {
            return Ok(());
        }
        let err = |source| LedgerError {
            path: self.path.display().to_string(),
            source,
        };
        let mut lines = Vec::with_capacity(256 * records.len());
        for r in records {
            serde_json::to_writer(&mut lines, r).map_err(|e| err(std::io::Error::other(e)))?;
            lines.push(b'\n');
        }
        let mut group = self.lock_group();
        group.pending.extend_from_slice(&lines);
        group.queued += 1;
        let mine = group.queued;
        loop {
            if group.flushed >= mine {
                return match group
                    .failures
                    .iter()
                    .find(|(a, b, _)| (*a..=*b).contains(&mine))
                {
                    Some((_, _, e)) => Err(err(std::io::Error::other(e.clone()))),
                    None => Ok(()),
                };
            }
            if group.flushing {
                group = self
                    .flushed
                    .wait(group)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            // This caller flushes everything queued so far, its own lines included.
            group.flushing = true;
            let batch = std::mem::take(&mut group.pending);
            let (first, last) = (group.flushed + 1, group.queued);
            drop(group);
            let result = {
                let mut file = self
                    .file
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                file.write_all(&batch).and_then(|()| file.sync_data())
            };
            group = self.lock_group();
            group.flushing = false;
            group.flushed = last;
            if let Err(e) = result {
                group.failures.push((first, last, e.to_string()));
                if group.failures.len() > 64 {
                    group.failures.remove(0);
                }
            }
            self.flushed.notify_all();
        }
    }
}

/// Every readable record of a ledger, and how many lines could not be read (a torn last line
/// after a crash, or damage).
pub fn read_ledger(path: &Path) -> Result<(Vec<CostRecord>, usize), LedgerError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => {
            return Err(LedgerError {
                path: path.display().to_string(),
                source,
            });
        }
    };
    let mut records = Vec::new();
    let mut unreadable = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(r) => records.push(r),
            Err(_) => unreadable += 1,
        }
    }
    Ok((records, unreadable))
}

/// How to group costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    /// By provider.
    Provider,
    /// By provider and model.
    Model,
    /// By UTC day.
    Day,
    /// By plan (task id).
    Plan,
}

/// Totals for one group.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CostTotal {
    /// Calls.
    pub calls: usize,
    /// Failed calls.
    pub failed: usize,
    /// Tokens.
    pub usage: Usage,
    /// Cost.
    pub cost: Money,
}

/// Sums records since `since` (inclusive) by `group`.
pub fn summarise(
    records: &[CostRecord],
    group: GroupBy,
    since: Option<DateTime<Utc>>,
) -> BTreeMap<String, CostTotal> {
    let mut out: BTreeMap<String, CostTotal> = BTreeMap::new();
    for r in records.iter().filter(|r| since.is_none_or(|s| r.at >= s)) {
        let key = match group {
            GroupBy::Provider => r.provider.clone(),
            GroupBy::Model => format!("{}/{}", r.provider, r.model),
            GroupBy::Day => r.at.format("%Y-%m-%d").to_string(),
            GroupBy::Plan => r.task_id.clone(),
        };
        let t = out.entry(key).or_default();
        t.calls += 1;
        if r.outcome != "ok" && r.outcome != "cached" {
            t.failed += 1;
        }
        t.usage += r.usage;
        t.cost += r.cost;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(provider: &str, cost: u64, at: &str) -> CostRecord {
        CostRecord {
            at: at.parse().expect("timestamp"),
            run_id: "r".into(),
            task_id: "t".into(),
            step_id: "s".into(),
            provider: provider.into(),
            model: "m".into(),
            usage: Usage {
                input_tokens: 10,
                output_tokens: 5,
                ..Usage::default()
            },
            cost: Money::from_micros(cost),
            outcome: "ok".into(),
        }
    }

    #[test]
    fn records_round_trip_and_sum_by_group() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ledger.jsonl");
        let ledger = CostLedger::open(&path).expect("open");
        ledger
            .append(&[
                record("deepseek", 100, "2026-11-24T10:00:00Z"),
                record("gemini", 50, "2026-11-25T10:00:00Z"),
                record("deepseek", 7, "2026-11-25T11:00:00Z"),
            ])
            .expect("append");
        let (records, bad) = read_ledger(&path).expect("read");
        assert_eq!((records.len(), bad), (3, 0));
        let by = summarise(&records, GroupBy::Provider, None);
        assert_eq!(by["deepseek"].cost, Money::from_micros(107));
        assert_eq!(by["deepseek"].calls, 2);
        let since = "2026-11-25T00:00:00Z".parse().ok();
        let by_day = summarise(&records, GroupBy::Day, since);
        assert_eq!(by_day.keys().collect::<Vec<_>>(), ["2026-11-25"]);
        assert_eq!(by_day["2026-11-25"].cost, Money::from_micros(57));
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_terminated_before_the_next_append() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ledger.jsonl");
        let ledger = CostLedger::open(&path).expect("open");
        ledger
            .append(&[record("groq", 1, "2026-11-25T10:00:00Z")])
            .expect("append");
        drop(ledger);
        // A crash in the middle of a write.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(br#"{"at":"2026-11-25T10:00:01Z","run_id":"r","task"#)
            .expect("write");
        drop(f);
        let (records, bad) = read_ledger(&path).expect("read");
        assert_eq!((records.len(), bad), (1, 1));
        let ledger = CostLedger::open(&path).expect("reopen");
        ledger
            .append(&[record("groq", 2, "2026-11-25T10:00:02Z")])
            .expect("append");
        let (records, bad) = read_ledger(&path).expect("read");
        assert_eq!(
            (records.len(), bad),
            (2, 1),
            "the new record is not glued to the torn one"
        );
    }

    #[test]
    fn concurrent_appends_never_interleave() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ledger.jsonl");
        let ledger = CostLedger::open(&path).expect("open");
        std::thread::scope(|s| {
            for t in 0..8 {
                let ledger = &ledger;
                s.spawn(move || {
                    for i in 0..25 {
                        ledger
                            .append(&[record(&format!("p{t}"), i, "2026-11-25T10:00:00Z")])
                            .expect("append");
                    }
                });
            }
        });
        let (records, bad) = read_ledger(&path).expect("read");
        assert_eq!((records.len(), bad), (200, 0));
    }

    #[test]
    fn records_appended_later_reach_the_file_in_order() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("ledger.jsonl");
        let ledger = Arc::new(CostLedger::open(&path).expect("open"));
        for i in 0..50 {
            ledger.append_later(vec![record("p", i, "2026-11-25T10:00:00Z")]);
        }
        let mut records = Vec::new();
        for _ in 0..500 {
            records = read_ledger(&path).expect("read").0;
            if records.len() == 50 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let costs: Vec<u64> = records.iter().map(|r| r.cost.as_micros()).collect();
        let expected: Vec<u64> = (0..50)
            .map(|i| record("p", i, "2026-11-25T10:00:00Z").cost.as_micros())
            .collect();
        assert_eq!(costs, expected, "every record, in the order queued");
    }

    #[test]
    fn a_missing_ledger_reads_as_empty() {
        let (records, bad) = read_ledger(Path::new("/nonexistent/ledger.jsonl")).expect("read");
        assert!(records.is_empty() && bad == 0);
    }
}
