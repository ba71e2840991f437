//! What every adapter is built from.

use std::sync::Arc;

use crate::http::Timeouts;
use crate::keys::KeyPool;
use crate::prices::PriceTable;

/// How to reach one provider.
#[derive(Debug, Clone, Default)]
pub struct AdapterConfig {
    /// Overrides the provider's default base URL (required for OpenAI-compatible servers).
    pub base_url: Option<String>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// The provider's keys (optional only for keyless local servers).
    pub keys: Option<Arc<KeyPool>>,
    /// Prices and context windows (default: the shipped `prices.toml`).
    pub prices: Option<Arc<PriceTable>>,
}

impl AdapterConfig {
    /// The price table to use.
    pub(crate) fn price_table(&self) -> Arc<PriceTable> {
        self.prices.clone().unwrap_or_else(PriceTable::builtin)
    }
}
