//! A throwaway Redis for tests: `redis-server` from the system (Debian's `redis-server`
//! package) on a free loopback port, or the server named by `AETHERFLOW_TEST_REDIS_URL`.
//! Each [`TestRedis`] gets its own namespace, so tests sharing one server do not meet.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use secrecy::SecretString;

use crate::RedisSettings;

/// A Redis server for one test; stopped when dropped (if this process started it).
#[derive(Debug)]
pub struct TestRedis {
    child: Option<Child>,
    url: String,
    port: Option<u16>,
    namespace: String,
}

/// Why no Redis is available, with what to do about it.
pub fn missing_reason() -> String {
    "redis-server was not found: install it (apt-get install -y redis-server) or set AETHERFLOW_TEST_REDIS_URL=redis://127.0.0.1:PORT".into()
}

impl TestRedis {
    /// A running Redis, or `None` when there is none to start. When `AETHERFLOW_REQUIRE_REDIS`
    /// is set (as `.ci/run` does), a missing server is a panic, so CI cannot pass without the
    /// shared-state tests.
    pub fn start() -> Option<TestRedis> {
        let namespace = format!("test-{:016x}", fastrand_u64());
        if let Ok(url) = std::env::var("AETHERFLOW_TEST_REDIS_URL") {
            return Some(TestRedis {
                child: None,
                url,
                port: None,
                namespace,
            });
        }
        let Some(port) = free_port() else {
            panic!("no free loopback port for a test Redis");
        };
        let spawned = spawn_server(port);
        let child = match spawned {
            Ok(c) => c,
            Err(_) if std::env::var_os("AETHERFLOW_REQUIRE_REDIS").is_some() => {
                panic!("{}", missing_reason())
            }
            Err(_) => {
                eprintln!("SKIPPED: {}", missing_reason());
                return None;
            }
        };
        let redis = TestRedis {
            child: Some(child),
            url: format!("redis://127.0.0.1:{port}"),
            port: Some(port),
            namespace,
        };
        redis.wait_ready();
        Some(redis)
    }

    fn wait_ready(&self) {
        let Some(port) = self.port else { return };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the test Redis on port {port} did not start within 10 s");
    }

    /// Its URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its namespace: a fresh one per test.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Settings that point at it, with a short lease for tests.
    pub fn settings(&self) -> RedisSettings {
        RedisSettings {
            url: Some(SecretString::from(self.url.clone())),
            namespace: self.namespace.clone(),
            lease_secs: 3,
            timeout_ms: 500,
        }
    }

    /// Stops the server (to test losing Redis); [`TestRedis::restart`] brings it back on the
    /// same port. Only for servers this process started.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on its port after [`TestRedis::stop`].
    pub fn restart(&mut self) {
        let Some(port) = self.port else { return };
        if self.child.is_some() {
            return;
        }
        let child = spawn_server(port).expect("redis-server restarts");
        self.child = Some(child);
        self.wait_ready();
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `redis-server` on loopback `port`, with nothing written to disk.
fn spawn_server(port: u16) -> std::io::Result<Child> {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn free_port() -> Option<u16> {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .ok()
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}
