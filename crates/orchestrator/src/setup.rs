//! Building the provider set from settings and keys: one adapter per configured provider, the
//! default chosen by `providers.default` or by a fixed preference order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::UnboundedReceiver;

use aetherflow_providers::config::AdapterConfig;
use aetherflow_providers::http::{ConfigError, Timeouts};
use aetherflow_providers::keys::KeyPool;
use aetherflow_providers::prices::{PriceEntry, PriceTable};
use aetherflow_providers::{codestral, deepseek, gemini, groq, kimi, openai_compatible};
use std::collections::BTreeMap;

use crate::routing::{ProviderEntry, ProviderSet, canonical_provider_name};
use crate::settings::{ProviderKeys, ProviderSettings, ProvidersSettings, read_key_file};

/// The order in which a default provider is picked when `providers.default` is not set.
pub const PREFERENCE: [&str; 6] = [
    "deepseek",
    "gemini",
    "groq",
    "codestral",
    "kimi",
    "openai-compatible",
];

/// The providers could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An adapter's configuration is wrong.
    #[error("providers.{provider}: {source}")]
    Adapter {
        /// The provider.
        provider: String,
        /// What is wrong.
        source: ConfigError,
    },
    /// The price file or an override is wrong.
    #[error("{0}")]
    Prices(#[from] aetherflow_providers::prices::PriceError),
    /// A configured model has no price, so budgets and cost reports cannot work.
    #[error(
        "no price is known for {provider}/{model}: add [prices.\"{provider}/{model}\"] with input and output (USD per million tokens) to aetherflow.toml, or choose a listed model"
    )]
    UnknownPrice {
        /// The provider.
        provider: String,
        /// The model.
        model: String,
    },
    /// `providers.default` names a provider that is not configured.
    #[error(
        "providers.default = `{wanted}` is not configured (configured: {configured}); set its key or change the default"
    )]
    Default {
        /// The name given.
        wanted: String,
        /// What is configured.
        configured: String,
    },
}

/// A configured provider, for `providers list`.
#[derive(Debug, Clone)]
pub struct ConfiguredProvider {
    /// Canonical name.
    pub name: String,
    /// The adapter and model.
    pub entry: ProviderEntry,
    /// The key pool (absent for keyless local servers).
    pub keys: Option<Arc<KeyPool>>,
    /// The base URL in use.
    pub base_url: String,
}

fn timeouts(s: &ProviderSettings) -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(s.connect_timeout_ms),
        first_token: Duration::from_millis(s.first_token_timeout_ms),
        total: Duration::from_millis(s.total_timeout_ms),
    }
}

/// Every provider that has a key (or, for a local server, a base URL), in preference order.
pub fn configured_providers(
    settings: &ProvidersSettings,
    keys: &ProviderKeys,
) -> Result<Vec<ConfiguredProvider>, SetupError> {
    configured_providers_priced(settings, keys, &BTreeMap::new())
}

/// As [`configured_providers`], with price overrides (`[prices]`); a configured model without
/// a price is an error, except on a local OpenAI-compatible server (free unless priced).
pub fn configured_providers_priced(
    settings: &ProvidersSettings,
    keys: &ProviderKeys,
    price_overrides: &BTreeMap<String, PriceEntry>,
) -> Result<Vec<ConfiguredProvider>, SetupError> {
    let prices = Arc::new(PriceTable::with_overrides(price_overrides)?);
    let mut out = Vec::new();
    for name in PREFERENCE {
        let s = match name {
            "deepseek" => &settings.deepseek,
            "gemini" => &settings.gemini,
            "groq" => &settings.groq,
            "codestral" => &settings.codestral,
            "kimi" => &settings.kimi,
            _ => &settings.openai_compatible,
        };
        let pool = keys.get(name).map(|k| {
            KeyPool::new(name, k.to_vec()).map(|p| {
                p.with_rate_limit(std::num::NonZeroU32::new(s.requests_per_minute))
                    .with_token_limit(std::num::NonZeroU32::new(s.tokens_per_minute))
            })
        });
        let pool = match pool {
            Some(Ok(p)) => Some(Arc::new(p)),
            Some(Err(source)) => {
                return Err(SetupError::Adapter {
                    provider: name.into(),
                    source,
                });
            }
            None => None,
        };
        let local = name == "openai-compatible";
        if pool.is_none() && !(local && s.base_url.is_some()) {
            continue;
        }
        let config = AdapterConfig {
            base_url: s.base_url.clone(),
            timeouts: timeouts(s),
            keys: pool.clone(),
            prices: Some(Arc::clone(&prices)),
        };
        let err = |source| SetupError::Adapter {
            provider: name.into(),
            source,
        };
        let (provider, default_model, default_base): (
            Arc<dyn aetherflow_provider::Provider>,
            &str,
            &str,
        ) = match name {
            "deepseek" => (
                Arc::new(deepseek::adapter(config).map_err(err)?),
                deepseek::DEFAULT_MODEL,
                deepseek::DEFAULT_BASE_URL,
            ),
            "gemini" => (
                Arc::new(gemini::adapter(config).map_err(err)?),
                gemini::DEFAULT_MODEL,
                gemini::DEFAULT_BASE_URL,
            ),
            "groq" => (
                Arc::new(groq::adapter(config).map_err(err)?),
                groq::DEFAULT_MODEL,
                groq::DEFAULT_BASE_URL,
            ),
            "codestral" => (
                Arc::new(codestral::adapter(config).map_err(err)?),
                codestral::DEFAULT_MODEL,
                codestral::DEFAULT_BASE_URL,
            ),
            "kimi" => (
                Arc::new(kimi::adapter(config).map_err(err)?),
                kimi::DEFAULT_MODEL,
                kimi::DEFAULT_BASE_URL,
            ),
            _ => (
                Arc::new(openai_compatible::adapter(config).map_err(err)?),
                "default",
                "",
            ),
        };
        let model = s.model.clone().unwrap_or_else(|| default_model.to_owned());
        if provider.price(&model).is_none() {
            return Err(SetupError::UnknownPrice {
                provider: name.to_owned(),
                model,
            });
        }
        out.push(ConfiguredProvider {
            name: name.to_owned(),
            entry: ProviderEntry {
                provider,
                model: s.model.clone().unwrap_or_else(|| default_model.to_owned()),
            },
            keys: pool,
            base_url: s
                .base_url
                .clone()
                .unwrap_or_else(|| default_base.to_owned()),
        });
    }
    Ok(out)
}

/// The per-provider concurrency limits of `settings`.
pub fn provider_limits(settings: &ProvidersSettings) -> crate::ProviderLimits {
    crate::ProviderLimits::default()
        .with("deepseek", settings.deepseek.max_concurrency)
        .with("gemini", settings.gemini.max_concurrency)
        .with("groq", settings.groq.max_concurrency)
        .with("codestral", settings.codestral.max_concurrency)
        .with("kimi", settings.kimi.max_concurrency)
        .with(
            "openai-compatible",
            settings.openai_compatible.max_concurrency,
        )
}

/// The provider set for online runs, or `None` when nothing is configured.
pub fn provider_set(
    settings: &ProvidersSettings,
    keys: &ProviderKeys,
) -> Result<Option<ProviderSet>, SetupError> {
    provider_set_from(settings, &configured_providers(settings, keys)?)
}

/// The provider set over providers already configured.
pub fn provider_set_from(
    settings: &ProvidersSettings,
    configured: &[ConfiguredProvider],
) -> Result<Option<ProviderSet>, SetupError> {
    let Some(first) = configured.first() else {
        return Ok(None);
    };
    let default = match &settings.default {
        Some(wanted) => {
            let wanted = canonical_provider_name(wanted);
            configured
                .iter()
                .find(|c| c.name == wanted)
                .ok_or_else(|| SetupError::Default {
                    wanted: wanted.clone(),
                    configured: configured
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?
        }
        None => first,
    };
    let mut set = ProviderSet::new(&default.name, default.entry.clone());
    for c in configured {
        set = set.with(&c.name, c.entry.clone());
    }
    if settings.default.is_some() {
        set = set.preferring_default();
    }
    Ok(Some(set))
}

struct Watched {
    provider: String,
    path: PathBuf,
    pool: Arc<KeyPool>,
    modified: Option<SystemTime>,
}

/// Re-reads key files (`*_API_KEY_FILE`) into their pools, so keys rotate without a restart:
/// on demand (the binaries send a trigger on SIGHUP) and when a file's modification time
/// changes. Calls in flight keep the key they started with.
pub struct KeyReloader {
    watched: Vec<Watched>,
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl KeyReloader {
    /// Watches every configured provider whose keys came from a file.
    pub fn new(configured: &[ConfiguredProvider], keys: &ProviderKeys) -> Self {
        let watched = configured
            .iter()
            .filter_map(|c| {
                let path = keys.file(&c.name)?.to_path_buf();
                Some(Watched {
                    provider: c.name.clone(),
                    modified: modified(&path),
                    path,
                    pool: Arc::clone(c.keys.as_ref()?),
                })
            })
            .collect();
        KeyReloader { watched }
    }

    /// True when no provider's keys come from a file.
    pub fn is_empty(&self) -> bool {
        self.watched.is_empty()
    }

    /// Reloads the files that changed (or all of them with `force`); returns the providers
    /// reloaded. A file that cannot be read or holds no key leaves the pool as it was.
    pub fn reload(&mut self, force: bool) -> Vec<String> {
        let mut reloaded = Vec::new();
        for w in &mut self.watched {
            let now = modified(&w.path);
            if !force && now == w.modified {
                continue;
            }
            w.modified = now;
            match read_key_file(&w.provider, "key file", &w.path)
                .map_err(|e| e.to_string())
                .and_then(|keys| w.pool.replace(keys).map_err(|e| e.to_string()))
            {
                Ok(()) => {
                    tracing::info!(provider = %w.provider, keys = ?w.pool.ids(), "keys reloaded");
                    reloaded.push(w.provider.clone());
                }
                Err(error) => {
                    tracing::warn!(provider = %w.provider, %error, "key reload failed; keeping the current keys");
                }
            }
        }
        reloaded
    }

    /// Reloads changed files every `poll`, and all files whenever `trigger` fires, until the
    /// trigger's senders are gone.
    pub async fn watch(mut self, poll: Duration, mut trigger: UnboundedReceiver<()>) {
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    self.reload(false);
                }
                fired = trigger.recv() => match fired {
                    Some(()) => {
                        self.reload(true);
                    }
                    None => break,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn keys(pairs: &[(&str, &str)]) -> ProviderKeys {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        ProviderKeys::from_env(&env).expect("keys")
    }

    #[test]
    fn nothing_configured_means_no_set() {
        let set = provider_set(&ProvidersSettings::default(), &keys(&[])).expect("ok");
        assert!(set.is_none());
    }

    #[test]
    fn the_default_follows_preference_or_configuration() {
        let k = keys(&[("GROQ_API_KEY", "gsk_1"), ("GEMINI_API_KEY", "g_1")]);
        let set = provider_set(&ProvidersSettings::default(), &k)
            .expect("ok")
            .expect("set");
        assert_eq!(set.names(), ["gemini", "groq"]);
        let settings = ProvidersSettings {
            default: Some("groq".into()),
            ..ProvidersSettings::default()
        };
        assert!(provider_set(&settings, &k).is_ok());
        let settings = ProvidersSettings {
            default: Some("kimi".into()),
            ..ProvidersSettings::default()
        };
        let err = provider_set(&settings, &k).expect_err("kimi has no key");
        assert!(
            err.to_string().contains("configured: gemini, groq"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn key_files_reload_on_change_and_on_trigger() {
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("groq_api_key");
        std::fs::write(&file, "gsk_old_0000000001\n").expect("write");
        let env: HashMap<String, String> =
            HashMap::from([("GROQ_API_KEY_FILE".to_owned(), file.display().to_string())]);
        let keys = ProviderKeys::from_env(&env).expect("keys");
        let configured = configured_providers(&ProvidersSettings::default(), &keys).expect("ok");
        let pool = Arc::clone(configured[0].keys.as_ref().expect("pool"));
        let mut reloader = KeyReloader::new(&configured, &keys);
        assert!(!reloader.is_empty());
        assert!(reloader.reload(false).is_empty(), "nothing changed yet");

        std::fs::write(&file, "gsk_new_0000000001, gsk_new_0000000002").expect("write");
        // Some file systems keep whole-second timestamps: force makes the test independent.
        assert_eq!(reloader.reload(true), ["groq"]);
        let status = pool.status();
        assert_eq!(status.len(), 2);
        assert_eq!(status[0].masked, "gsk_***0001");
        assert_eq!(pool.acquire().expect("key").expose(), "gsk_new_0000000001");

        // A broken file keeps the keys that work.
        std::fs::write(&file, "").expect("write");
        assert!(reloader.reload(true).is_empty());
        assert_eq!(pool.status().len(), 2);

        // The watcher reloads on a trigger and stops when the trigger closes.
        std::fs::write(&file, "gsk_third_000000003").expect("write");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(reloader.watch(Duration::from_secs(3600), rx));
        tx.send(()).expect("send");
        drop(tx);
        task.await.expect("watcher ends");
        assert_eq!(pool.ids(), ["groq#1"]);
        assert_eq!(pool.acquire().expect("key").expose(), "gsk_third_000000003");
    }

    #[test]
    fn a_model_without_a_price_is_refused_until_priced() {
        let mut settings = ProvidersSettings::default();
        settings.deepseek.model = Some("deepseek-v9-secret".into());
        let k = keys(&[("DEEPSEEK_API_KEY", "sk-1")]);
        let err = configured_providers(&settings, &k).expect_err("unknown price");
        assert!(
            err.to_string()
                .contains("[prices.\"deepseek/deepseek-v9-secret\"]"),
            "{err}"
        );
        let overrides = BTreeMap::from([(
            "deepseek/deepseek-v9-secret".to_owned(),
            PriceEntry {
                input: "1".into(),
                cached_input: None,
                output: "2".into(),
                context_window: None,
                aliases: vec![],
                source: None,
            },
        )]);
        let configured = configured_providers_priced(&settings, &k, &overrides).expect("priced");
        let price = configured[0]
            .entry
            .provider
            .price("deepseek-v9-secret")
            .expect("price");
        assert_eq!(price.output_per_mtok.as_micros(), 2_000_000);
    }

    #[test]
    fn a_local_server_is_enabled_by_its_base_url() {
        let mut settings = ProvidersSettings::default();
        settings.openai_compatible.base_url = Some("http://127.0.0.1:11434/v1".into());
        settings.openai_compatible.model = Some("llama3.2".into());
        let configured = configured_providers(&settings, &keys(&[])).expect("ok");
        assert_eq!(configured.len(), 1);
        assert_eq!(configured[0].entry.model, "llama3.2");
        settings.openai_compatible.base_url = Some("http://203.0.113.9/v1".into());
        let err = configured_providers(&settings, &keys(&[])).expect_err("remote http");
        assert!(
            err.to_string().contains("providers.openai-compatible"),
            "{err}"
        );
    }
}

/// The spend caps could not be set from the settings and the ledger.
#[derive(Debug, thiserror::Error)]
pub enum BudgetSetupError {
    /// A cap is not an amount.
    #[error("budget.{key}: {message}")]
    Cap {
        /// `day_usd` or `month_usd`.
        key: &'static str,
        /// Why.
        message: String,
    },
    /// The ledger could not be read.
    #[error(transparent)]
    Ledger(#[from] aetherflow_resilience::ledger::LedgerError),
}

/// The Redis of a multi-process deployment, when `redis.url` is set: connected lazily (the
/// process starts while Redis is down, and `/ready` says so), reconnected on its own.
pub fn shared_state(
    settings: &crate::settings::Settings,
) -> Result<Option<aetherflow_redis::Shared>, aetherflow_redis::RedisError> {
    match &settings.redis.url {
        Some(_) => aetherflow_redis::Shared::connect(&settings.redis).map(Some),
        None => Ok(None),
    }
}

/// Budgets with the day and month caps of `settings`, seeded with today's and this month's
/// spend from the cost ledger at `ledger`, so the caps hold across processes and restarts.
///
/// With `shared` (Redis), spend lives there and every process using it shares the caps; this
/// process's ledger then only seeds a scope Redis has never seen.
pub fn budgets(
    settings: &crate::settings::Settings,
    ledger: &std::path::Path,
    shared: Option<&aetherflow_redis::Shared>,
) -> Result<aetherflow_resilience::budget::Budgets, BudgetSetupError> {
    use aetherflow_domain::Money;
    use aetherflow_resilience::budget::{Budgets, Scope};
    let parse = |key: &'static str, value: Option<&String>| {
        value
            .map(|v| Money::parse_usd(v))
            .transpose()
            .map_err(|e| BudgetSetupError::Cap {
                key,
                message: e.to_string(),
            })
    };
    let day = parse("day_usd", settings.budget.day_usd.as_ref())?;
    let month = parse("month_usd", settings.budget.month_usd.as_ref())?;
    let budgets = match shared {
        Some(shared) => Budgets::shared(Arc::new(aetherflow_redis::budget::RedisSpend::new(
            shared.clone(),
        ))),
        None => Budgets::new(),
    };
    if day.is_none() && month.is_none() {
        return Ok(budgets);
    }
    // Every day and month after today is capped too (a server runs for longer than a day).
    budgets.set_period_caps(day, month);
    let now = chrono::Utc::now();
    let today = now.format("%Y-%m-%d").to_string();
    let this_month = now.format("%Y-%m").to_string();
    let (records, _) = aetherflow_resilience::ledger::read_ledger(ledger)?;
    let spent = |prefix: &str| -> Money {
        records
            .iter()
            .filter(|r| r.at.format("%Y-%m-%d").to_string().starts_with(prefix))
            .map(|r| r.cost)
            .sum()
    };
    if let Some(cap) = day {
        let scope = Scope::Day(today.clone());
        budgets.seed(scope.clone(), spent(&today));
        budgets.set_cap(scope, Some(cap));
    }
    if let Some(cap) = month {
        let scope = Scope::Month(this_month.clone());
        budgets.seed(scope.clone(), spent(&this_month));
        budgets.set_cap(scope, Some(cap));
    }
    Ok(budgets)
}

/// Retries, breakers, fallbacks, per-provider limits, usage alerts and the response cache from
/// `settings`, around `budgets` and an optional cost ledger: what every run of an orchestrator
/// shares, the same for the CLI and the API server.
///
/// With `shared` (Redis), breaker state is shared with every process using it.
pub fn resilience(
    settings: &crate::settings::Settings,
    budgets: aetherflow_resilience::budget::Budgets,
    ledger: Option<Arc<aetherflow_resilience::ledger::CostLedger>>,
    cache: bool,
    shared: Option<&aetherflow_redis::Shared>,
) -> crate::Resilience {
    let mut breakers = aetherflow_resilience::breaker::Breakers::new(settings.breaker);
    if let Some(shared) = shared {
        breakers = breakers.with_store(Arc::new(aetherflow_redis::breaker::RedisBreakers::new(
            shared.clone(),
        )));
    }
    crate::Resilience {
        retry: settings.retry,
        breakers: Arc::new(breakers),
        budgets,
        fallback: settings.fallback.clone(),
        ledger,
        provider_limits: provider_limits(&settings.providers),
        monitor: Some(Arc::new(aetherflow_resilience::alerts::UsageMonitor::new(
            settings.alerts.clone(),
        ))),
        cache: if cache {
            crate::cache::ResponseCache::new(&settings.cache).map(|c| match shared {
                Some(shared) => c.with_shared(aetherflow_redis::cache::RedisCache::new(
                    shared.clone(),
                    std::time::Duration::from_secs(settings.cache.ttl_secs),
                    settings.cache.max_entries,
                )),
                None => c,
            })
        } else {
            None
        },
    }
}
