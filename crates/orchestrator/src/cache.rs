//! Exact-match response cache: the same request to the same provider and model gets the same
//! answer without a call. The key is a SHA-256 of the provider, the model and every field of
//! the request that reaches the provider (the prompt already contains the content of every
//! input file, so a changed file is a different key). There is deliberately no semantic
//! cache: the original's returned other plans' code.

use std::sync::Arc;
use std::time::Duration;

use aetherflow_provider::{ChatRequest, ChatResponse};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `[cache]`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheSettings {
    /// Whether answers are cached at all.
    pub enabled: bool,
    /// How long an answer stays, in seconds.
    pub ttl_secs: u64,
    /// Most answers kept.
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            enabled: true,
            ttl_secs: 3600,
            max_entries: 1000,
        }
    }
}

/// The cache; cheap to clone and share between runs. With a shared layer (Redis), answers
/// also go there and a miss here is looked up there.
#[derive(Clone)]
pub struct ResponseCache {
    entries: moka::sync::Cache<[u8; 32], Arc<ChatResponse>>,
    shared: Option<aetherflow_redis::cache::RedisCache>,
    /// After the shared layer fails it is skipped for [`SHARED_PAUSE`], so a lost Redis costs
    /// one timeout now and then, not one per request.
    shared_paused_until: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// How long the shared layer is skipped after it failed.
const SHARED_PAUSE: Duration = Duration::from_secs(5);

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.entries.entry_count())
            .finish()
    }
}

impl ResponseCache {
    /// A cache per `settings` (`None` when disabled).
    pub fn new(settings: &CacheSettings) -> Option<Self> {
        settings.enabled.then(|| ResponseCache {
            entries: moka::sync::Cache::builder()
                .max_capacity(settings.max_entries)
                .time_to_live(Duration::from_secs(settings.ttl_secs))
                .build(),
            shared: None,
            shared_paused_until: Arc::default(),
        })
    }

    fn shared_layer(&self) -> Option<&aetherflow_redis::cache::RedisCache> {
        let paused = self
            .shared_paused_until
            .lock()
            .map(|p| p.is_some_and(|until| std::time::Instant::now() < until))
            .unwrap_or(false);
        if paused { None } else { self.shared.as_ref() }
    }

    fn pause_shared(&self) {
        if let Ok(mut p) = self.shared_paused_until.lock() {
            *p = Some(std::time::Instant::now() + SHARED_PAUSE);
        }
    }

    /// Adds the shared layer behind the in-process one.
    #[must_use]
    pub fn with_shared(mut self, shared: aetherflow_redis::cache::RedisCache) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The cached answer: from this process, else from the shared layer (then kept here too).
    /// A shared layer that fails is a miss, never an error.
    pub async fn lookup(&self, key: &[u8; 32]) -> Option<Arc<ChatResponse>> {
        if let Some(hit) = self.entries.get(key) {
            return Some(hit);
        }
        let shared = self.shared_layer()?;
        match shared.get(key).await {
            Ok(Some(json)) => match serde_json::from_slice::<ChatResponse>(&json) {
                Ok(response) => {
                    let response = Arc::new(response);
                    self.entries.insert(*key, Arc::clone(&response));
                    Some(response)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a shared cached answer could not be read; ignored");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "shared response cache unavailable: misses for a few seconds");
                self.pause_shared();
                None
            }
        }
    }

    /// The key of `request` to `provider`. The step hint is left out: two steps asking the
    /// very same thing get the same answer.
    pub fn key(provider: &str, request: &ChatRequest) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(provider.as_bytes());
        hasher.update([0]);
        let mut keyed = request.clone();
        keyed.step = None;
        // Serialising a plain struct cannot fail; an empty key would only miss the cache.
        hasher.update(serde_json::to_vec(&keyed).unwrap_or_default());
        hasher.finalize().into()
    }

    /// The cached answer, if any.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<ChatResponse>> {
        self.entries.get(key)
    }

    /// Keeps an answer (and shares it, in the background, when there is a shared layer).
    pub fn put(&self, key: [u8; 32], response: ChatResponse) {
        if let Some(shared) = self.shared_layer()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
            && let Ok(json) = serde_json::to_vec(&response)
        {
            let (shared, this) = (shared.clone(), self.clone());
            rt.spawn(async move {
                if let Err(e) = shared.put(&key, &json).await {
                    tracing::debug!(error = %e, "an answer was not shared");
                    this.pause_shared();
                }
            });
        }
        self.entries.insert(key, Arc::new(response));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_provider::{FinishReason, Message, StepHint};

    fn request(prompt: &str, step: &str) -> ChatRequest {
        ChatRequest {
            model: "m".into(),
            messages: vec![Message::user(prompt)],
            step: Some(StepHint {
                step_id: step.into(),
                ..StepHint::default()
            }),
            ..ChatRequest::default()
        }
    }

    #[test]
    fn keys_depend_on_everything_sent_but_not_the_step_hint() {
        let a = ResponseCache::key("p", &request("hello", "s1"));
        assert_eq!(a, ResponseCache::key("p", &request("hello", "s2")));
        assert_ne!(a, ResponseCache::key("q", &request("hello", "s1")));
        assert_ne!(a, ResponseCache::key("p", &request("hello!", "s1")));
        let mut warmer = request("hello", "s1");
        warmer.temperature = Some(0.9);
        assert_ne!(a, ResponseCache::key("p", &warmer));
    }

    #[test]
    fn answers_come_back_until_disabled() {
        let cache = ResponseCache::new(&CacheSettings::default()).expect("enabled");
        let key = ResponseCache::key("p", &request("x", "s"));
        assert!(cache.get(&key).is_none());
        cache.put(
            key,
            ChatResponse {
                key_id: None,
                tool_calls: Vec::new(),
                model: "m".into(),
                text: "answer".into(),
                reasoning: None,
                finish_reason: FinishReason::Stop,
                usage: Default::default(),
            },
        );
        assert_eq!(
            cache.get(&key).map(|r| r.text.clone()).as_deref(),
            Some("answer")
        );
        assert!(
            ResponseCache::new(&CacheSettings {
                enabled: false,
                ..CacheSettings::default()
            })
            .is_none()
        );
    }
}
