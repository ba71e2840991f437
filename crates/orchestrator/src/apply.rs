//! Writing a step's files into the workspace, safely, and undoing exactly that.
//!
//! - **Confined**: every path goes through [`Workspace::resolve`] (no absolute paths, no `..`,
//!   no symlink leading out), and the file itself must be a regular file or not exist yet: a
//!   symlink (even a dangling one) or a special file is refused. Parent folders are created
//!   inside the root only.
//! - **All or nothing**: every path is checked before anything is written; previous contents are
//!   saved under the run folder and a manifest (`changes.json`) is written before the first
//!   change; each file is written atomically (temporary file in the same folder, fsync, rename);
//!   and if a write fails the files already written are put back.
//! - **Exact rollback**: [`rollback`] restores a file only if it still holds what the run wrote,
//!   so edits the user made since survive (they are reported as conflicts), and removes only
//!   files and folders the run created.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::workspace::{Workspace, WorkspaceError};

/// The manifest's file name inside the run folder.
pub const MANIFEST: &str = "changes.json";
/// The folder of saved previous contents inside the run folder.
pub const BACKUP_DIR: &str = "backup";

/// A file to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Workspace-relative path, as the plan lists it.
    pub path: String,
    /// New content.
    pub content: Vec<u8>,
}

/// How changes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApplyMode {
    /// Replace the files.
    #[default]
    Write,
    /// Write `<name>.generated.<ext>` beside each target for review (`auto_apply: false`).
    Review,
    /// Write nothing; return unified diffs.
    DryRun,
}

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// It did not exist.
    Created,
    /// It existed and was replaced.
    Modified,
    /// It already held exactly this content; nothing was written.
    Unchanged,
}

/// One file's entry in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRecord {
    /// Workspace-relative path written.
    pub path: String,
    /// What happened.
    pub action: Action,
    /// The saved previous content, relative to the run folder.
    pub backup: Option<String>,
    /// SHA-256 of what the run wrote.
    pub new_sha256: String,
    /// Folders the run created for it (outermost first), removed on rollback when empty.
    #[serde(default)]
    pub created_dirs: Vec<String>,
}

/// Every change of a run, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version.
    pub version: u32,
    /// The workspace root.
    pub workspace: PathBuf,
    /// The changes, in the order they were made.
    pub changes: Vec<ChangeRecord>,
    /// Set once the run was rolled back.
    #[serde(default)]
    pub rolled_back: bool,
}

/// The result of [`apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// What was (or, in a dry run, would be) done.
    pub records: Vec<ChangeRecord>,
    /// Unified diffs (dry run only).
    pub diffs: Vec<String>,
}

/// Why changes could not be applied. Nothing is left half-written.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The path is not a place AetherFlow may write.
    #[error("cannot write {path}: {message}")]
    Refused {
        /// The path.
        path: String,
        /// Why, and what to do.
        message: String,
    },
    /// The workspace refused the path.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// A file operation failed (and earlier writes of this apply were undone).
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is missing or unreadable.
    #[error("run folder {dir}: {message}")]
    Manifest {
        /// The run folder.
        dir: String,
        /// What is wrong.
        message: String,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApplyError {
    let what = what.into();
    move |source| ApplyError::Io { what, source }
}

fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `<name>.generated.<ext>` beside `path`.
pub fn review_path(path: &str) -> String {
    let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
    let generated = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem}.generated.{ext}"),
        _ => format!("{name}.generated"),
    };
    if dir.is_empty() {
        generated
    } else {
        format!("{dir}/{generated}")
    }
}

/// Where `path` is written, after every check; `Ok((location, previous))`.
fn target(ws: &Workspace, path: &str) -> Result<(PathBuf, Option<Vec<u8>>), ApplyError> {
    let refused = |message: &str| ApplyError::Refused {
        path: path.to_owned(),
        message: message.to_owned(),
    };
    let resolved = ws.resolve(path)?;
    // Look at every part below the root without following links: a symlink anywhere (even a
    // dangling one, which `resolve` cannot see through) is refused.
    let mut here = ws.root().to_path_buf();
    for part in Path::new(path).components() {
        let Component::Normal(part) = part else {
            return Err(refused("is not a plain relative path"));
        };
        here.push(part);
        match here.symlink_metadata() {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refused(
                    "goes through a symbolic link; AetherFlow writes real files only (replace the link with the file, or list the file it points to)",
                ));
            }
            Ok(_) | Err(_) => {}
        }
    }
    match resolved {
        Some(location) => {
            let meta = location
                .symlink_metadata()
                .map_err(io(format!("reading {path}")))?;
            if !meta.is_file() {
                return Err(refused("exists and is not a regular file"));
            }
            let previous = std::fs::read(&location).map_err(io(format!("reading {path}")))?;
            Ok((location, Some(previous)))
        }
        None => Ok((here, None)),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename,
/// then fsync of the folder. Keeps the permissions of a file it replaces.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".aetherflow-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    if let Ok(meta) = std::fs::metadata(path) {
        tmp.as_file().set_permissions(meta.permissions())?;
    }
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Not every platform can fsync a folder; the rename itself is already atomic.
        let _ = d.sync_all();
    }
    Ok(())
}

/// Creates the missing folders above `location` (inside the root), returning them outermost
/// first as workspace-relative paths.
fn create_parents(root: &Path, location: &Path) -> Result<Vec<String>, ApplyError> {
    let mut missing = Vec::new();
    let mut dir = location.parent();
    while let Some(d) = dir {
        if d == root || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    missing.reverse();
    let mut created = Vec::new();
    for d in missing {
        std::fs::create_dir(&d).map_err(io(format!("creating {}", d.display())))?;
        created.push(relative(root, &d));
    }
    Ok(created)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

fn unified_diff(path: &str, old: &[u8], new: &[u8]) -> String {
    let old = String::from_utf8_lossy(old);
    let new = String::from_utf8_lossy(new);
    similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{path}"), &format!("b/{path}"))
        .to_string()
}

fn read_manifest(run_dir: &Path) -> Result<Manifest, ApplyError> {
    let path = run_dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ApplyError::Manifest {
            dir: run_dir.display().to_string(),
            message: format!("{MANIFEST} is damaged: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(io(format!("reading {}", path.display()))(e)),
    }
}

fn write_manifest(run_dir: &Path, manifest: &Manifest) -> Result<(), ApplyError> {
    let bytes = serde_json::to_vec_pretty(manifest).map_err(|e| ApplyError::Manifest {
        dir: run_dir.display().to_string(),
        message: e.to_string(),
    })?;
    write_atomic(&run_dir.join(MANIFEST), &bytes)
        .map_err(io(format!("writing {}", run_dir.join(MANIFEST).display())))
}

/// Applies `changes` to the workspace, recording them in `run_dir` (which must exist).
pub fn apply(
    ws: &Workspace,
    run_dir: &Path,
    changes: &[Change],
    mode: ApplyMode,
) -> Result<Applied, ApplyError> {
    // 1. Check every path before touching anything.
    let mut planned = Vec::with_capacity(changes.len());
    for change in changes {
        let path = match mode {
            ApplyMode::Review => review_path(&change.path),
            ApplyMode::Write | ApplyMode::DryRun => change.path.clone(),
        };
        let (location, previous) = target(ws, &path)?;
        planned.push((path, location, previous, change));
    }

    if mode == ApplyMode::DryRun {
        let mut applied = Applied::default();
        for (path, _, previous, change) in &planned {
            let old = previous.as_deref().unwrap_or_default();
            let action = match previous {
                None => Action::Created,
                Some(p) if *p == change.content => Action::Unchanged,
                Some(_) => Action::Modified,
            };
            if action != Action::Unchanged {
                applied.diffs.push(unified_diff(path, old, &change.content));
            }
            applied.records.push(ChangeRecord {
                path: path.clone(),
                action,
                backup: None,
                new_sha256: sha256(&change.content),
                created_dirs: Vec::new(),
            });
        }
        return Ok(applied);
    }

    // 2. Save previous contents and record the intent before the first write.
    let mut manifest = read_manifest(run_dir)?;
    manifest.version = 1;
    manifest.workspace = ws.root().to_path_buf();
    let first_new = manifest.changes.len();
    let mut records = Vec::with_capacity(planned.len());
    for (path, _, previous, change) in &planned {
        let action = match previous {
            None => Action::Created,
            Some(p) if *p == change.content => Action::Unchanged,
            Some(_) => Action::Modified,
        };
        let backup = match (action, previous) {
            (Action::Modified, Some(old)) => {
                let n = manifest.changes.len() + records.len();
                let rel = format!("{BACKUP_DIR}/{n:04}/{path}");
                let saved = run_dir.join(&rel);
                if let Some(parent) = saved.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(io(format!("creating {}", parent.display())))?;
                }
                write_atomic(&saved, old).map_err(io(format!("saving {path} to {rel}")))?;
                Some(rel)
            }
            _ => None,
        };
        records.push(ChangeRecord {
            path: path.clone(),
            action,
            backup,
            new_sha256: sha256(&change.content),
            created_dirs: Vec::new(),
        });
    }
    manifest.changes.extend(records.iter().cloned());
    write_manifest(run_dir, &manifest)?;

    // 3. Write; on failure put back what this apply already changed.
    for (i, (path, location, _, change)) in planned.iter().enumerate() {
        if records[i].action == Action::Unchanged {
            continue;
        }
        let written = create_parents(ws.root(), location).and_then(|dirs| {
            records[i].created_dirs = dirs;
            write_atomic(location, &change.content).map_err(io(format!("writing {path}")))
        });
        if let Err(e) = written {
            let done = &records[..=i];
            undo(ws.root(), run_dir, done);
            manifest.changes.truncate(first_new);
            // The manifest now lists only earlier applies; a failure here leaves the earlier
            // (complete) manifest, which is still correct for them.
            let _ = write_manifest(run_dir, &manifest);
            return Err(e);
        }
        manifest.changes[first_new + i].created_dirs = records[i].created_dirs.clone();
    }
    write_manifest(run_dir, &manifest)?;
    Ok(Applied {
        records,
        diffs: Vec::new(),
    })
}

/// Puts back the given records (best effort, used when an apply fails half-way).
fn undo(root: &Path, run_dir: &Path, records: &[ChangeRecord]) {
    for record in records.iter().rev() {
        let location = root.join(&record.path);
        match (&record.action, &record.backup) {
            (Action::Modified, Some(backup)) => {
                if let Ok(old) = std::fs::read(run_dir.join(backup)) {
                    let _ = write_atomic(&location, &old);
                }
            }
            (Action::Created, _) => {
                let _ = std::fs::remove_file(&location);
            }
            _ => {}
        }
        for dir in record.created_dirs.iter().rev() {
            let _ = std::fs::remove_dir(root.join(dir));
        }
    }
}

/// What [`rollback`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RollbackReport {
    /// Files put back to their previous content.
    pub restored: Vec<String>,
    /// Files the run created, removed.
    pub removed: Vec<String>,
    /// Files changed since the run: left as they are, with the reason.
    pub conflicts: Vec<(String, String)>,
}

/// Restores exactly what the run recorded in `run_dir` changed, and nothing else.
pub fn rollback(ws: &Workspace, run_dir: &Path) -> Result<RollbackReport, ApplyError> {
    let mut manifest = read_manifest(run_dir)?;
    if manifest.version == 0 {
        return Err(ApplyError::Manifest {
            dir: run_dir.display().to_string(),
            message: format!("no {MANIFEST}: this run changed no files"),
        });
    }
    if manifest.rolled_back {
        return Err(ApplyError::Manifest {
            dir: run_dir.display().to_string(),
            message: "this run was already rolled back".to_owned(),
        });
    }
    let mut report = RollbackReport::default();
    for record in manifest.changes.iter().rev() {
        if record.action == Action::Unchanged {
            continue;
        }
        let location = match ws.resolve(&record.path) {
            Ok(Some(location)) => location,
            Ok(None) => {
                report
                    .conflicts
                    .push((record.path.clone(), "deleted since the run".to_owned()));
                continue;
            }
            Err(e) => {
                report.conflicts.push((record.path.clone(), e.to_string()));
                continue;
            }
        };
        let current = std::fs::read(&location).map_err(io(format!("reading {}", record.path)))?;
        if sha256(&current) != record.new_sha256 {
            report.conflicts.push((
                record.path.clone(),
                "changed since the run; left as it is".to_owned(),
            ));
            continue;
        }
        match (&record.action, &record.backup) {
            (Action::Modified, Some(backup)) => {
                let old = std::fs::read(run_dir.join(backup))
                    .map_err(io(format!("reading the saved copy {backup}")))?;
                write_atomic(&location, &old).map_err(io(format!("restoring {}", record.path)))?;
                report.restored.push(record.path.clone());
            }
            (Action::Created, _) => {
                std::fs::remove_file(&location).map_err(io(format!("removing {}", record.path)))?;
                report.removed.push(record.path.clone());
                for dir in record.created_dirs.iter().rev() {
                    // Only if empty: the user may have put files there since.
                    let _ = std::fs::remove_dir(ws.root().join(dir));
                }
            }
            _ => {}
        }
    }
    manifest.rolled_back = true;
    write_manifest(run_dir, &manifest)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace::ContextLimits;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        run: PathBuf,
        ws: Workspace,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("ws");
        let run = dir.path().join("run");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&run).unwrap();
        let ws = Workspace::open(&root, ContextLimits::default()).unwrap();
        let root = ws.root().to_path_buf();
        Fixture {
            _dir: dir,
            root,
            run,
            ws,
        }
    }

    fn change(path: &str, content: &str) -> Change {
        Change {
            path: path.into(),
            content: content.as_bytes().to_vec(),
        }
    }

    fn read(f: &Fixture, path: &str) -> String {
        std::fs::read_to_string(f.root.join(path)).unwrap()
    }

    #[test]
    fn writes_each_file_its_own_content_and_rolls_back_exactly() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "old app\n").unwrap();
        std::fs::write(f.root.join("notes.txt"), "mine\n").unwrap();
        let applied = apply(
            &f.ws,
            &f.run,
            &[
                change("app.py", "new app\n"),
                change("tests/test_app.py", "tests\n"),
            ],
            ApplyMode::Write,
        )
        .unwrap();
        assert_eq!(applied.records[0].action, Action::Modified);
        assert_eq!(applied.records[1].action, Action::Created);
        assert_eq!(applied.records[1].created_dirs, vec!["tests".to_owned()]);
        assert_eq!(read(&f, "app.py"), "new app\n");
        assert_eq!(read(&f, "tests/test_app.py"), "tests\n");

        // The user edits an unrelated file after the run: rollback must not touch it.
        std::fs::write(f.root.join("notes.txt"), "mine, edited\n").unwrap();
        let report = rollback(&f.ws, &f.run).unwrap();
        assert_eq!(report.restored, vec!["app.py".to_owned()]);
        assert_eq!(report.removed, vec!["tests/test_app.py".to_owned()]);
        assert!(report.conflicts.is_empty());
        assert_eq!(read(&f, "app.py"), "old app\n");
        assert!(!f.root.join("tests").exists());
        assert_eq!(read(&f, "notes.txt"), "mine, edited\n");
        // Twice is refused.
        assert!(rollback(&f.ws, &f.run).is_err());
    }

    #[test]
    fn rollback_keeps_a_file_the_user_edited_after_the_run() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "old\n").unwrap();
        apply(
            &f.ws,
            &f.run,
            &[change("app.py", "generated\n")],
            ApplyMode::Write,
        )
        .unwrap();
        std::fs::write(f.root.join("app.py"), "generated, then hand-edited\n").unwrap();
        let report = rollback(&f.ws, &f.run).unwrap();
        assert!(report.restored.is_empty());
        assert_eq!(report.conflicts.len(), 1);
        assert_eq!(read(&f, "app.py"), "generated, then hand-edited\n");
    }

    #[test]
    fn escaping_paths_are_refused_before_anything_is_written() {
        let f = fixture();
        let outside = f._dir.path().join("outside.txt");
        std::fs::write(&outside, "outside\n").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, f.root.join("link.py")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(f._dir.path().join("nowhere.py"), f.root.join("dangling.py"))
            .unwrap();
        let mut bad = vec!["/etc/passwd", "../outside.txt", "a/../../outside.txt"];
        if cfg!(unix) {
            bad.extend(["link.py", "dangling.py"]);
        }
        for path in bad {
            let err = apply(
                &f.ws,
                &f.run,
                &[change("ok.py", "fine\n"), change(path, "evil\n")],
                ApplyMode::Write,
            )
            .unwrap_err();
            assert!(!err.to_string().is_empty());
            // The valid file listed first was not written either.
            assert!(!f.root.join("ok.py").exists(), "{path}");
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "outside\n");
        assert!(!f._dir.path().join("nowhere.py").exists());
    }

    #[test]
    fn a_folder_is_not_overwritten() {
        let f = fixture();
        std::fs::create_dir(f.root.join("pkg")).unwrap();
        let err = apply(&f.ws, &f.run, &[change("pkg", "x")], ApplyMode::Write).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn review_mode_writes_beside_the_target() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "old\n").unwrap();
        apply(
            &f.ws,
            &f.run,
            &[change("app.py", "new\n")],
            ApplyMode::Review,
        )
        .unwrap();
        assert_eq!(read(&f, "app.py"), "old\n");
        assert_eq!(read(&f, "app.generated.py"), "new\n");
        assert_eq!(review_path("src/Makefile"), "src/Makefile.generated");
        assert_eq!(review_path("src/.env"), "src/.env.generated");
    }

    #[test]
    fn dry_run_returns_diffs_and_writes_nothing() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "a\nb\n").unwrap();
        let applied = apply(
            &f.ws,
            &f.run,
            &[change("app.py", "a\nc\n"), change("new.py", "n\n")],
            ApplyMode::DryRun,
        )
        .unwrap();
        assert_eq!(read(&f, "app.py"), "a\nb\n");
        assert!(!f.root.join("new.py").exists());
        assert!(!f.run.join(MANIFEST).exists());
        assert!(
            applied.diffs[0].contains("-b\n+c\n"),
            "{}",
            applied.diffs[0]
        );
        assert!(applied.diffs[0].contains("--- a/app.py"));
        assert!(applied.diffs[1].contains("+n\n"));
    }

    #[test]
    fn identical_content_is_not_rewritten() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "same\n").unwrap();
        let applied = apply(
            &f.ws,
            &f.run,
            &[change("app.py", "same\n")],
            ApplyMode::Write,
        )
        .unwrap();
        assert_eq!(applied.records[0].action, Action::Unchanged);
        assert_eq!(applied.records[0].backup, None);
    }

    #[cfg(unix)]
    #[test]
    fn permissions_of_a_replaced_file_are_kept() {
        use std::os::unix::fs::PermissionsExt;
        let f = fixture();
        let script = f.root.join("run.sh");
        std::fs::write(&script, "old\n").unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        apply(
            &f.ws,
            &f.run,
            &[change("run.sh", "new\n")],
            ApplyMode::Write,
        )
        .unwrap();
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn several_applies_in_one_run_roll_back_in_reverse() {
        let f = fixture();
        std::fs::write(f.root.join("app.py"), "v0\n").unwrap();
        apply(&f.ws, &f.run, &[change("app.py", "v1\n")], ApplyMode::Write).unwrap();
        apply(&f.ws, &f.run, &[change("app.py", "v2\n")], ApplyMode::Write).unwrap();
        let manifest = read_manifest(&f.run).unwrap();
        assert_eq!(manifest.changes.len(), 2);
        // The second apply's record holds v2; rollback restores v1 then sees v1 == first
        // record's new content and restores v0.
        let report = rollback(&f.ws, &f.run).unwrap();
        assert_eq!(report.restored.len(), 2, "{report:?}");
        assert_eq!(read(&f, "app.py"), "v0\n");
    }
}
