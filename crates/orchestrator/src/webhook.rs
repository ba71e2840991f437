//! Posting usage alerts to a webhook as JSON.

use std::time::Duration;

use aetherflow_resilience::alerts::UsageAlert;

/// A webhook URL that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL breaks the rules for outbound URLs (https, or http to loopback only).
    #[error("alerts.webhook_url: {0}")]
    Url(String),
    /// The POST failed or was refused.
    #[error("alert webhook: {0}")]
    Post(String),
}

/// Checks a webhook URL: `https`, or `http` to a loopback address.
pub fn check_url(url: &str) -> Result<(), WebhookError> {
    aetherflow_providers::http::base_url(url)
        .map(|_| ())
        .map_err(|e| WebhookError::Url(e.to_string()))
}

/// POSTs `alert` as JSON (`{"source": "aetherflow", "alert": …}`), waiting at most 5 s.
pub async fn post_alert(url: &str, alert: &UsageAlert) -> Result<(), WebhookError> {
    check_url(url)?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| WebhookError::Post(e.to_string()))?;
    let response = client
        .post(url)
        .json(&serde_json::json!({"source": "aetherflow", "alert": alert}))
        .send()
        .await
        .map_err(|e| WebhookError::Post(e.without_url().to_string()))?;
    if !response.status().is_success() {
        return Err(WebhookError::Post(format!("HTTP {}", response.status())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_resilience::alerts::AlertKind;
    use wiremock::matchers::{body_partial_json, method};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn alerts_are_posted_as_json() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(body_partial_json(serde_json::json!({"source": "aetherflow", "alert": {"provider": "groq", "kind": "error_rate"}})))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        let alert = UsageAlert {
            provider: "groq".into(),
            kind: AlertKind::ErrorRate,
            current: 0.8,
            baseline: 0.01,
        };
        post_alert(&server.uri(), &alert).await.expect("posted");
    }

    #[test]
    fn remote_plain_http_is_refused() {
        assert!(check_url("http://198.51.100.7/hook").is_err());
        assert!(check_url("https://hooks.example.com/T000/B000").is_ok());
    }
}
