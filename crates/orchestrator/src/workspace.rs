//! The user's workspace as the orchestrator may see it: files are read only inside the root,
//! never through `..`, absolute paths or symlinks leading out, and within size limits.

use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use aetherflow_domain::plan::relative_path_problem;

/// How much of the workspace a step may put into its prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextLimits {
    /// Largest single file, in bytes.
    pub max_file_bytes: u64,
    /// Largest sum of all files of one step, in bytes.
    pub max_total_bytes: u64,
    /// Most files one pattern or folder may expand to.
    pub max_files_per_pattern: usize,
}

impl Default for ContextLimits {
    fn default() -> Self {
        ContextLimits {
            max_file_bytes: 256 * 1024,
            max_total_bytes: 1024 * 1024,
            max_files_per_pattern: 200,
        }
    }
}

/// Why a context file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkspaceError {
    /// The workspace root itself is unusable.
    #[error("workspace {root}: {message}")]
    Root {
        /// The root as given.
        root: String,
        /// What is wrong.
        message: String,
    },
    /// The path is absolute, uses `..`, or is otherwise not a workspace path.
    #[error("{path}: {message}")]
    BadPath {
        /// The path as written in the plan.
        path: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// The path resolves (through a symlink) outside the workspace.
    #[error(
        "{path}: resolves to {resolved}, outside the workspace {root}; context files must live inside it"
    )]
    Escapes {
        /// The path as written.
        path: String,
        /// Where it really points.
        resolved: String,
        /// The workspace root.
        root: String,
    },
    /// A read-only input the plan names does not exist.
    #[error(
        "{path}: input file not found in the workspace {root}; create it or remove it from `input_files`"
    )]
    Missing {
        /// The path as written.
        path: String,
        /// The workspace root.
        root: String,
    },
    /// A file is larger than the per-file limit.
    #[error(
        "{path}: {size} bytes is over the {limit}-byte limit per context file (raise `context.max_file_bytes`, or list a smaller file)"
    )]
    FileTooLarge {
        /// The path as written.
        path: String,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The step's files together are larger than the total limit.
    #[error(
        "the step's context files add up to more than {limit} bytes (at {path}); raise `context.max_total_bytes` or list fewer files"
    )]
    TotalTooLarge {
        /// The file that crossed the limit.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// A pattern matched more files than allowed.
    #[error(
        "{pattern}: matches more than {limit} files; narrow the pattern (or raise `context.max_files_per_pattern`)"
    )]
    TooManyMatches {
        /// The pattern as written.
        pattern: String,
        /// The limit.
        limit: usize,
    },
    /// The file is not UTF-8 text.
    #[error("{path}: not UTF-8 text, so it cannot be given to a model; remove it from the step")]
    NotText {
        /// The path as written.
        path: String,
    },
    /// Reading failed.
    #[error("{path}: {message}")]
    Io {
        /// The path as written.
        path: String,
        /// The operating system's message.
        message: String,
    },
}

/// A file read from the workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// The path relative to the workspace root, with `/` separators.
    pub path: String,
    /// The file's text.
    pub content: String,
}

/// A workspace root, resolved once, and the limits for reading it.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
    limits: ContextLimits,
}

impl Workspace {
    /// Opens `root` (which must be an existing folder) with `limits`.
    pub fn open(root: &Path, limits: ContextLimits) -> Result<Self, WorkspaceError> {
        let root_err = |message: String| WorkspaceError::Root {
            root: root.display().to_string(),
            message,
        };
        let canonical = root
            .canonicalize()
            .map_err(|e| root_err(format!("{e}; pass an existing folder with --workspace")))?;
        if !canonical.is_dir() {
            return Err(root_err("is not a folder".into()));
        }
        Ok(Workspace {
            root: canonical,
            limits,
        })
    }

    /// The resolved root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The limits in force.
    pub fn limits(&self) -> ContextLimits {
        self.limits
    }

    /// Resolves a plan path to a location inside the workspace, following symlinks of the
    /// parts that exist. `Ok(None)` means the path is inside but does not exist (yet).
    pub fn resolve(&self, path: &str) -> Result<Option<PathBuf>, WorkspaceError> {
        if let Some(message) = relative_path_problem(path) {
            return Err(WorkspaceError::BadPath {
                path: path.to_owned(),
                message,
            });
        }
        let joined = self.root.join(path.replace('\\', "/"));
        // Resolve the longest existing prefix, so a symlinked folder is caught even when the
        // file below it does not exist yet.
        let mut existing = joined.as_path();
        let mut rest = Vec::new();
        while !existing.exists() {
            match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_owned());
                    existing = parent;
                }
                _ => break,
            }
        }
        let resolved = existing.canonicalize().map_err(|e| WorkspaceError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(WorkspaceError::Escapes {
                path: path.to_owned(),
                resolved: resolved.display().to_string(),
                root: self.root.display().to_string(),
            });
        }
        if rest.is_empty() {
            Ok(Some(resolved))
        } else {
            Ok(None)
        }
    }

    /// Reads the files a step names. `required` inputs must exist; others are skipped when
    /// absent (a step may create them). Patterns (`*`, `?`, `[`) and folders (`dir/`) expand
    /// to the files below them, sorted.
    pub fn read(
        &self,
        entries: &[(String, bool)],
        budget: &mut u64,
    ) -> Result<Vec<ContextFile>, WorkspaceError> {
        let mut out = Vec::new();
        for (entry, required) in entries {
            if is_pattern(entry) || entry.ends_with('/') {
                for path in self.expand(entry)? {
                    out.push(self.read_one(&path, budget)?);
                }
                continue;
            }
            match self.resolve(entry)? {
                Some(real) if real.is_dir() => {
                    for path in self.expand(&format!("{}/", entry.trim_end_matches('/')))? {
                        out.push(self.read_one(&path, budget)?);
                    }
                }
                Some(_) => out.push(self.read_one(entry, budget)?),
                None if *required => {
                    return Err(WorkspaceError::Missing {
                        path: entry.clone(),
                        root: self.root.display().to_string(),
                    });
                }
                None => {}
            }
        }
        Ok(out)
    }

    fn read_one(&self, path: &str, budget: &mut u64) -> Result<ContextFile, WorkspaceError> {
        let io = |e: std::io::Error| WorkspaceError::Io {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let real = self.resolve(path)?.ok_or_else(|| WorkspaceError::Missing {
            path: path.to_owned(),
            root: self.root.display().to_string(),
        })?;
        let size = fs::metadata(&real).map_err(io)?.len();
        if size > self.limits.max_file_bytes {
            return Err(WorkspaceError::FileTooLarge {
                path: path.to_owned(),
                size,
                limit: self.limits.max_file_bytes,
            });
        }
        if size > *budget {
            return Err(WorkspaceError::TotalTooLarge {
                path: path.to_owned(),
                limit: self.limits.max_total_bytes,
            });
        }
        // Read at most limit + 1 bytes: the file may have grown since `metadata`.
        let mut bytes = Vec::with_capacity(size as usize);
        fs::File::open(&real)
            .map_err(io)?
            .take(self.limits.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let read = bytes.len() as u64;
        if read > self.limits.max_file_bytes {
            return Err(WorkspaceError::FileTooLarge {
                path: path.to_owned(),
                size: read,
                limit: self.limits.max_file_bytes,
            });
        }
        if read > *budget {
            return Err(WorkspaceError::TotalTooLarge {
                path: path.to_owned(),
                limit: self.limits.max_total_bytes,
            });
        }
        *budget -= read;
        let content = String::from_utf8(bytes).map_err(|_| WorkspaceError::NotText {
            path: path.to_owned(),
        })?;
        Ok(ContextFile {
            path: path.replace('\\', "/"),
            content,
        })
    }

    /// Files matching a pattern or below a folder, relative to the root, sorted. Symlinks are
    /// not followed, so a walk never leaves the workspace.
    fn expand(&self, pattern: &str) -> Result<Vec<String>, WorkspaceError> {
        let bad = |message: String| WorkspaceError::BadPath {
            path: pattern.to_owned(),
            message,
        };
        if let Some(problem) = relative_path_problem(pattern) {
            return Err(bad(problem));
        }
        let normalized = pattern.replace('\\', "/");
        let glob_text = if normalized.ends_with('/') {
            format!("{normalized}**")
        } else {
            normalized.clone()
        };
        let matcher = globset::GlobBuilder::new(&glob_text)
            .literal_separator(true)
            .build()
            .map_err(|e| bad(format!("not a valid pattern: {e}")))?
            .compile_matcher();
        // Walk only below the pattern's literal prefix.
        let prefix: PathBuf = Path::new(&normalized)
            .components()
            .take_while(|c| match c {
                Component::Normal(s) => !is_pattern(&s.to_string_lossy()),
                _ => false,
            })
            .collect();
        let start = self.root.join(&prefix);
        if !start.exists() {
            return Ok(Vec::new());
        }
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&start)
            .follow_links(false)
            .sort_by_file_name()
        {
            let entry = entry.map_err(|e| WorkspaceError::Io {
                path: pattern.to_owned(),
                message: e.to_string(),
            })?;
            if !entry.file_type().is_file() {
                continue;
            }
            let Ok(relative) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let relative = relative.to_string_lossy().replace('\\', "/");
            if matcher.is_match(&relative) {
                if found.len() == self.limits.max_files_per_pattern {
                    return Err(WorkspaceError::TooManyMatches {
                        pattern: pattern.to_owned(),
                        limit: self.limits.max_files_per_pattern,
                    });
                }
                found.push(relative);
            }
        }
        Ok(found)
    }
}

fn is_pattern(path: &str) -> bool {
    path.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(limits: ContextLimits) -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("src/pkg")).expect("mkdir");
        fs::write(dir.path().join("src/app.py"), "print('app')\n").expect("write");
        fs::write(dir.path().join("src/pkg/util.py"), "X = 1\n").expect("write");
        fs::write(dir.path().join("README.md"), "# hi\n").expect("write");
        let ws = Workspace::open(dir.path(), limits).expect("open");
        (dir, ws)
    }

    fn read(ws: &Workspace, entries: &[(&str, bool)]) -> Result<Vec<ContextFile>, WorkspaceError> {
        let entries: Vec<(String, bool)> = entries.iter().map(|(p, r)| ((*p).into(), *r)).collect();
        let mut budget = ws.limits().max_total_bytes;
        ws.read(&entries, &mut budget)
    }

    #[test]
    fn reads_named_files_and_skips_absent_targets() {
        let (_d, ws) = workspace(ContextLimits::default());
        let files = read(&ws, &[("src/app.py", false), ("src/new.py", false)]).expect("read");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].content, "print('app')\n");
    }

    #[test]
    fn missing_inputs_are_an_error_naming_the_fix() {
        let (_d, ws) = workspace(ContextLimits::default());
        let err = read(&ws, &[("docs/spec.md", true)]).expect_err("missing");
        assert!(
            err.to_string().contains("remove it from `input_files`"),
            "{err}"
        );
    }

    #[test]
    fn escapes_are_refused() {
        let (_d, ws) = workspace(ContextLimits::default());
        for bad in ["../etc/passwd", "/etc/passwd", "src/../../x"] {
            let err = read(&ws, &[(bad, false)]).expect_err(bad);
            assert!(
                matches!(err, WorkspaceError::BadPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_leading_out_are_refused_even_for_new_files() {
        let outside = tempfile::tempdir().expect("temp dir");
        fs::write(outside.path().join("secret.txt"), "s3cret").expect("write");
        let (dir, ws) = workspace(ContextLimits::default());
        std::os::unix::fs::symlink(
            outside.path().join("secret.txt"),
            dir.path().join("link.txt"),
        )
        .expect("symlink");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("out")).expect("symlink");
        let err = read(&ws, &[("link.txt", false)]).expect_err("file link");
        assert!(matches!(err, WorkspaceError::Escapes { .. }), "{err}");
        let err = ws.resolve("out/new.py").expect_err("folder link");
        assert!(matches!(err, WorkspaceError::Escapes { .. }), "{err}");
    }

    #[test]
    fn size_limits_apply_per_file_and_in_total() {
        let (_d, ws) = workspace(ContextLimits {
            max_file_bytes: 8,
            ..ContextLimits::default()
        });
        let err = read(&ws, &[("src/app.py", false)]).expect_err("too big");
        assert!(
            matches!(
                err,
                WorkspaceError::FileTooLarge {
                    size: 13,
                    limit: 8,
                    ..
                }
            ),
            "{err}"
        );

        let (_d, ws) = workspace(ContextLimits {
            max_total_bytes: 15,
            ..ContextLimits::default()
        });
        let err = read(&ws, &[("src/app.py", false), ("README.md", false)]).expect_err("total");
        assert!(matches!(err, WorkspaceError::TotalTooLarge { .. }), "{err}");
    }

    #[test]
    fn patterns_and_folders_expand_sorted_inside_the_workspace() {
        let (_d, ws) = workspace(ContextLimits::default());
        let files = read(&ws, &[("src/**/*.py", false)]).expect("glob");
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["src/app.py", "src/pkg/util.py"]);
        let files = read(&ws, &[("src/pkg/", false)]).expect("folder");
        assert_eq!(files.len(), 1);
        let files = read(&ws, &[("src", false)]).expect("folder without slash");
        assert_eq!(files.len(), 2);
    }

    #[test]
    fn binary_files_are_refused() {
        let (dir, ws) = workspace(ContextLimits::default());
        fs::write(dir.path().join("blob.bin"), [0xff, 0xfe, 0x00]).expect("write");
        let err = read(&ws, &[("blob.bin", false)]).expect_err("binary");
        assert!(matches!(err, WorkspaceError::NotText { .. }), "{err}");
    }
}
