//! Typed configuration shared by the CLI and the API, layered with the `config` crate:
//! built-in defaults → `aetherflow.toml` → `AETHERFLOW_*` environment → command-line flags.
//!
//! This module never reads the process environment itself: binaries pass the variables in, so
//! tests can give any environment and libraries stay free of global state.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use aetherflow_domain::run::{Mode, Workflow};
use aetherflow_provider::ApiKey;
use secrecy::SecretString;
use serde::Deserialize;

use crate::workspace::ContextLimits;

/// Everything configurable, with defaults that work offline out of the box.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// How runs are carried out.
    pub run: RunSettings,
    /// Limits on workspace files put into prompts.
    pub context: ContextSettings,
    /// Logging.
    pub log: LogSettings,
    /// The offline mock provider.
    pub mock: MockSettings,
    /// The HTTP server (`aetherflow-api`).
    pub server: ServerSettings,
    /// The real providers.
    pub providers: ProvidersSettings,
    /// Retries of one model.
    pub retry: aetherflow_resilience::retry::RetryPolicy,
    /// Circuit breakers per (provider, model).
    pub breaker: aetherflow_resilience::breaker::BreakerPolicy,
    /// Fallback chains.
    pub fallback: aetherflow_resilience::fallback::FallbackPolicy,
    /// The response cache.
    pub cache: crate::cache::CacheSettings,
    /// Caps across runs.
    pub budget: BudgetSettings,
    /// Usage anomaly alerts.
    pub alerts: aetherflow_resilience::alerts::AlertPolicy,
    /// The WebAssembly sandbox that runs generated Python.
    pub sandbox: SandboxSettings,
    /// The gate-keeper review of generated files by a second model.
    pub review: ReviewSettings,
    /// Price overrides and additions, keyed `"provider/model"`.
    pub prices: BTreeMap<String, aetherflow_providers::prices::PriceEntry>,
    /// Shared state for several processes (budgets, rate limits, breakers); off without a URL.
    pub redis: aetherflow_redis::RedisSettings,
    /// OpenTelemetry traces; off without an endpoint.
    pub telemetry: TelemetrySettings,
    /// The OpenAI-compatible gateway.
    pub gateway: GatewaySettings,
    /// The job queue between API replicas and workers (on Redis); off by default.
    pub queue: QueueSettings,
}

/// `[queue]`: plan runs submitted to any API replica go on a Redis stream and are run by
/// `aetherflow-api worker` processes. Needs `redis.url`, and a store every process shares
/// (`server.store_url`, or one SQLite file on one host).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// API replicas enqueue runs instead of running them.
    pub enabled: bool,
    /// Runs queued or held by workers at most; more are refused with 503 and `Retry-After`.
    pub max_len: u64,
    /// Seconds a job may go unrenewed before another worker takes it over (a worker renews it
    /// every third of this while it runs).
    pub visibility_secs: u64,
    /// Deliveries of one job before it is given up as failed (a run that keeps killing its
    /// workers).
    pub max_deliveries: u64,
    /// Runs one worker process executes at once.
    pub worker_concurrency: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        QueueSettings {
            enabled: false,
            max_len: 1_000,
            visibility_secs: 60,
            max_deliveries: 3,
            worker_concurrency: 2,
        }
    }
}

/// `[gateway]`: the OpenAI-compatible gateway of `aetherflow-api`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewaySettings {
    /// Routing groups: clients ask for `aetherflow/<name>` and get these targets in order, with
    /// the same retries, breakers, budgets and fallbacks as plan steps. Each entry is a provider
    /// (its configured model) or `provider/model`. A group named like a built-in one (`fast`,
    /// `build`, `double-check`) replaces it.
    #[serde(deserialize_with = "group_map")]
    pub groups: BTreeMap<String, Vec<String>>,
}

/// Routing groups: each a TOML array or a comma-separated string (environment variables).
fn group_map<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(transparent)]
    struct Entries(#[serde(deserialize_with = "string_list")] Vec<String>);
    Ok(BTreeMap::<String, Entries>::deserialize(d)?
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect())
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP, off without `otlp_endpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySettings {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318` (`/v1/traces` is
    /// added).
    pub otlp_endpoint: Option<String>,
    /// `http/protobuf` (the default) or `http/json`.
    pub protocol: OtlpProtocol,
    /// The `service.name` of the traces (default: the binary's name).
    pub service_name: Option<String>,
    /// Fraction of new traces kept, 0 to 1; a trace begun upstream keeps its own decision.
    pub sample_ratio: f64,
    /// How often finished spans are sent, in milliseconds.
    pub export_interval_ms: u64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        TelemetrySettings {
            otlp_endpoint: None,
            protocol: OtlpProtocol::HttpProtobuf,
            service_name: None,
            sample_ratio: 1.0,
            export_interval_ms: 5_000,
        }
    }
}

/// The OTLP encoding over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum OtlpProtocol {
    /// Protobuf (`application/x-protobuf`), what collectors expect by default.
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    /// JSON (`application/json`).
    #[serde(rename = "http/json")]
    HttpJson,
}

/// `[providers]`: which provider answers by default, and each one's model, URL and deadlines.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersSettings {
    /// The provider steps use unless they name one (`context.provider`); by default the first
    /// configured of deepseek, gemini, groq, codestral, kimi, openai-compatible.
    pub default: Option<String>,
    /// `[providers.deepseek]`
    pub deepseek: ProviderSettings,
    /// `[providers.gemini]`
    pub gemini: ProviderSettings,
    /// `[providers.groq]`
    pub groq: ProviderSettings,
    /// `[providers.codestral]`
    pub codestral: ProviderSettings,
    /// `[providers.kimi]`
    pub kimi: ProviderSettings,
    /// `[providers.openai_compatible]`: a local server (Ollama, vLLM, llama.cpp, LM Studio);
    /// enabled by setting its `base_url`.
    pub openai_compatible: ProviderSettings,
}

/// One provider's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderSettings {
    /// The model asked for (default: the adapter's).
    pub model: Option<String>,
    /// Overrides the public base URL (https, or http on loopback only).
    pub base_url: Option<String>,
    /// Connection deadline, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Deadline for the first byte or event, and for silence inside a stream, in milliseconds.
    pub first_token_timeout_ms: u64,
    /// Deadline for the whole call, in milliseconds.
    pub total_timeout_ms: u64,
    /// Most calls in flight at once to this provider (0 = no limit).
    pub max_concurrency: usize,
    /// Calls per minute per key, paced evenly on our side (0 = no limit).
    pub requests_per_minute: u32,
    /// Prompt tokens per minute per key, estimated on our side (0 = no limit).
    pub tokens_per_minute: u32,
}

impl Default for ProviderSettings {
    fn default() -> Self {
        ProviderSettings {
            model: None,
            base_url: None,
            connect_timeout_ms: 10_000,
            first_token_timeout_ms: 60_000,
            total_timeout_ms: 600_000,
            max_concurrency: 0,
            requests_per_minute: 0,
            tokens_per_minute: 0,
        }
    }
}

/// `[run]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunSettings {
    /// `fast`, `build` or `double-check`.
    pub mode: Mode,
    /// `direct`, `proto` or `prod`.
    pub workflow: Workflow,
    /// Most steps in flight at once (1–1024).
    pub concurrency: usize,
    /// Where run folders are written.
    pub out_dir: PathBuf,
    /// Upper bound on each answer's tokens.
    pub max_output_tokens: u32,
    /// Hard cap on one run's spend in US dollars (`"2.50"`); none by default.
    pub budget_usd: Option<String>,
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            mode: Mode::Build,
            workflow: Workflow::Direct,
            concurrency: 4,
            out_dir: PathBuf::from("runs"),
            max_output_tokens: 8192,
            budget_usd: None,
        }
    }
}

/// `[budget]`: caps on spend across runs (a run's own cap is `run.budget_usd`). Past spend is
/// read from the cost ledger at start-up, so the caps hold across processes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetSettings {
    /// Cap per UTC day, in US dollars (`"10"`).
    pub day_usd: Option<String>,
    /// Cap per UTC month, in US dollars.
    pub month_usd: Option<String>,
}

/// `[context]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContextSettings {
    /// Largest single context file, in bytes.
    pub max_file_bytes: u64,
    /// Largest sum of one step's context files, in bytes.
    pub max_total_bytes: u64,
    /// Most files one pattern or folder may expand to.
    pub max_files_per_pattern: usize,
}

impl Default for ContextSettings {
    fn default() -> Self {
        let d = ContextLimits::default();
        ContextSettings {
            max_file_bytes: d.max_file_bytes,
            max_total_bytes: d.max_total_bytes,
            max_files_per_pattern: d.max_files_per_pattern,
        }
    }
}

impl ContextSettings {
    /// As workspace limits.
    pub fn limits(&self) -> ContextLimits {
        ContextLimits {
            max_file_bytes: self.max_file_bytes,
            max_total_bytes: self.max_total_bytes,
            max_files_per_pattern: self.max_files_per_pattern,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// How often the log file rolls over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    /// A new file every hour.
    Hourly,
    /// A new file every day.
    #[default]
    Daily,
    /// One file, never rotated.
    Never,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A tracing filter: `warn`, `info`, `aetherflow_orchestrator=debug,info`, …
    pub level: String,
    /// `human` or `json`.
    pub format: LogFormat,
    /// Folder for a rotating log file, in addition to standard error.
    pub dir: Option<PathBuf>,
    /// `hourly`, `daily` or `never`.
    pub rotation: LogRotation,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "warn".into(),
            format: LogFormat::Human,
            dir: None,
            rotation: LogRotation::Daily,
        }
    }
}

/// `[mock]`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MockSettings {
    /// Latency added to every mock call, in milliseconds.
    pub latency_ms: u64,
    /// A YAML script of replies and failures per step.
    pub script: Option<PathBuf>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on.
    pub bind: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Where the server keeps its database (`aetherflow.db`: keys, runs, events, audit) and
    /// the run folders.
    pub data_dir: PathBuf,
    /// Folders API runs may work in (a list, or comma-separated in the environment); a run
    /// names one of them, or a folder inside one. None: runs are refused.
    #[serde(deserialize_with = "path_list")]
    pub workspace_roots: Vec<PathBuf>,
    /// Answer runs with the built-in mock provider (no keys, no network): for demos and tests.
    pub offline: bool,
    /// A PostgreSQL database for keys, runs, events and spend, shared by every replica
    /// (`postgres://user:password@host:5432/db`); a secret, never logged. Without it each
    /// process keeps them in SQLite in `data_dir`.
    pub store_url: Option<SecretString>,
    /// Connections to `store_url` this process keeps at most.
    pub store_max_connections: u32,
    /// Runs executed at once.
    pub workers: usize,
    /// Runs waiting for a worker at most; more are refused with 503 and `Retry-After`.
    pub queue: usize,
    /// The longest `?wait=` a run submission honours, in seconds.
    pub max_wait_secs: u64,
    /// The whole stop on SIGTERM, in seconds: a third for HTTP requests in flight, the rest for
    /// running work, then a short cancellation.
    pub shutdown_grace_secs: u64,
    /// Requests a minute each API key may make (a burst of as many, refilled evenly).
    pub rate_per_minute: u32,
    /// Requests a minute each client IP may make without a valid key (probes, failed logins).
    pub ip_rate_per_minute: u32,
    /// Browser origins allowed to call the API (CORS), e.g. `https://app.example.com`; none by
    /// default. Never `*`.
    #[serde(deserialize_with = "string_list")]
    pub cors_origins: Vec<String>,
    /// Cap on each API key's spend per UTC day, in US dollars (`"5"`); none by default.
    pub key_day_usd: Option<String>,
    /// Host names the server answers to (the `Host` header, optionally with a port); empty:
    /// any. Set it whenever the server is reachable beyond loopback.
    #[serde(deserialize_with = "string_list")]
    pub allowed_hosts: Vec<String>,
    /// Longest a request may take to be answered, in seconds; routes that wait on a model or a
    /// run have their own deadlines. Also the time a client has to send a request's head and
    /// a form's body.
    pub request_timeout_secs: u64,
    /// Largest design image accepted by the designer upload, in bytes.
    pub upload_max_bytes: usize,
    /// The provider asked first to analyse uploaded designs (a vision model), then the
    /// default provider.
    pub designer_provider: String,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 1024 * 1024,
            data_dir: PathBuf::from("aetherflow-data"),
            workspace_roots: Vec::new(),
            offline: false,
            store_url: None,
            store_max_connections: 10,
            workers: 2,
            queue: 64,
            max_wait_secs: 120,
            shutdown_grace_secs: 30,
            rate_per_minute: 600,
            ip_rate_per_minute: 120,
            cors_origins: Vec::new(),
            key_day_usd: None,
            allowed_hosts: Vec::new(),
            request_timeout_secs: 30,
            upload_max_bytes: 10 * 1024 * 1024,
            designer_provider: "gemini".into(),
        }
    }
}

/// A list of strings, from a TOML array or a comma-separated string (environment variables).
fn string_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(path_list(d)?
        .into_iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect())
}

/// A list of paths, from a TOML array or a comma-separated string (environment variables).
fn path_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// `[review]`: the gate-keeper, a second model that reviews a step's files before they are
/// applied (the original's "KIMI gate-keeper").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReviewSettings {
    /// Review every step that writes files (`aetherflow run --review` turns it on for one run).
    pub enabled: bool,
    /// The reviewer, tried first; the default provider answers when it is not configured.
    pub provider: String,
    /// Accept code when the review gives no usable verdict (default: fail closed).
    pub fail_open: bool,
}

impl Default for ReviewSettings {
    fn default() -> Self {
        ReviewSettings {
            enabled: false,
            provider: "kimi".into(),
            fail_open: false,
        }
    }
}

/// `[sandbox]`: where the CPython-for-WASI runtime lives and the default limits of a run.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSettings {
    /// Folder holding python-3.11.1.wasm and python311.zip (default: $AETHERFLOW_SANDBOX_RUNTIME,
    /// else ~/.cache/aetherflow/sandbox-runtime, where scripts/fetch-sandbox-runtime.py puts them).
    pub runtime_dir: Option<PathBuf>,
    /// Folder for the compiled module (default: beside the runtime folder).
    pub compiled_dir: Option<PathBuf>,
    /// Runs at once (default: the number of cores).
    pub max_parallel: Option<usize>,
    /// Compile with fuel metering so `fuel` can limit instructions (slower).
    pub fuel_metering: bool,
    /// Instruction budget per run (needs `fuel_metering`).
    pub fuel: Option<u64>,
    /// Wall-clock limit per run, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap per run, in MiB.
    pub memory_mib: u64,
    /// Bytes kept of stdout and of stderr each, in KiB.
    pub output_kib: usize,
    /// Cap on the run's scratch folder, in MiB.
    pub scratch_mib: u64,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        let limits = aetherflow_sandbox::Limits::default();
        SandboxSettings {
            runtime_dir: None,
            compiled_dir: None,
            max_parallel: None,
            fuel_metering: false,
            fuel: None,
            timeout_ms: u64::try_from(limits.timeout.as_millis()).unwrap_or(u64::MAX),
            memory_mib: limits.memory_bytes >> 20,
            output_kib: limits.output_bytes >> 10,
            scratch_mib: limits.scratch_bytes >> 20,
        }
    }
}

impl SandboxSettings {
    /// The sandbox's build configuration. `env` supplies `AETHERFLOW_SANDBOX_RUNTIME` (the set-up
    /// script's variable) when `runtime_dir` is not set.
    pub fn config(&self, env: &HashMap<String, String>) -> aetherflow_sandbox::SandboxConfig {
        let mut config = aetherflow_sandbox::SandboxConfig::default();
        if let Some(dir) = self.runtime_dir.clone().or_else(|| {
            env.get("AETHERFLOW_SANDBOX_RUNTIME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        }) {
            config.runtime_dir = dir;
        }
        config.compiled_dir.clone_from(&self.compiled_dir);
        if let Some(n) = self.max_parallel {
            config.max_parallel = n;
        }
        config.fuel_metering = self.fuel_metering;
        config
    }

    /// The default limits of a run.
    pub fn limits(&self) -> aetherflow_sandbox::Limits {
        aetherflow_sandbox::Limits {
            timeout: std::time::Duration::from_millis(self.timeout_ms),
            memory_bytes: self.memory_mib.saturating_mul(1 << 20),
            fuel: self.fuel,
            output_bytes: self.output_kib.saturating_mul(1 << 10),
            scratch_bytes: self.scratch_mib.saturating_mul(1 << 20),
            ..aetherflow_sandbox::Limits::default()
        }
    }

    fn check(&self) -> Result<(), SettingsError> {
        let invalid = |key, message: &str| {
            Err(SettingsError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if !(1..=3_600_000).contains(&self.timeout_ms) {
            return invalid("sandbox.timeout_ms", "must be 1 to 3600000 (one hour)");
        }
        if !(16..=4096).contains(&self.memory_mib) {
            return invalid(
                "sandbox.memory_mib",
                "must be 16 to 4096 (CPython needs about 10 MiB to start; wasm32 stops at 4 GiB)",
            );
        }
        if self.max_parallel == Some(0) {
            return invalid("sandbox.max_parallel", "is 0: use at least 1");
        }
        if self.fuel.is_some() && !self.fuel_metering {
            return invalid("sandbox.fuel", "needs sandbox.fuel_metering = true");
        }
        Ok(())
    }
}

/// Configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file or environment did not match the schema.
    #[error("configuration: {0} (see aetherflow.example.toml for every key)")]
    Load(#[from] config::ConfigError),
    /// A key file named by a `*_FILE` variable cannot be used.
    #[error("{var}={path}: {message}; point it at a readable file holding the key")]
    KeyFile {
        /// The variable.
        var: String,
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("configuration: `{key}` {message}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong and what to use.
        message: String,
    },
}

impl Settings {
    /// Loads settings from the defaults, then `file` (which must exist when given; otherwise
    /// `aetherflow.toml` in `dir` when present), then `AETHERFLOW_*` entries of `env`
    /// (`AETHERFLOW_RUN__CONCURRENCY=8` sets `run.concurrency`).
    pub fn load(
        file: Option<&Path>,
        dir: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut builder = config::Config::builder();
        match file {
            Some(path) => {
                builder = builder.add_source(config::File::from(path).required(true));
            }
            None => {
                let default = dir.join("aetherflow.toml");
                builder = builder.add_source(config::File::from(default).required(false));
            }
        }
        let prefixed: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("AETHERFLOW_") && k.contains("__"))
            .filter(|(k, _)| !SECRET_FILE_VARIABLES.iter().any(|(var, _)| var == k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        builder = builder.add_source(
            config::Environment::with_prefix("AETHERFLOW")
                .prefix_separator("_")
                .separator("__")
                .source(Some(prefixed)),
        );
        let mut settings: Settings = builder.build()?.try_deserialize()?;
        for (var, key) in SECRET_FILE_VARIABLES {
            let Some(path) = env.get(*var) else { continue };
            let slot = match *key {
                "redis.url" => &mut settings.redis.url,
                _ => &mut settings.server.store_url,
            };
            if slot.is_some() {
                return Err(SettingsError::Invalid {
                    key,
                    message: format!("is set twice, directly and through {var}: keep one"),
                });
            }
            let text = std::fs::read_to_string(path).map_err(|e| SettingsError::KeyFile {
                var: (*var).to_owned(),
                path: path.clone(),
                message: e.to_string(),
            })?;
            let value = text.trim();
            if value.is_empty() {
                return Err(SettingsError::KeyFile {
                    var: (*var).to_owned(),
                    path: path.clone(),
                    message: "the file is empty".into(),
                });
            }
            *slot = Some(SecretString::from(value.to_owned()));
        }
        settings.check()?;
        Ok(settings)
    }

    /// Checks ranges that the types alone do not.
    pub fn check(&self) -> Result<(), SettingsError> {
        self.sandbox.check()?;
        if self.queue.enabled && self.redis.url.is_none() {
            return Err(SettingsError::Invalid {
                key: "queue.enabled",
                message: "needs redis.url (AETHERFLOW_REDIS__URL): the queue lives in Redis".into(),
            });
        }
        if self.queue.max_len == 0
            || self.queue.visibility_secs < 3
            || self.queue.max_deliveries == 0
            || !(1..=1024).contains(&self.queue.worker_concurrency)
        {
            return Err(SettingsError::Invalid {
                key: "queue",
                message: format!(
                    "max_len ({}) and max_deliveries ({}) must be positive, worker_concurrency ({}) 1 to 1024 and visibility_secs ({}) at least 3",
                    self.queue.max_len,
                    self.queue.max_deliveries,
                    self.queue.worker_concurrency,
                    self.queue.visibility_secs
                ),
            });
        }
        if let Some(bad) =
            self.server.cors_origins.iter().find(|o| {
                o.contains('*') || !(o.starts_with("https://") || o.starts_with("http://"))
            })
        {
            return Err(SettingsError::Invalid {
                key: "server.cors_origins",
                message: format!(
                    "`{bad}` is not an origin: list each one as https://host[:port], never a wildcard"
                ),
            });
        }
        if !(1..=1024).contains(&self.run.concurrency) {
            return Err(SettingsError::Invalid {
                key: "run.concurrency",
                message: format!("is {}: use 1 to 1024", self.run.concurrency),
            });
        }
        if self.run.max_output_tokens == 0 {
            return Err(SettingsError::Invalid {
                key: "run.max_output_tokens",
                message: "is 0: use a positive number of tokens".into(),
            });
        }
        if let Some(budget) = &self.run.budget_usd
            && let Err(e) = aetherflow_domain::Money::parse_usd(budget)
        {
            return Err(SettingsError::Invalid {
                key: "run.budget_usd",
                message: e.to_string(),
            });
        }
        if let Err(message) = self.fallback.check() {
            return Err(SettingsError::Invalid {
                key: "fallback.chains",
                message,
            });
        }
        for (key, value) in [
            ("budget.day_usd", &self.budget.day_usd),
            ("budget.month_usd", &self.budget.month_usd),
        ] {
            if let Some(v) = value
                && let Err(e) = aetherflow_domain::Money::parse_usd(v)
            {
                return Err(SettingsError::Invalid {
                    key,
                    message: e.to_string(),
                });
            }
        }
        if !(self.alerts.factor.is_finite() && self.alerts.factor >= 1.0) {
            return Err(SettingsError::Invalid {
                key: "alerts.factor",
                message: format!(
                    "is {}: use a number of at least 1, e.g. 3",
                    self.alerts.factor
                ),
            });
        }
        if let Some(url) = &self.alerts.webhook_url
            && let Err(e) = crate::webhook::check_url(url)
        {
            return Err(SettingsError::Invalid {
                key: "alerts.webhook_url",
                message: e.to_string(),
            });
        }
        if self.retry.max_attempts == 0 {
            return Err(SettingsError::Invalid {
                key: "retry.max_attempts",
                message: "is 0: use 1 for no retries".into(),
            });
        }
        if !(0.0..=1.0).contains(&self.breaker.failure_rate) {
            return Err(SettingsError::Invalid {
                key: "breaker.failure_rate",
                message: format!(
                    "is {}: use a fraction from 0 to 1",
                    self.breaker.failure_rate
                ),
            });
        }
        if self.context.max_file_bytes == 0 || self.context.max_total_bytes == 0 {
            return Err(SettingsError::Invalid {
                key: "context.max_file_bytes",
                message: "and context.max_total_bytes must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Secret settings that may instead be read from a file a variable names (a Docker or
/// Kubernetes secret): the variable, and the setting it fills.
pub const SECRET_FILE_VARIABLES: &[(&str, &str)] = &[
    ("AETHERFLOW_REDIS__URL_FILE", "redis.url"),
    ("AETHERFLOW_SERVER__STORE_URL_FILE", "server.store_url"),
];

/// Each provider and the environment variables its keys are read from, in priority order.
pub const KEY_VARIABLES: &[(&str, &[&str])] = &[
    ("deepseek", &["DEEPSEEK_API_KEY"]),
    ("gemini", &["GEMINI_API_KEY", "GOOGLE_API_KEY"]),
    ("groq", &["GROQ_API_KEY"]),
    ("codestral", &["CODESTRAL_API_KEY", "MISTRAL_API_KEY"]),
    ("kimi", &["MOONSHOT_API_KEY", "KIMI_API_KEY", "KIMI_KEY"]),
    ("openai-compatible", &["OPENAI_COMPATIBLE_API_KEY"]),
];

/// Provider keys found in the environment. Several keys for one provider may be given
/// comma-separated; each gets an id (`deepseek#1`, `deepseek#2`) for reports and logs.
#[derive(Clone, Default)]
pub struct ProviderKeys {
    keys: BTreeMap<&'static str, Vec<ApiKey>>,
    files: BTreeMap<&'static str, PathBuf>,
}

/// Keys from one variable's text: separated by commas or new lines, each given an id such as
/// `deepseek#2`.
pub fn parse_keys(provider: &str, text: &str) -> Vec<ApiKey> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .enumerate()
        .map(|(i, k)| {
            ApiKey::new(
                format!("{provider}#{}", i + 1),
                SecretString::from(k.to_owned()),
            )
        })
        .collect()
}

/// Keys from a key file; `var` names the variable that pointed at it, for the error.
pub fn read_key_file(provider: &str, var: &str, path: &Path) -> Result<Vec<ApiKey>, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::KeyFile {
        var: var.to_owned(),
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let keys = parse_keys(provider, &text);
    if keys.is_empty() {
        return Err(SettingsError::KeyFile {
            var: var.to_owned(),
            path: path.display().to_string(),
            message: "the file holds no key".into(),
        });
    }
    Ok(keys)
}

impl ProviderKeys {
    /// Reads the variables of [`KEY_VARIABLES`] from `env`; the first non-empty one wins. Each
    /// variable may instead name a file with `<VAR>_FILE` (a Docker or Kubernetes secret such as
    /// `/run/secrets/deepseek_api_key`), holding keys separated by commas or new lines; such a
    /// file can be re-read at run time to rotate keys.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, SettingsError> {
        let mut keys = BTreeMap::new();
        let mut files = BTreeMap::new();
        for (provider, vars) in KEY_VARIABLES {
            let mut found = None;
            for var in *vars {
                if let Some(v) = env.get(*var).filter(|v| !v.trim().is_empty()) {
                    found = Some(parse_keys(provider, v));
                    break;
                }
                let file_var = format!("{var}_FILE");
                if let Some(path) = env.get(&file_var).filter(|p| !p.trim().is_empty()) {
                    let path = PathBuf::from(path.trim());
                    found = Some(read_key_file(provider, &file_var, &path)?);
                    files.insert(*provider, path);
                    break;
                }
            }
            if let Some(pool) = found.filter(|p| !p.is_empty()) {
                keys.insert(*provider, pool);
            }
        }
        Ok(ProviderKeys { keys, files })
    }

    /// The file a provider's keys came from, when they came from one.
    pub fn file(&self, provider: &str) -> Option<&Path> {
        self.files.get(provider).map(PathBuf::as_path)
    }

    /// Providers with at least one key, sorted.
    pub fn configured(&self) -> Vec<&'static str> {
        self.keys.keys().copied().collect()
    }

    /// The key pool of `provider`.
    pub fn get(&self, provider: &str) -> Option<&[ApiKey]> {
        self.keys.get(provider).map(Vec::as_slice)
    }

    /// True when no provider has a key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// What to do when no key is configured.
    pub fn missing_help() -> String {
        let vars: Vec<String> = KEY_VARIABLES
            .iter()
            .map(|(_, vars)| match vars {
                [one] => (*one).to_owned(),
                [first, rest @ ..] => format!("{first} (or {})", rest.join(", ")),
                [] => String::new(),
            })
            .collect();
        format!(
            "no provider API key is configured: set one of {} (in the environment or a .env \
             file), or a local server's providers.openai_compatible.base_url, or pass --offline \
             to use the built-in mock provider",
            vars.join(", ")
        )
    }
}

impl fmt::Debug for ProviderKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.keys
                    .iter()
                    .map(|(p, pool)| (p, pool.iter().map(ApiKey::id).collect::<Vec<_>>())),
            )
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_work_without_any_file() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Settings::load(None, dir.path(), &HashMap::new()).expect("defaults");
        assert_eq!(s.run.concurrency, 4);
        assert_eq!(s.run.mode, Mode::Build);
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(
            dir.path().join("aetherflow.toml"),
            "[run]\nconcurrency = 2\nmode = \"fast\"\n[log]\nlevel = \"debug\"\n",
        )
        .expect("write");
        let s = Settings::load(
            None,
            dir.path(),
            &env(&[("AETHERFLOW_RUN__CONCURRENCY", "9")]),
        )
        .expect("layered");
        assert_eq!(s.run.concurrency, 9, "environment beats the file");
        assert_eq!(s.run.mode, Mode::Fast, "file beats the default");
        assert_eq!(s.log.level, "debug");
    }

    #[test]
    fn bad_values_name_the_key() {
        let dir = tempfile::tempdir().expect("dir");
        let err = Settings::load(
            None,
            dir.path(),
            &env(&[("AETHERFLOW_RUN__CONCURRENCY", "0")]),
        )
        .expect_err("zero");
        assert!(err.to_string().contains("`run.concurrency` is 0"), "{err}");
        std::fs::write(
            dir.path().join("aetherflow.toml"),
            "[run]\nconcurency = 2\n",
        )
        .expect("write");
        let err = Settings::load(None, dir.path(), &HashMap::new()).expect_err("typo");
        assert!(err.to_string().contains("concurency"), "{err}");
    }

    #[test]
    fn an_explicit_config_file_must_exist() {
        let dir = tempfile::tempdir().expect("dir");
        let missing = dir.path().join("nope.toml");
        assert!(Settings::load(Some(&missing), dir.path(), &HashMap::new()).is_err());
    }

    #[test]
    fn keys_come_from_the_usual_variables_and_never_print() {
        let keys = ProviderKeys::from_env(&env(&[
            ("GOOGLE_API_KEY", "g-secret"),
            ("KIMI_KEY", "k-secret-1, k-secret-2"),
            ("GROQ_API_KEY", "  "),
        ]))
        .expect("keys");
        assert_eq!(keys.configured(), ["gemini", "kimi"]);
        let kimi = keys.get("kimi").expect("kimi pool");
        assert_eq!(kimi.len(), 2);
        assert_eq!(kimi[1].id(), "kimi#2");
        assert_eq!(kimi[1].expose(), "k-secret-2");
        let shown = format!("{keys:?}");
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn the_preferred_variable_wins() {
        let keys = ProviderKeys::from_env(&env(&[
            ("GEMINI_API_KEY", "first"),
            ("GOOGLE_API_KEY", "second"),
        ]))
        .expect("keys");
        assert_eq!(keys.get("gemini").expect("pool")[0].expose(), "first");
    }

    #[test]
    fn shared_state_urls_can_come_from_secret_files_and_never_twice() {
        use secrecy::ExposeSecret;
        let dir = tempfile::tempdir().expect("dir");
        let redis = dir.path().join("redis_url");
        let pg = dir.path().join("store_url");
        std::fs::write(&redis, "redis://:s3cret@redis:6379/0\n").expect("write");
        std::fs::write(&pg, "postgres://af:pw@db/af").expect("write");
        let settings = Settings::load(
            None,
            dir.path(),
            &env(&[
                ("AETHERFLOW_REDIS__URL_FILE", redis.to_str().expect("utf-8")),
                (
                    "AETHERFLOW_SERVER__STORE_URL_FILE",
                    pg.to_str().expect("utf-8"),
                ),
                ("AETHERFLOW_QUEUE__ENABLED", "true"),
            ]),
        )
        .expect("loads");
        assert_eq!(
            settings
                .redis
                .url
                .as_ref()
                .map(|u| u.expose_secret().to_owned()),
            Some("redis://:s3cret@redis:6379/0".to_owned()),
            "trimmed"
        );
        assert!(settings.server.store_url.is_some());
        assert!(settings.queue.enabled);
        let twice = Settings::load(
            None,
            dir.path(),
            &env(&[
                ("AETHERFLOW_REDIS__URL_FILE", redis.to_str().expect("utf-8")),
                ("AETHERFLOW_REDIS__URL", "redis://other"),
            ]),
        )
        .expect_err("two sources");
        assert!(twice.to_string().contains("keep one"), "{twice}");
        assert!(!twice.to_string().contains("s3cret"), "{twice}");
    }

    #[test]
    fn the_queue_needs_redis() {
        let dir = tempfile::tempdir().expect("dir");
        let err = Settings::load(
            None,
            dir.path(),
            &env(&[("AETHERFLOW_QUEUE__ENABLED", "true")]),
        )
        .expect_err("no redis");
        assert!(err.to_string().contains("needs redis.url"), "{err}");
    }

    #[test]
    fn keys_can_come_from_secret_files() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("deepseek_api_key");
        std::fs::write(&file, "sk-file-1\nsk-file-2\n").expect("write");
        let keys = ProviderKeys::from_env(&env(&[(
            "DEEPSEEK_API_KEY_FILE",
            file.to_str().expect("utf-8"),
        )]))
        .expect("keys");
        assert_eq!(keys.get("deepseek").expect("pool").len(), 2);
        assert_eq!(keys.file("deepseek"), Some(file.as_path()));
        let err = ProviderKeys::from_env(&env(&[("GROQ_API_KEY_FILE", "/nonexistent/groq")]))
            .expect_err("missing file");
        assert!(
            err.to_string()
                .starts_with("GROQ_API_KEY_FILE=/nonexistent/groq"),
            "{err}"
        );
    }

    #[test]
    fn missing_help_names_every_variable_and_offline() {
        let help = ProviderKeys::missing_help();
        for var in [
            "DEEPSEEK_API_KEY",
            "GOOGLE_API_KEY",
            "GROQ_API_KEY",
            "MISTRAL_API_KEY",
            "KIMI_KEY",
            "--offline",
        ] {
            assert!(help.contains(var), "{var} missing from: {help}");
        }
    }
}
