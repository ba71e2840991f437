//! The sandbox itself: one engine, one compiled CPython, one `InstancePre`, many short runs.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use wasmtime::{
    Config, Engine, InstancePre, Linker, OptLevel, ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::SandboxError;
use crate::cache::{self, ModuleSource};
use crate::guard;
use crate::pipe::CappedPipe;
use crate::runtime::{RuntimeFiles, default_compiled_dir, default_runtime_dir};

/// How often the engine's epoch advances: the granularity of the wall-clock limit and of the
/// scratch-size check.
const TICK: Duration = Duration::from_millis(10);
/// Where the guest sees its standard library (CPython's default prefix is `/usr/local`).
const GUEST_STDLIB: &str = "/usr/local/lib";
/// The guest's working folder: the per-run scratch folder is the guest's whole root, so relative
/// paths work and every other absolute path (`/etc/passwd`) simply does not exist.
const GUEST_ROOT: &str = "/";
/// The guest path of the code to run.
pub const MAIN_FILE: &str = "main.py";

/// How a [`Sandbox`] is built (once per process).
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Folder holding `python-3.11.1.wasm` and `python311.zip`.
    pub runtime_dir: PathBuf,
    /// Folder for the compiled module (default: beside `runtime_dir`, never inside it).
    pub compiled_dir: Option<PathBuf>,
    /// Where per-run scratch folders are created (default: the system temporary folder).
    pub scratch_root: Option<PathBuf>,
    /// Runs allowed at once through [`Sandbox::run`]; others wait their turn.
    pub max_parallel: usize,
    /// Compile with fuel metering, so [`Limits::fuel`] can be used (costs some speed).
    pub fuel_metering: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            runtime_dir: default_runtime_dir(),
            compiled_dir: None,
            scratch_root: None,
            max_parallel: std::thread::available_parallelism().map_or(2, |n| n.get()),
            fuel_metering: false,
        }
    }
}

/// Per-run limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock limit, enforced within about one tick (10 ms).
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Cap on the guest's linear memory in bytes; growing past it fails inside the guest
    /// (CPython raises `MemoryError`) and the outcome says `out_of_memory`.
    pub memory_bytes: u64,
    /// Instruction budget; needs [`SandboxConfig::fuel_metering`].
    pub fuel: Option<u64>,
    /// Bytes kept of stdout and of stderr each; the rest is dropped and flagged.
    pub output_bytes: usize,
    /// Cap on the bytes in the scratch folder.
    pub scratch_bytes: u64,
    /// Cap on the number of entries in the scratch folder.
    pub scratch_files: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            memory_bytes: 256 << 20,
            fuel: None,
            output_bytes: 1 << 20,
            scratch_bytes: 16 << 20,
            scratch_files: 512,
        }
    }
}

mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// A file placed in the scratch folder before the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Relative path inside the scratch folder (no `..`, not absolute).
    pub path: String,
    /// Its bytes.
    pub contents: Vec<u8>,
}

/// One run: code for `/main.py`, its arguments, stdin, input files and limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRequest {
    /// Python source run as `__main__`.
    pub code: String,
    /// `sys.argv[1:]`.
    pub argv: Vec<String>,
    /// Bytes on stdin.
    pub stdin: Vec<u8>,
    /// Files the code may read (and overwrite) in its scratch folder.
    pub files: Vec<InputFile>,
    /// Limits for this run.
    pub limits: Limits,
    /// Scratch files to read back after the run (missing ones are left out).
    #[serde(default)]
    pub collect: Vec<String>,
}

impl RunRequest {
    /// A request running `code` with default limits and nothing else.
    pub fn code(code: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            ..Self::default()
        }
    }
}

/// Time spent in each phase of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTimings {
    /// Scratch folder set-up and WASI context.
    #[serde(with = "duration_ms")]
    pub prepare: Duration,
    /// Instantiating the pre-linked module.
    #[serde(with = "duration_ms")]
    pub instantiate: Duration,
    /// Interpreter start-up and the user's code.
    #[serde(with = "duration_ms")]
    pub execute: Duration,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// The process exit code; `None` when the host stopped the run (timeout, trap, fuel).
    pub exit_code: Option<i32>,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// Wall-clock time of the whole run.
    #[serde(with = "duration_ms")]
    pub duration: Duration,
    /// Stopped by the wall-clock limit.
    pub timed_out: bool,
    /// A memory growth was refused by the memory cap.
    pub out_of_memory: bool,
    /// Stopped because the fuel ran out.
    pub fuel_exhausted: bool,
    /// Stopped because the scratch folder outgrew its cap.
    pub scratch_exceeded: bool,
    /// Some stdout was dropped.
    pub stdout_truncated: bool,
    /// Some stderr was dropped.
    pub stderr_truncated: bool,
    /// A WebAssembly trap other than the limits above (stack overflow, unreachable, …).
    pub trap: Option<String>,
    /// Phase timings.
    pub timings: RunTimings,
    /// The largest linear memory the guest reached, in bytes.
    #[serde(default)]
    pub memory_peak_bytes: u64,
    /// The files of [`RunRequest::collect`] the run left behind.
    #[serde(default)]
    pub collected: Vec<InputFile>,
}

impl RunOutcome {
    /// Exit code 0 and no limit hit.
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
            && !self.timed_out
            && !self.out_of_memory
            && !self.fuel_exhausted
            && !self.scratch_exceeded
            && self.trap.is_none()
    }

    /// A one-line reason for a failure, for feedback and reports.
    pub fn failure_summary(&self) -> Option<String> {
        if self.success() {
            return None;
        }
        Some(if self.timed_out {
            "timed out".to_owned()
        } else if self.out_of_memory {
            "ran out of memory (the sandbox's memory cap)".to_owned()
        } else if self.fuel_exhausted {
            "ran out of fuel (instruction budget)".to_owned()
        } else if self.scratch_exceeded {
            "wrote more to disk than the scratch cap allows".to_owned()
        } else if let Some(trap) = &self.trap {
            format!("trapped: {trap}")
        } else {
            format!("exited with code {}", self.exit_code.unwrap_or(-1))
        })
    }
}

/// How the sandbox's one-time set-up went.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The compiled-module cache file for this engine configuration.
    pub compiled_path: PathBuf,
    /// Whether the module came from the cache.
    pub source: ModuleSource,
    /// Hash checks of the runtime files.
    pub verify: Duration,
    /// Loading (or compiling) the module.
    pub load: Duration,
    /// Linking and `InstancePre`.
    pub link: Duration,
}

/// Why the host stopped a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Timeout,
    ScratchFull,
}

/// The error a host callback returns to unwind the guest; the reason is in [`Guest::stop`].
#[derive(Debug)]
pub(crate) struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stopped by the sandbox")
    }
}

impl std::error::Error for Stopped {}

/// Per-run store data.
pub(crate) struct Guest {
    wasi: WasiP1Ctx,
    memory_cap: usize,
    memory_peak: usize,
    out_of_memory: bool,
    pub(crate) deadline: Instant,
    pub(crate) stop: Option<Stop>,
    scratch: PathBuf,
    scratch_bytes: u64,
    scratch_files: usize,
    pub(crate) clock: guard::RunClock,
}

impl ResourceLimiter for Guest {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory_peak = self.memory_peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl Guest {
    fn scratch_over_cap(&self) -> bool {
        let mut bytes = 0u64;
        let mut entries = 0usize;
        let mut stack = vec![self.scratch.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in read.flatten() {
                entries += 1;
                if entries > self.scratch_files {
                    return true;
                }
                let Ok(meta) = entry.path().symlink_metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    stack.push(entry.path());
                } else {
                    bytes = bytes.saturating_add(meta.len());
                    if bytes > self.scratch_bytes {
                        return true;
                    }
                }
            }
        }
        false
    }
}

struct Inner {
    engine: Engine,
    pre: InstancePre<Guest>,
    files: RuntimeFiles,
    fuel_metering: bool,
    scratch_root: PathBuf,
    load: LoadReport,
}

/// The sandbox's configuration and, once built, the loaded interpreter.
struct Cell {
    config: SandboxConfig,
    inner: std::sync::OnceLock<Arc<Inner>>,
    /// One build at a time.
    building: std::sync::Mutex<()>,
    permits: Arc<Semaphore>,
}

/// CPython 3.11 for WASI, ready to run code. Cheap to clone; safe to use from many threads.
#[derive(Clone)]
pub struct Sandbox {
    cell: Arc<Cell>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("runtime", &self.cell.config.runtime_dir)
            .field("load", &self.load_report())
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Verifies the runtime, loads (or compiles once) the interpreter and links it.
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let sandbox = Self::lazy(config);
        sandbox.inner()?;
        Ok(sandbox)
    }

    /// A sandbox that loads the interpreter on its first run: a server that may never run
    /// generated code does not hold the interpreter (about 20 MB) in memory. A runtime that
    /// cannot be loaded then fails that run, with the same error `new` gives.
    pub fn lazy(config: SandboxConfig) -> Self {
        Sandbox {
            cell: Arc::new(Cell {
                permits: Arc::new(Semaphore::new(config.max_parallel.max(1))),
                config,
                inner: std::sync::OnceLock::new(),
                building: std::sync::Mutex::new(()),
            }),
        }
    }

    /// The loaded interpreter, built now if needed.
    fn inner(&self) -> Result<Arc<Inner>, SandboxError> {
        if let Some(inner) = self.cell.inner.get() {
            return Ok(Arc::clone(inner));
        }
        let _one_at_a_time = self
            .cell
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(inner) = self.cell.inner.get() {
            return Ok(Arc::clone(inner));
        }
        let inner = Arc::new(Self::build(&self.cell.config)?);
        Ok(Arc::clone(self.cell.inner.get_or_init(|| inner)))
    }

    fn build(config: &SandboxConfig) -> Result<Inner, SandboxError> {
        let started = Instant::now();
        let files = RuntimeFiles::verify(&config.runtime_dir)?;
        let verify = started.elapsed();

        let mut wasm_config = Config::new();
        wasm_config
            .epoch_interruption(true)
            .consume_fuel(config.fuel_metering)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&wasm_config).map_err(|e| SandboxError::Engine {
            what: "creating the wasmtime engine",
            detail: format!("{e:#}"),
        })?;
        let compiled_dir = config
            .compiled_dir
            .clone()
            .unwrap_or_else(|| default_compiled_dir(&files.dir));
        let (module, source, load) = cache::load(&engine, &files, &compiled_dir)?;
        let compiled_path = cache::cache_path(&engine, &compiled_dir);

        let link_started = Instant::now();
        let pre = link(&engine, &module).map_err(|e| SandboxError::Engine {
            what: "linking WASI into the CPython module",
            detail: format!("{e:#}"),
        })?;
        let link = link_started.elapsed();
        spawn_ticker(&engine).map_err(|e| SandboxError::Io {
            what: "starting the sandbox's epoch thread (the wall-clock limit)".to_owned(),
            source: e,
        })?;

        Ok(Inner {
            engine,
            pre,
            files,
            fuel_metering: config.fuel_metering,
            scratch_root: config
                .scratch_root
                .clone()
                .unwrap_or_else(std::env::temp_dir),
            load: LoadReport {
                compiled_path,
                source,
                verify,
                load,
                link,
            },
        })
    }

    /// How the one-time set-up went, once it has happened.
    pub fn load_report(&self) -> Option<&LoadReport> {
        self.cell.inner.get().map(|inner| &inner.load)
    }

    /// Runs on tokio's blocking pool, at most `max_parallel` at once.
    pub async fn run(&self, request: RunRequest) -> Result<RunOutcome, SandboxError> {
        let permit = Arc::clone(&self.cell.permits)
            .acquire_owned()
            .await
            .map_err(|_| SandboxError::Engine {
                what: "waiting for a sandbox slot",
                detail: "the sandbox is shutting down".to_owned(),
            })?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            this.run_blocking(&request)
        })
        .await
        .map_err(|e| SandboxError::Engine {
            what: "running the sandbox task",
            detail: e.to_string(),
        })?
    }

    /// Runs on the calling thread (not counted against `max_parallel`).
    pub fn run_blocking(&self, request: &RunRequest) -> Result<RunOutcome, SandboxError> {
        let inner = self.inner()?;
        let inner = &*inner;
        let limits = request.limits;
        if limits.fuel.is_some() && !inner.fuel_metering {
            return Err(SandboxError::InvalidRequest(
                "a fuel limit needs a sandbox built with fuel metering (sandbox.fuel_metering = true)"
                    .to_owned(),
            ));
        }
        let started = Instant::now();
        let scratch = tempfile::Builder::new()
            .prefix("aetherflow-sandbox-")
            .tempdir_in(&inner.scratch_root)
            .map_err(|e| SandboxError::Io {
                what: format!(
                    "creating a scratch folder in {}",
                    inner.scratch_root.display()
                ),
                source: e,
            })?;
        write_inputs(scratch.path(), request)?;

        let stdout = CappedPipe::new(limits.output_bytes);
        let stderr = CappedPipe::new(limits.output_bytes);
        // No host variable reaches the guest: these are its whole environment. (`-I` would
        // also ignore them, but then CPython cannot be told where its home is and warns.)
        let env = [
            ("PYTHONHOME", "/usr/local"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
            ("PYTHONNOUSERSITE", "1"),
            ("PYTHONHASHSEED", "0"),
        ];
        let mut args = vec!["python".to_owned(), "-s".to_owned()];
        args.push(format!("/{MAIN_FILE}"));
        args.extend(request.argv.iter().cloned());
        let clock = guard::RunClock(Instant::now());
        let mut builder = WasiCtxBuilder::new();
        builder
            .monotonic_clock(clock)
            .allow_blocking_current_thread(true)
            .stdin(MemoryInputPipe::new(request.stdin.clone()))
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .args(&args)
            .envs(&env);
        builder
            .preopened_dir(&inner.files.dir, GUEST_STDLIB, FsPerms::ReadOnly)
            .and_then(|b| b.preopened_dir(scratch.path(), GUEST_ROOT, FsPerms::ReadWrite))
            .map_err(|e| SandboxError::Engine {
                what: "mounting the sandbox folders",
                detail: format!("{e:#}"),
            })?;
        let guest = Guest {
            wasi: builder.build_p1(),
            memory_cap: usize::try_from(limits.memory_bytes).unwrap_or(usize::MAX),
            memory_peak: 0,
            out_of_memory: false,
            deadline: started + limits.timeout,
            stop: None,
            scratch: scratch.path().to_path_buf(),
            scratch_bytes: limits.scratch_bytes,
            scratch_files: limits.scratch_files,
            clock,
        };
        let mut store = Store::new(&inner.engine, guest);
        store.limiter(|g| g);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut ctx| {
            let guest = ctx.data_mut();
            if Instant::now() >= guest.deadline {
                guest.stop = Some(Stop::Timeout);
                return Err(Stopped.into());
            }
            if guest.scratch_over_cap() {
                guest.stop = Some(Stop::ScratchFull);
                return Err(Stopped.into());
            }
            Ok(UpdateDeadline::Continue(1))
        });
        if inner.fuel_metering {
            let fuel = limits.fuel.unwrap_or(u64::MAX);
            store.set_fuel(fuel).map_err(|e| SandboxError::Engine {
                what: "setting the fuel",
                detail: format!("{e:#}"),
            })?;
        }
        let prepare = started.elapsed();

        let instantiated = Instant::now();
        let result = inner.pre.instantiate(&mut store).and_then(|instance| {
            let instantiate = instantiated.elapsed();
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            Ok((instantiate, start))
        });
        let (instantiate, call) = match result {
            Ok((instantiate, start)) => {
                let executed = Instant::now();
                let call = start.call(&mut store, ());
                (instantiate, Some((call, executed.elapsed())))
            }
            Err(e) => (instantiated.elapsed(), Some((Err(e), Duration::ZERO))),
        };
        let (call, execute) = call.unwrap_or((Ok(()), Duration::ZERO));

        let guest = store.data();
        let mut outcome = RunOutcome {
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            duration: Duration::ZERO,
            timed_out: guest.stop == Some(Stop::Timeout),
            out_of_memory: guest.out_of_memory,
            fuel_exhausted: false,
            scratch_exceeded: guest.stop == Some(Stop::ScratchFull),
            stdout_truncated: false,
            stderr_truncated: false,
            trap: None,
            timings: RunTimings {
                prepare,
                instantiate,
                execute,
            },
            memory_peak_bytes: u64::try_from(guest.memory_peak).unwrap_or(u64::MAX),
            collected: Vec::new(),
        };
        match call {
            Ok(()) => outcome.exit_code = Some(0),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    outcome.exit_code = Some(exit.0);
                } else if e.downcast_ref::<Stopped>().is_some() {
                    // The reason is already in the flags.
                } else if e.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
                    outcome.fuel_exhausted = true;
                } else if !outcome.out_of_memory {
                    outcome.trap = Some(trap_message(&e));
                }
            }
        }
        drop(store);
        let (out, out_cut) = stdout.take();
        let (err, err_cut) = stderr.take();
        outcome.stdout = String::from_utf8_lossy(&out).into_owned();
        outcome.stderr = String::from_utf8_lossy(&err).into_owned();
        outcome.stdout_truncated = out_cut;
        outcome.stderr_truncated = err_cut;
        outcome.collected = collect(scratch.path(), &request.collect, limits.scratch_bytes);
        if let Err(e) = scratch.close() {
            tracing::warn!(error = %e, "could not delete a sandbox scratch folder");
        }
        outcome.duration = started.elapsed();
        Ok(outcome)
    }
}

/// A trap's reason without wasmtime's backtrace (which names guest functions, not user lines).
fn trap_message(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:?}"),
    }
}

fn link(engine: &Engine, module: &wasmtime::Module) -> wasmtime::Result<InstancePre<Guest>> {
    let mut linker: Linker<Guest> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |g: &mut Guest| &mut g.wasi)?;
    linker.allow_shadowing(true);
    linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", guard::poll_oneoff)?;
    linker.instantiate_pre(module)
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped.
fn spawn_ticker(engine: &Engine) -> std::io::Result<()> {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("sandbox-epoch".to_owned())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .map(drop)
}

fn write_inputs(root: &Path, request: &RunRequest) -> Result<(), SandboxError> {
    let mut files: Vec<(&str, &[u8])> = vec![(MAIN_FILE, request.code.as_bytes())];
    files.extend(
        request
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.contents.as_slice())),
    );
    for (path, contents) in files {
        let relative = safe_relative(path)?;
        let target = root.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| SandboxError::Io {
                what: format!("creating {}", parent.display()),
                source: e,
            })?;
        }
        std::fs::write(&target, contents).map_err(|e| SandboxError::Io {
            what: format!("writing {}", target.display()),
            source: e,
        })?;
    }
    Ok(())
}

/// Reads back the requested scratch files: regular files only (a symlink the guest made is not
/// followed), each at most `cap` bytes.
fn collect(root: &Path, paths: &[String], cap: u64) -> Vec<InputFile> {
    paths
        .iter()
        .filter_map(|path| {
            let target = root.join(safe_relative(path).ok()?);
            let meta = target.symlink_metadata().ok()?;
            if !meta.is_file() || meta.len() > cap {
                return None;
            }
            let contents = std::fs::read(&target).ok()?;
            Some(InputFile {
                path: path.clone(),
                contents,
            })
        })
        .collect()
}

fn safe_relative(path: &str) -> Result<&Path, SandboxError> {
    let p = Path::new(path);
    let ok = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.contains('\0');
    if ok {
        Ok(p)
    } else {
        Err(SandboxError::InvalidRequest(format!(
            "input file path {path:?} must be relative, without `..` or `.` parts"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_paths_must_stay_inside_the_scratch_folder() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "./a", "a\0b"] {
            assert!(safe_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(safe_relative("data/input.txt").is_ok());
    }

    #[test]
    fn outcome_summary_names_the_limit_that_was_hit() {
        let mut outcome = RunOutcome {
            exit_code: Some(0),
            stdout: String::new(),
            stderr: String::new(),
            duration: Duration::ZERO,
            timed_out: false,
            out_of_memory: false,
            fuel_exhausted: false,
            scratch_exceeded: false,
            stdout_truncated: false,
            stderr_truncated: false,
            trap: None,
            timings: RunTimings::default(),
            memory_peak_bytes: 0,
            collected: Vec::new(),
        };
        assert!(outcome.success());
        assert_eq!(outcome.failure_summary(), None);
        outcome.exit_code = None;
        outcome.timed_out = true;
        assert_eq!(outcome.failure_summary().as_deref(), Some("timed out"));
        outcome.timed_out = false;
        outcome.exit_code = Some(3);
        assert_eq!(
            outcome.failure_summary().as_deref(),
            Some("exited with code 3")
        );
    }
}
