//! Which provider and model answer a step: the configured default, or the step's own
//! `context.provider` when that provider is configured.
//!
//! Retries, fallback chains and the original's routing tables by size and mode belong to the
//! resilience crate; this module only picks the first target.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use aetherflow_domain::plan::Step;
use aetherflow_domain::run::Mode;
use aetherflow_provider::Provider;
use aetherflow_resilience::fallback::FallbackPolicy;

/// The canonical name for a provider as written in plans and config (`moonshot` → `kimi`,
/// `mistral` → `codestral`, case-insensitive).
pub fn canonical_provider_name(name: &str) -> String {
    let lower = name.trim().to_ascii_lowercase();
    match lower.as_str() {
        "moonshot" | "kimi" => "kimi".to_owned(),
        "mistral" | "codestral" => "codestral".to_owned(),
        "google" | "gemini" => "gemini".to_owned(),
        // The settings section is `[providers.openai_compatible]`; the provider's name has a dash.
        "openai_compatible" | "openai-compatible" | "local" => "openai-compatible".to_owned(),
        _ => lower,
    }
}

/// A configured provider and the model it uses by default.
#[derive(Clone)]
pub struct ProviderEntry {
    /// The adapter.
    pub provider: Arc<dyn Provider>,
    /// The model asked for when a step does not say.
    pub model: String,
}

impl fmt::Debug for ProviderEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderEntry")
            .field("provider", &self.provider.name())
            .field("model", &self.model)
            .finish()
    }
}

/// Where one step's request goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// The provider's canonical name.
    pub name: String,
    /// The adapter and model.
    pub entry: ProviderEntry,
}

/// The providers a run may use.
#[derive(Debug, Clone)]
pub struct ProviderSet {
    entries: BTreeMap<String, ProviderEntry>,
    default: String,
    preferred: Option<String>,
    offline: bool,
}

impl ProviderSet {
    /// A set whose default is `name`.
    pub fn new(name: &str, entry: ProviderEntry) -> Self {
        let name = canonical_provider_name(name);
        ProviderSet {
            entries: BTreeMap::from([(name.clone(), entry)]),
            default: name,
            preferred: None,
            offline: false,
        }
    }

    /// An offline set: every step goes to `entry` (the mock), whatever its `context.provider`.
    pub fn offline(entry: ProviderEntry) -> Self {
        ProviderSet {
            offline: true,
            ..ProviderSet::new(aetherflow_provider::mock::MOCK_PROVIDER, entry)
        }
    }

    /// Adds another provider a step may ask for.
    pub fn with(mut self, name: &str, entry: ProviderEntry) -> Self {
        self.entries.insert(canonical_provider_name(name), entry);
        self
    }

    /// Puts the default provider first in every chain (`providers.default` set explicitly).
    pub fn preferring_default(mut self) -> Self {
        self.preferred = Some(self.default.clone());
        self
    }

    /// The configured names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.entries.keys().map(String::as_str).collect()
    }

    /// True when every step is answered by the offline mock.
    pub fn is_offline(&self) -> bool {
        self.offline
    }

    /// The targets `step` tries in order: its `context.provider` override, the explicit
    /// default, then the fallback chain for its mode, type and size — only configured
    /// providers, each once, at most `1 + max_fallbacks`. Offline, only the mock.
    pub fn chain(
        &self,
        step: &Step,
        mode: Mode,
        estimated_tokens: u64,
        policy: &FallbackPolicy,
    ) -> Result<Vec<Target>, String> {
        let first = self.route(step)?;
        if self.offline {
            return Ok(vec![first]);
        }
        let leading = step.context.provider.is_some().then(|| first.name.clone());
        Ok(self.targets_in_order(leading, mode, step.step_type, estimated_tokens, policy))
    }

    /// `leading` (a step's own provider), the explicit default, the policy's chain, then the
    /// default: configured providers only, each once, at most `1 + max_fallbacks`.
    fn targets_in_order(
        &self,
        leading: Option<String>,
        mode: Mode,
        step_type: aetherflow_domain::plan::StepType,
        estimated_tokens: u64,
        policy: &FallbackPolicy,
    ) -> Vec<Target> {
        let mut names: Vec<String> = leading.into_iter().collect();
        if let Some(p) = &self.preferred {
            names.push(p.clone());
        }
        names.extend(
            policy
                .chain(mode, step_type, estimated_tokens)
                .iter()
                .map(|n| canonical_provider_name(n)),
        );
        names.push(self.default.clone());
        let mut targets: Vec<Target> = Vec::new();
        for name in names {
            if targets.iter().any(|t| t.name == name) {
                continue;
            }
            if let Some(entry) = self.entries.get(&name) {
                targets.push(Target {
                    name,
                    entry: entry.clone(),
                });
            }
        }
        targets.truncate(1 + policy.max_fallbacks);
        targets
    }

    /// The targets a gate-keeper review tries: `preferred` (Kimi by default) when configured,
    /// then the default provider. Offline, the mock.
    pub fn reviewers(&self, preferred: &str) -> Vec<Target> {
        self.preferring_targets(preferred)
    }

    /// `preferred` when it is configured, then the default provider; offline, the mock. For
    /// requests outside plans that want a particular provider (a review, a design analysis).
    pub fn preferring_targets(&self, preferred: &str) -> Vec<Target> {
        let mut names = Vec::new();
        if !self.offline {
            names.push(canonical_provider_name(preferred));
        }
        names.push(self.default.clone());
        names.dedup();
        names
            .into_iter()
            .filter_map(|name| {
                let entry = self.entries.get(&name)?.clone();
                Some(Target { name, entry })
            })
            .collect()
    }

    /// The configured entry named `name` (any spelling `canonical_provider_name` knows).
    pub fn entry(&self, name: &str) -> Option<&ProviderEntry> {
        self.entries.get(&canonical_provider_name(name))
    }

    /// Every configured provider with its entry, sorted by name.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &ProviderEntry)> {
        self.entries.iter().map(|(n, e)| (n.as_str(), e))
    }

    /// The default provider's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// The targets a request outside any plan tries in `mode`: the chain the fallback policy
    /// gives code generation of that size, then the default provider; offline, the mock.
    pub fn chain_for(
        &self,
        mode: Mode,
        step_type: aetherflow_domain::plan::StepType,
        estimated_tokens: u64,
        policy: &FallbackPolicy,
    ) -> Vec<Target> {
        if self.offline {
            return self.preferring_targets(&self.default);
        }
        self.targets_in_order(None, mode, step_type, estimated_tokens, policy)
    }

    /// The first target for `step`, or why there is none.
    pub fn route(&self, step: &Step) -> Result<Target, String> {
        let wanted = match (&step.context.provider, self.offline) {
            (Some(p), false) => canonical_provider_name(p),
            _ => self.default.clone(),
        };
        match self.entries.get(&wanted) {
            Some(entry) => Ok(Target {
                name: wanted,
                entry: entry.clone(),
            }),
            None => Err(format!(
                "context.provider `{wanted}` is not configured (configured: {}); set its API key \
                 or remove the override",
                self.names().join(", ")
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aetherflow_domain::plan::{PlanFormat, parse_plan};
    use aetherflow_provider::mock::MockProvider;

    fn step(provider: Option<&str>) -> Step {
        let ctx = provider.map_or(String::new(), |p| {
            format!(r#","context":{{"provider":"{p}"}}"#)
        });
        let text = format!(
            r#"{{"task_id":"t","description":"d","steps":[{{"id":"a","description":"x","type":"analysis"{ctx}}}]}}"#
        );
        parse_plan(&text, PlanFormat::Json)
            .expect("parses")
            .0
            .steps
            .remove(0)
    }

    fn entry(model: &str) -> ProviderEntry {
        ProviderEntry {
            provider: Arc::new(MockProvider::default()),
            model: model.into(),
        }
    }

    #[test]
    fn step_override_is_honoured_when_configured() {
        let set = ProviderSet::new("deepseek", entry("deepseek-chat"))
            .with("Gemini", entry("gemini-2.5-flash"));
        assert_eq!(set.route(&step(None)).expect("default").name, "deepseek");
        let t = set.route(&step(Some("gemini"))).expect("override");
        assert_eq!(
            (t.name.as_str(), t.entry.model.as_str()),
            ("gemini", "gemini-2.5-flash")
        );
    }

    #[test]
    fn unconfigured_override_says_what_is_configured() {
        let set = ProviderSet::new("deepseek", entry("deepseek-chat"));
        let err = set
            .route(&step(Some("codestral")))
            .expect_err("not configured");
        assert!(
            err.contains("`codestral` is not configured (configured: deepseek)"),
            "{err}"
        );
    }

    #[test]
    fn offline_sends_everything_to_the_mock() {
        let set = ProviderSet::offline(entry("mock-1"));
        assert_eq!(set.route(&step(Some("gemini"))).expect("mock").name, "mock");
    }

    #[test]
    fn chains_put_the_override_first_and_keep_only_configured_providers() {
        let set = ProviderSet::new("deepseek", entry("deepseek-chat"))
            .with("gemini", entry("gemini-2.5-flash"))
            .with("kimi", entry("kimi-k2.6"));
        let policy = FallbackPolicy::default();
        let names = |s: &Step| -> Vec<String> {
            set.chain(s, Mode::Build, 500, &policy)
                .expect("chain")
                .into_iter()
                .map(|t| t.name)
                .collect()
        };
        // Analysis prefers gemini, then deepseek, kimi (codestral is not configured).
        assert_eq!(names(&step(None)), ["gemini", "deepseek", "kimi"]);
        assert_eq!(names(&step(Some("kimi"))), ["kimi", "gemini", "deepseek"]);
        let short = FallbackPolicy {
            max_fallbacks: 1,
            ..FallbackPolicy::default()
        };
        assert_eq!(
            set.chain(&step(None), Mode::Build, 500, &short)
                .expect("chain")
                .len(),
            2
        );
        let preferring = set.clone().preferring_default();
        let first = preferring
            .chain(&step(None), Mode::Build, 500, &policy)
            .expect("chain");
        assert_eq!(first[0].name, "deepseek");
    }

    #[test]
    fn provider_aliases_are_canonical() {
        assert_eq!(canonical_provider_name("Moonshot"), "kimi");
        assert_eq!(canonical_provider_name("mistral"), "codestral");
        assert_eq!(canonical_provider_name("groq"), "groq");
        assert_eq!(
            canonical_provider_name("openai_compatible"),
            "openai-compatible"
        );
    }
}
