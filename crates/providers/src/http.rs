//! HTTP plumbing shared by the adapters: base-URL rules, one pooled client per provider,
//! timeouts, bounded error bodies and wait hints (`Retry-After`, Go durations).

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use aetherflow_provider::{ProviderError, TimeoutPhase};
use reqwest::header::HeaderMap;
use url::Url;

/// Deadlines for one provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To establish the connection.
    pub connect: Duration,
    /// From sending the request to the response head (non-streaming) or the first event
    /// (streaming); also the longest silence allowed between two stream events.
    pub first_token: Duration,
    /// For the whole call.
    pub total: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_token: Duration::from_secs(60),
            total: Duration::from_secs(600),
        }
    }
}

/// A configuration problem with an adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The base URL cannot be used.
    #[error("base URL `{url}`: {message}")]
    BaseUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong and what to write instead.
        message: String,
    },
    /// The adapter has no key to use.
    #[error("{provider}: no API key configured; set its key variable (see .env.example)")]
    NoKey {
        /// The provider.
        provider: String,
    },
    /// The HTTP client could not be built.
    #[error("{provider}: cannot build the HTTP client: {message}")]
    Client {
        /// The provider.
        provider: String,
        /// Why.
        message: String,
    },
}

/// Checks a configured base URL: `https://` anywhere, plain `http://` only on loopback, no
/// credentials, query or fragment. Returns it without a trailing slash.
pub fn base_url(raw: &str) -> Result<Url, ConfigError> {
    let bad = |message: &str| ConfigError::BaseUrl {
        url: raw.to_owned(),
        message: message.to_owned(),
    };
    let mut url = Url::parse(raw.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(bad(
                "plain http is only allowed for loopback servers (localhost, 127.0.0.1, ::1); use https",
            ));
        }
        other => return Err(bad(&format!("scheme `{other}` is not http(s)"))),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(
            "credentials in the URL are refused; configure the key instead",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("remove the query string and fragment"));
    }
    let trimmed = url.path().trim_end_matches('/').to_owned();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Joins a base URL and a path such as `/chat/completions`.
pub fn endpoint(base: &Url, path: &str) -> String {
    format!("{}{}", base.as_str().trim_end_matches('/'), path)
}

/// One pooled client for one provider: rustls, a connect timeout, and redirects followed only
/// within the same host (a key must never be sent elsewhere).
pub fn client(provider: &str, timeouts: &Timeouts) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(timeouts.connect)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .is_some_and(|first| first.host_str() == attempt.url().host_str());
            if same_host && attempt.previous().len() < 3 {
                attempt.follow()
            } else {
                attempt.stop()
            }
        }))
        .user_agent(concat!("aetherflow/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Client {
            provider: provider.to_owned(),
            message: e.to_string(),
        })
}

/// A transport-level failure as a typed error (never includes the URL's secrets: keys travel in
/// headers only).
pub fn transport_error(error: reqwest::Error, timeouts: &Timeouts) -> ProviderError {
    if error.is_timeout() {
        let phase = if error.is_connect() {
            TimeoutPhase::Connect
        } else {
            TimeoutPhase::Total
        };
        let after = if error.is_connect() {
            timeouts.connect
        } else {
            timeouts.total
        };
        return ProviderError::Timeout { phase, after };
    }
    ProviderError::Transport {
        message: error.without_url().to_string(),
    }
}

/// Error bodies are read up to this many bytes.
pub const MAX_ERROR_BODY: usize = 64 * 1024;

/// Reads an error body, bounded.
pub async fn error_body(response: reqwest::Response) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    use futures::StreamExt;
    while let Some(Ok(chunk)) = stream.next().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses a Go duration such as `2m59.56s`, `7.66s`, `42ms`, `6m0s`, `1h2m`, `500us`.
pub fn go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if text == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn base_urls_must_be_https_or_loopback_http() {
        assert!(base_url("https://api.deepseek.com/").is_ok());
        assert_eq!(
            base_url("https://api.deepseek.com/v1/")
                .map(|u| u.to_string())
                .ok(),
            Some("https://api.deepseek.com/v1".to_owned())
        );
        assert!(base_url("http://127.0.0.1:11434/v1").is_ok());
        assert!(base_url("http://localhost:8000").is_ok());
        assert!(base_url("http://[::1]:8000").is_ok());
        for bad in [
            "http://api.example.com/v1",
            "http://10.0.0.5:8000",
            "ftp://x",
            "https://user:pw@api.x.com",
            "https://api.x.com/?key=abc",
            "not a url",
        ] {
            assert!(base_url(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn go_durations_parse_like_groq_sends_them() {
        assert_eq!(
            go_duration("2m59.56s"),
            Some(Duration::from_millis(179_560))
        );
        assert_eq!(go_duration("7.66s"), Some(Duration::from_millis(7_660)));
        assert_eq!(go_duration("42ms"), Some(Duration::from_millis(42)));
        assert_eq!(go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(go_duration("1h2m"), Some(Duration::from_secs(3_720)));
        assert_eq!(
            go_duration("54m43.2s"),
            Some(Duration::from_millis(3_283_200))
        );
        for bad in ["", "s", "12", "1x", "-1s"] {
            assert_eq!(go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("17"));
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(17))
        );
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert(
            "retry-after",
            HeaderValue::from_str(&later).expect("header"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
