//! Shared state on Redis, so any number of `aetherflow-api` replicas and workers behave as one
//! system: budgets ([`budget::RedisSpend`]), rate limits ([`ratelimit::RedisRateLimiter`]) and
//! circuit breakers ([`breaker::RedisBreakers`]).
//!
//! Each piece implements a trait of `aetherflow-resilience`, whose in-process implementation stays
//! the default: nothing here is used unless `redis.url` is set. Every decision that must hold
//! across processes (check-and-reserve, a rate-limit grant, a breaker trip) is one Lua script, so
//! it is atomic in Redis and cannot interleave with another process's.
//!
//! Losing Redis: budgets fail closed (a call is refused, never sent unbudgeted); rate limits and
//! breakers fall back to the process's own state with a warning. The connection is re-made on
//! its own with a bounded backoff.

pub mod breaker;
pub mod budget;
pub mod cache;
pub mod events;
pub mod keys;
pub mod queue;
pub mod ratelimit;
pub mod signals;
#[cfg(feature = "testing")]
pub mod testing;

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// `[redis]`: the shared state of a multi-process deployment. Without `url`, everything stays in
/// each process (the single-node default).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[:password@]host:port[/db]` (or `rediss://` for TLS). A secret: it may hold the
    /// password, so it is never logged; [`RedisSettings::display_url`] shows host and port only.
    pub url: Option<SecretString>,
    /// Prefix of every key, so several deployments can share one Redis.
    pub namespace: String,
    /// How long a budget reservation outlives the process that made it, in seconds. Holders renew
    /// their leases every third of this while a call lasts.
    pub lease_secs: u64,
    /// Deadline of one Redis command, in milliseconds; past it the command counts as failed.
    pub timeout_ms: u64,
}

impl Default for RedisSettings {
    fn default() -> Self {
        RedisSettings {
            url: None,
            namespace: "aetherflow".into(),
            lease_secs: 60,
            timeout_ms: 1_000,
        }
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.display_url())
            .field("namespace", &self.namespace)
            .field("lease_secs", &self.lease_secs)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

impl RedisSettings {
    /// The URL without credentials (`redis://host:port/db`), for logs and errors.
    pub fn display_url(&self) -> Option<String> {
        self.url.as_ref().map(|u| redact(u.expose_secret()))
    }
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            match u.port() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => "(an unparsable URL)".into(),
    }
}

/// Redis could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// `redis.url` is not a Redis URL.
    #[error(
        "redis.url ({url}) is not a usable Redis URL: {reason}; write it as redis://[:password@]host:port[/db]"
    )]
    BadUrl {
        /// The URL without credentials.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// Called outside an async runtime (a programming error in the caller).
    #[error("the Redis connection must be made inside a tokio runtime")]
    NoRuntime,
}

/// A connection to the shared Redis, made lazily and re-made on its own after a failure
/// (bounded exponential backoff). Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct Shared {
    conn: ConnectionManager,
    namespace: String,
    lease: Duration,
    url: String,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("url", &self.url)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// A connection for `settings` (which must have a URL), made on first use: the process starts
    /// even when Redis is down, and `/ready` says so.
    pub fn connect(settings: &RedisSettings) -> Result<Self, RedisError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(RedisError::NoRuntime);
        }
        let url = settings.url.as_ref().ok_or_else(|| RedisError::BadUrl {
            url: String::new(),
            reason: "it is not set".into(),
        })?;
        let shown = redact(url.expose_secret());
        let client = redis::Client::open(url.expose_secret()).map_err(|e| RedisError::BadUrl {
            url: shown.clone(),
            reason: without_secrets(&e.to_string(), url.expose_secret()),
        })?;
        let timeout = Duration::from_millis(settings.timeout_ms.max(1));
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            RedisError::BadUrl {
                url: shown.clone(),
                reason: without_secrets(&e.to_string(), url.expose_secret()),
            }
        })?;
        Ok(Shared {
            conn,
            namespace: settings.namespace.clone(),
            lease: Duration::from_secs(settings.lease_secs.max(3)),
            url: shown,
        })
    }

    /// The server's URL without credentials.
    pub fn display_url(&self) -> &str {
        &self.url
    }

    /// Whether Redis answers a `PING` now (for `/ready`).
    pub async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| self.describe(&e))
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.namespace.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// A Redis error as one line that names the server but never its password.
    fn describe(&self, e: &redis::RedisError) -> String {
        format!(
            "Redis at {}: {}",
            self.url,
            e.to_string().replace('\n', " ")
        )
    }
}

fn without_secrets(message: &str, url: &str) -> String {
    let mut m = message.replace(url, "(redis.url)");
    if let Ok(u) = url::Url::parse(url)
        && let Some(p) = u.password()
        && !p.is_empty()
    {
        m = m.replace(p, "***");
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_password_in_the_url_never_shows() {
        let s = RedisSettings {
            url: Some(SecretString::from(
                "redis://:hunter2-secret@cache.internal:6380/2",
            )),
            ..RedisSettings::default()
        };
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("cache.internal:6380/2"), "{debug}");
        let shared = Shared::connect(&s).expect("a valid URL");
        assert!(!format!("{shared:?}").contains("hunter2"));
        assert_eq!(shared.display_url(), "redis://cache.internal:6380/2");
    }

    #[tokio::test]
    async fn a_url_that_is_not_redis_is_refused_with_the_fix() {
        let s = RedisSettings {
            url: Some(SecretString::from("http://user:pw-secret@example.com/")),
            ..RedisSettings::default()
        };
        let err = Shared::connect(&s).expect_err("not redis").to_string();
        assert!(err.contains("redis://"), "{err}");
        assert!(!err.contains("pw-secret"), "{err}");
    }

    #[test]
    fn outside_a_runtime_connect_says_so_instead_of_panicking() {
        let s = RedisSettings {
            url: Some(SecretString::from("redis://127.0.0.1:6379")),
            ..RedisSettings::default()
        };
        assert!(matches!(Shared::connect(&s), Err(RedisError::NoRuntime)));
    }
}
