//! The edge of the API: which browser origins may call it (CORS, deny by default) and which
//! `Host` names it answers to (trusted hosts).

use actix_cors::Cors;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::Next;

use crate::error::ApiError;

/// CORS for the configured origins only. With none, browsers on other origins get no access
/// (preflights are refused). Credentials are never allowed: the API takes bearer keys, not
/// cookies, so `*` with credentials (the original's setting) cannot happen.
pub fn cors(origins: &[String]) -> Cors {
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::HeaderName::from_static("last-event-id"),
        ])
        .expose_headers([
            header::LOCATION,
            header::RETRY_AFTER,
            header::HeaderName::from_static("x-ratelimit-limit"),
            header::HeaderName::from_static("x-ratelimit-remaining"),
        ])
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

/// Host names the server answers to (`server.allowed_hosts`); empty: any.
#[derive(Debug, Clone, Default)]
pub struct TrustedHosts(pub Vec<String>);

impl TrustedHosts {
    /// Whether the `Host` value (name, optionally with a port) is trusted.
    pub fn allows(&self, host: &str) -> bool {
        if self.0.is_empty() {
            return true;
        }
        let host = host.trim().to_ascii_lowercase();
        let name = if let Some(rest) = host.strip_prefix('[') {
            // `[::1]:8080` → `[::1]`
            rest.find(']').map_or(host.as_str(), |i| &host[..i + 2])
        } else {
            match host.rsplit_once(':') {
                Some((name, port))
                    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    name
                }
                _ => host.as_str(),
            }
        };
        self.0.iter().any(|allowed| {
            let allowed = allowed.to_ascii_lowercase();
            allowed == host || allowed == name
        })
    }
}

/// Middleware: 400 for a request whose `Host` is not trusted. Only the `Host` header (or the
/// HTTP/2 authority) counts; `X-Forwarded-Host` is the client's to forge. The probes
/// (`/health`, `/ready`) answer any host.
pub async fn trusted_hosts(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    // Probes come from orchestrators and load balancers by IP: they are exempt.
    let probe = matches!(request.path(), "/health" | "/healthz" | "/ready");
    if let Some(hosts) = request
        .app_data::<actix_web::web::Data<TrustedHosts>>()
        .filter(|_| !probe)
    {
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.to_string()))
            .unwrap_or_default();
        if !hosts.allows(&host) {
            return Err(ApiError::bad_request(
                "this server does not answer to that host name (server.allowed_hosts)",
            )
            .into());
        }
    }
    next.call(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_by_name_with_or_without_a_port() {
        let hosts = TrustedHosts(vec!["api.example.com".into(), "localhost:8080".into()]);
        assert!(hosts.allows("api.example.com"));
        assert!(hosts.allows("API.example.com:443"));
        assert!(hosts.allows("localhost:8080"));
        assert!(!hosts.allows("localhost:9090"));
        assert!(!hosts.allows("evil.example.com"));
        assert!(!hosts.allows("api.example.com.evil.net"));
        assert!(!hosts.allows(""));
        let v6 = TrustedHosts(vec!["[::1]".into()]);
        assert!(v6.allows("[::1]:8080") && v6.allows("[::1]") && !v6.allows("[::2]:80"));
        assert!(TrustedHosts::default().allows("anything"));
    }
}
