//! Fallback chains: which providers a step tries, in order. The defaults reproduce the
//! original tool's routing — by mode (FAST / BUILD / DOUBLE-CHECK), by what the step does, and
//! by size (< 10k, 10k–50k, ≥ 50k estimated tokens) — as recorded in its real plans
//! (`expected_routing`: analysis → Gemini, code generation → DeepSeek, refactoring →
//! Codestral; FAST prefers Groq; large prompts go to the million-token windows).

use std::collections::BTreeMap;

use aetherflow_domain::plan::{StepBehaviour, StepType};
use aetherflow_domain::run::Mode;
use serde::Deserialize;

/// Size class of a step by estimated tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeTier {
    /// Under 10 000 tokens.
    Small,
    /// 10 000 to 49 999 tokens.
    Medium,
    /// 50 000 tokens and more.
    Large,
}

impl SizeTier {
    /// The tier of `tokens`.
    pub fn of(tokens: u64) -> SizeTier {
        match tokens {
            0..10_000 => SizeTier::Small,
            10_000..50_000 => SizeTier::Medium,
            _ => SizeTier::Large,
        }
    }
}

/// The built-in chain for a mode, behaviour and size.
pub fn default_chain(
    mode: Mode,
    behaviour: StepBehaviour,
    tier: SizeTier,
) -> &'static [&'static str] {
    use StepBehaviour::*;
    if tier == SizeTier::Large {
        return match mode {
            Mode::Fast => &["gemini", "deepseek", "kimi"],
            Mode::Build | Mode::DoubleCheck => &["gemini", "deepseek", "kimi", "codestral"],
        };
    }
    match (mode, behaviour) {
        (Mode::Fast, _) if tier == SizeTier::Medium => &["gemini", "groq", "deepseek", "kimi"],
        (Mode::Fast, _) => &["groq", "gemini", "deepseek", "kimi"],
        (_, Generate) => &["deepseek", "codestral", "gemini", "kimi", "groq"],
        (_, Refactor) => &["codestral", "deepseek", "gemini", "kimi", "groq"],
        (_, Patch) => &["codestral", "deepseek", "gemini", "kimi"],
        (_, Analyse) => &["gemini", "deepseek", "kimi", "codestral"],
    }
}

/// Chains and depth, configurable under `[fallback]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackPolicy {
    /// Providers tried after the first one, at most.
    pub max_fallbacks: usize,
    /// Chains replacing the defaults, keyed `"<mode>.<step type>"`, where either part may be
    /// `*` (e.g. `"build.refactoring" = ["codestral", "deepseek"]`, `"fast.*" = ["groq"]`).
    pub chains: BTreeMap<String, Vec<String>>,
}

impl Default for FallbackPolicy {
    fn default() -> Self {
        FallbackPolicy {
            max_fallbacks: 3,
            chains: BTreeMap::new(),
        }
    }
}

impl FallbackPolicy {
    /// The chain for a step: a configured one (most specific key first), else the default.
    pub fn chain(&self, mode: Mode, step_type: StepType, estimated_tokens: u64) -> Vec<String> {
        let keys = [
            format!("{}.{}", mode.as_str(), step_type.as_str()),
            format!("{}.*", mode.as_str()),
            format!("*.{}", step_type.as_str()),
            "*.*".to_owned(),
        ];
        for key in &keys {
            if let Some(chain) = self.chains.get(key) {
                return chain.clone();
            }
        }
        default_chain(mode, step_type.behaviour(), SizeTier::of(estimated_tokens))
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Checks the configured keys, so a typo fails at start-up.
    pub fn check(&self) -> Result<(), String> {
        for key in self.chains.keys() {
            let Some((mode, step)) = key.split_once('.') else {
                return Err(format!(
                    "fallback.chains key `{key}`: write `<mode>.<step type>`, e.g. `build.refactoring`"
                ));
            };
            if mode != "*" && mode.parse::<Mode>().is_err() {
                return Err(format!(
                    "fallback.chains key `{key}`: unknown mode `{mode}` (fast, build, double-check or *)"
                ));
            }
            if step != "*" && StepType::parse(step).is_none() {
                return Err(format!(
                    "fallback.chains key `{key}`: unknown step type `{step}`"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_follow_the_original_thresholds() {
        assert_eq!(SizeTier::of(9_999), SizeTier::Small);
        assert_eq!(SizeTier::of(10_000), SizeTier::Medium);
        assert_eq!(SizeTier::of(49_999), SizeTier::Medium);
        assert_eq!(SizeTier::of(50_000), SizeTier::Large);
    }

    #[test]
    fn defaults_match_the_real_plans_expected_routing() {
        let p = FallbackPolicy::default();
        assert_eq!(p.chain(Mode::Build, StepType::Analysis, 400)[0], "gemini");
        assert_eq!(
            p.chain(Mode::Build, StepType::CodeGeneration, 800)[0],
            "deepseek"
        );
        assert_eq!(
            p.chain(Mode::Build, StepType::Refactoring, 600)[0],
            "codestral"
        );
        assert_eq!(
            p.chain(Mode::Fast, StepType::CodeGeneration, 800)[0],
            "groq"
        );
        assert_eq!(
            p.chain(Mode::Build, StepType::CodeGeneration, 80_000)[0],
            "gemini"
        );
    }

    #[test]
    fn configured_chains_win_most_specific_first() {
        let mut p = FallbackPolicy::default();
        p.chains.insert("*.*".into(), vec!["kimi".into()]);
        p.chains
            .insert("build.refactoring".into(), vec!["deepseek".into()]);
        assert_eq!(p.chain(Mode::Build, StepType::Refactoring, 1), ["deepseek"]);
        assert_eq!(p.chain(Mode::Fast, StepType::Analysis, 1), ["kimi"]);
        assert!(p.check().is_ok());
        p.chains.insert("turbo.x".into(), vec![]);
        assert!(p.check().unwrap_err().contains("unknown mode `turbo`"));
    }
}
