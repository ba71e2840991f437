//! The price table: `prices.toml` (shipped in this crate, with each entry's source and date)
//! plus overrides from configuration. Amounts are read as exact decimals into micro-dollars.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use aetherflow_domain::{Money, Price};
use serde::Deserialize;

const BUILTIN: &str = include_str!("../prices.toml");

/// One model's entry, as written in `prices.toml` or in `[prices."provider/model"]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// USD per million uncached input tokens, e.g. `"0.14"`.
    pub input: String,
    /// USD per million cached input tokens (default: the input price).
    #[serde(default)]
    pub cached_input: Option<String>,
    /// USD per million output tokens, reasoning included.
    pub output: String,
    /// Prompt plus answer, in tokens.
    #[serde(default)]
    pub context_window: Option<u64>,
    /// Other names of the same model.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Where the price comes from, and when.
    #[serde(default)]
    pub source: Option<String>,
}

/// A price file or override that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("prices: {0}")]
pub struct PriceError(String);

#[derive(Debug, Clone, Copy)]
struct Known {
    price: Price,
    window: Option<u64>,
}

/// Prices and windows by provider and model.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    models: BTreeMap<(String, String), Known>,
}

fn usd(text: &str, what: &str) -> Result<Money, PriceError> {
    Money::parse_usd(text).map_err(|e| PriceError(format!("{what}: {e}")))
}

impl PriceTable {
    /// The shipped table (parsed once).
    pub fn builtin() -> Arc<PriceTable> {
        static TABLE: OnceLock<Arc<PriceTable>> = OnceLock::new();
        Arc::clone(TABLE.get_or_init(|| {
            let mut table = PriceTable::default();
            // The shipped file is checked by a test; a broken one leaves the table empty and
            // every model unknown, which start-up reports.
            if let Ok(file) =
                toml::from_str::<BTreeMap<String, BTreeMap<String, PriceEntry>>>(BUILTIN)
            {
                for (provider, models) in file {
                    for (model, entry) in models {
                        let _ = table.insert(&provider, &model, &entry);
                    }
                }
            }
            Arc::new(table)
        }))
    }

    /// Adds or replaces a model (and its aliases).
    pub fn insert(
        &mut self,
        provider: &str,
        model: &str,
        entry: &PriceEntry,
    ) -> Result<(), PriceError> {
        let at = format!("{provider}/{model}");
        let input = usd(&entry.input, &format!("{at} input"))?;
        let price = Price {
            input_per_mtok: input,
            cached_input_per_mtok: match &entry.cached_input {
                Some(c) => usd(c, &format!("{at} cached_input"))?,
                None => input,
            },
            output_per_mtok: usd(&entry.output, &format!("{at} output"))?,
        };
        let known = Known {
            price,
            window: entry.context_window,
        };
        for name in std::iter::once(model).chain(entry.aliases.iter().map(String::as_str)) {
            self.models
                .insert((provider.to_owned(), name.to_owned()), known);
        }
        Ok(())
    }

    /// The built-in table with `overrides` (keyed `"provider/model"`) applied on top.
    pub fn with_overrides(
        overrides: &BTreeMap<String, PriceEntry>,
    ) -> Result<PriceTable, PriceError> {
        let mut table = (*PriceTable::builtin()).clone();
        for (key, entry) in overrides {
            let (provider, model) = key.split_once('/').ok_or_else(|| {
                PriceError(format!("`{key}`: write the key as \"provider/model\", e.g. \"deepseek/deepseek-v4-flash\""))
            })?;
            table.insert(provider, model, entry)?;
        }
        Ok(table)
    }

    /// The price of `provider`'s `model` (a `models/` prefix is ignored).
    pub fn price(&self, provider: &str, model: &str) -> Option<Price> {
        self.get(provider, model).map(|k| k.price)
    }

    /// The context window of `provider`'s `model`.
    pub fn window(&self, provider: &str, model: &str) -> Option<u64> {
        self.get(provider, model).and_then(|k| k.window)
    }

    fn get(&self, provider: &str, model: &str) -> Option<&Known> {
        let model = model.strip_prefix("models/").unwrap_or(model);
        self.models.get(&(provider.to_owned(), model.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_parses_completely() {
        let file: BTreeMap<String, BTreeMap<String, PriceEntry>> =
            toml::from_str(BUILTIN).expect("prices.toml is valid");
        let mut table = PriceTable::default();
        for (provider, models) in &file {
            for (model, entry) in models {
                table
                    .insert(provider, model, entry)
                    .expect("every price is an exact amount");
                assert!(entry.source.is_some(), "{provider}/{model} has no source");
            }
        }
        let builtin = PriceTable::builtin();
        let flash = builtin
            .price("deepseek", "deepseek-v4-flash")
            .expect("flash");
        assert_eq!(flash.input_per_mtok, Money::from_micros(140_000));
        assert_eq!(flash.cached_input_per_mtok, Money::from_micros(2_800));
        assert_eq!(
            builtin.price("deepseek", "deepseek-chat"),
            Some(flash),
            "aliases"
        );
        assert_eq!(
            builtin.window("gemini", "models/gemini-2.5-flash"),
            Some(1_048_576)
        );
        assert!(
            builtin.price("gemini", "deepseek-v4-flash").is_none(),
            "prices are per provider"
        );
    }

    #[test]
    fn overrides_replace_and_add_models() {
        let overrides = BTreeMap::from([(
            "openai-compatible/llama3.2".to_owned(),
            PriceEntry {
                input: "0".into(),
                cached_input: None,
                output: "0".into(),
                context_window: Some(131_072),
                aliases: vec![],
                source: None,
            },
        )]);
        let table = PriceTable::with_overrides(&overrides).expect("valid");
        assert_eq!(
            table.price("openai-compatible", "llama3.2"),
            Some(Price::FREE)
        );
        let bad = BTreeMap::from([(
            "no-slash".to_owned(),
            overrides.values().next().expect("one").clone(),
        )]);
        assert!(
            PriceTable::with_overrides(&bad)
                .unwrap_err()
                .to_string()
                .contains("provider/model")
        );
    }
}
