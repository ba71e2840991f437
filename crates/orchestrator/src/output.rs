//! The run folder: `<out>/<task_id>/<run_id>/` with `report.json` and one file per step
//! output. Every file is written to a temporary name and renamed, so a reader never sees half
//! a file.

use std::path::{Path, PathBuf};

use aetherflow_domain::run::RunReport;
use aetherflow_domain::{RunId, StepId, TaskId};

use crate::RunError;

/// A created run folder.
#[derive(Debug, Clone)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Creates `<out>/<task_id>/<run_id>/`. Task ids are validated as single path components.
    pub(crate) async fn create(out: &Path, task: &TaskId, run: RunId) -> Result<Self, RunError> {
        let path = out.join(task.as_str()).join(run.to_string());
        tokio::fs::create_dir_all(&path)
            .await
            .map_err(|source| RunError::OutputDir {
                path: path.display().to_string(),
                source,
            })?;
        Ok(RunDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn into_path(self) -> PathBuf {
        self.path
    }

    /// Writes a step's output as `<step_id>.md`; returns the file name.
    pub(crate) async fn write_step_output(
        &self,
        step: &StepId,
        text: &str,
    ) -> Result<String, std::io::Error> {
        let name = format!("{step}.md");
        write_atomically(&self.path.join(&name), text.as_bytes()).await?;
        Ok(name)
    }

    /// Writes `report.json`.
    pub(crate) async fn write_report(&self, report: &RunReport) -> Result<(), RunError> {
        let path = self.path.join("report.json");
        let mut json = serde_json::to_vec_pretty(report).map_err(|e| RunError::Report {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        write_atomically(&path, &json)
            .await
            .map_err(|source| RunError::Report {
                path: path.display().to_string(),
                source,
            })
    }
}

async fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}
