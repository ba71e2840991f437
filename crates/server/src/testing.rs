//! A throwaway PostgreSQL for tests: Debian's `postgresql` server binaries (`initdb`,
//! `postgres`) in a fresh folder on a free loopback port, trusted local auth, no fsync. As root
//! (CI containers), the server runs as the `postgres` user through `setpriv`, since PostgreSQL
//! refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A PostgreSQL server for one test; stopped and deleted when dropped.
#[derive(Debug)]
pub struct TestPostgres {
    child: Option<Child>,
    url: String,
    _dir: tempfile::TempDir,
}

/// Why no PostgreSQL is available, with what to do about it.
pub fn missing_reason() -> String {
    "PostgreSQL's server binaries (initdb, postgres) were not found: apt-get install -y postgresql"
        .into()
}

fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").is_file() {
            return Some(dir);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `program args…`, as the `postgres` user when this process is root.
fn as_postgres(program: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl TestPostgres {
    /// A running server, or `None` when PostgreSQL is not installed. With
    /// `AETHERFLOW_REQUIRE_POSTGRES` set (as `.ci/run` does), a missing server is a panic.
    pub fn start() -> Option<TestPostgres> {
        let Some(bin) = bin_dir() else {
            if std::env::var_os("AETHERFLOW_REQUIRE_POSTGRES").is_some() {
                panic!("{}", missing_reason());
            }
            eprintln!("SKIPPED: {}", missing_reason());
            return None;
        };
        let root = is_root();
        let dir = tempfile::Builder::new()
            .prefix("aetherflow-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if root {
            let status = Command::new("chown")
                .args(["postgres:", &dir.path().to_string_lossy()])
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "chown of the test folder to postgres failed"
            );
        }
        let out = as_postgres(&bin.join("initdb"), root)
            .args(["-D", &data.to_string_lossy()])
            .args(["-A", "trust", "-U", "aetherflow", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let child = as_postgres(&bin.join("postgres"), root)
            .args(["-D", &data.to_string_lossy()])
            .args(["-p", &port.to_string()])
            .args(["-k", &dir.path().to_string_lossy()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        let server = TestPostgres {
            child: Some(child),
            url: format!("postgres://aetherflow@127.0.0.1:{port}/postgres"),
            _dir: dir,
        };
        let ready = bin.join("pg_isready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(&ready)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the test PostgreSQL on port {port} did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// Its URL (no password: local trust authentication).
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // Fast shutdown (SIGINT); SIGKILL if it lingers.
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
