//! Start-up shared by `aetherflow` and `aetherflow-api`: the one library that reads the process
//! environment, called first thing from each `main`. Everything below it receives typed
//! settings and an explicit map of variables.
//!
//! ```no_run
//! let env = aetherflow_bootstrap::Environment::load(None).expect("configuration");
//! let _guard = aetherflow_bootstrap::logging::init(
//!     &env.settings.log,
//!     &env.settings.telemetry,
//!     "aetherflow",
//! )
//! .expect("logging");
//! ```

pub mod logging;
mod telemetry;

use std::collections::HashMap;
use std::path::Path;

use aetherflow_orchestrator::settings::{ProviderKeys, Settings, SettingsError};

/// Start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// `.env` exists but could not be read.
    #[error(".env: {0}; fix or remove the file")]
    DotEnv(#[from] dotenvy::Error),
    /// The current folder is unreadable.
    #[error("cannot read the current folder: {0}")]
    CurrentDir(std::io::Error),
    /// The settings are invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// Logging could not be set up.
    #[error("logging: {0}")]
    Logging(String),
}

/// What the process learned from its surroundings.
pub struct Environment {
    /// Environment variables, with `.env` filling the unset ones. They include provider keys:
    /// never log them (this type's `Debug` shows the names only).
    pub vars: HashMap<String, String>,
    /// Defaults → aetherflow.toml (or `config`) → `AETHERFLOW_*` variables.
    pub settings: Settings,
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Environment")
            .field("vars (names only)", &names)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Environment {
    /// Reads the process environment and `.env` from the current folder (without changing the
    /// process environment), then the layered settings.
    pub fn load(config: Option<&Path>) -> Result<Self, BootstrapError> {
        let cwd = std::env::current_dir().map_err(BootstrapError::CurrentDir)?;
        Self::from_parts(std::env::vars().collect(), &cwd, config)
    }

    /// As [`Environment::load`], with the variables and folder given.
    pub fn from_parts(
        mut vars: HashMap<String, String>,
        dir: &Path,
        config: Option<&Path>,
    ) -> Result<Self, BootstrapError> {
        match dotenvy::from_path_iter(dir.join(".env")) {
            Ok(iter) => {
                for item in iter {
                    let (key, value) = item?;
                    vars.entry(key).or_insert(value);
                }
            }
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let settings = Settings::load(config, dir, &vars)?;
        Ok(Environment { vars, settings })
    }

    /// Provider keys from the usual variables (or the files their `*_FILE` variants name).
    pub fn keys(&self) -> Result<ProviderKeys, BootstrapError> {
        Ok(ProviderKeys::from_env(&self.vars)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_variables_but_never_shows_their_values() {
        let dir = tempfile::tempdir().expect("dir");
        let vars = HashMap::from([(
            "DEEPSEEK_API_KEY".to_owned(),
            "sk-canary-0123456789abcdef".to_owned(),
        )]);
        let env = Environment::from_parts(vars, dir.path(), None).expect("loads");
        let shown = format!("{env:?} {env:#?}");
        assert!(shown.contains("DEEPSEEK_API_KEY"), "{shown}");
        assert!(
            !shown.contains("canary"),
            "a key leaked into Debug: {shown}"
        );
    }

    #[test]
    fn dot_env_fills_only_unset_variables() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join(".env"),
            "GROQ_API_KEY=from-file\nAETHERFLOW_RUN__CONCURRENCY=7\nDEEPSEEK_API_KEY=file\n",
        )
        .expect("write");
        let vars = HashMap::from([("DEEPSEEK_API_KEY".to_owned(), "process".to_owned())]);
        let env = Environment::from_parts(vars, dir.path(), None).expect("loads");
        assert_eq!(env.vars["GROQ_API_KEY"], "from-file");
        assert_eq!(env.vars["DEEPSEEK_API_KEY"], "process");
        assert_eq!(env.settings.run.concurrency, 7);
        assert_eq!(env.keys().expect("keys").configured(), ["deepseek", "groq"]);
    }

    #[test]
    fn a_malformed_dot_env_is_an_error() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(".env"), "NOT VALID LINE 'x\n").expect("write");
        let err = Environment::from_parts(HashMap::new(), dir.path(), None).expect_err("bad");
        assert!(err.to_string().contains(".env"), "{err}");
    }
}
