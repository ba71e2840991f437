//! What every adapter is built from.

use std::sync::Arc;

use aetherflow_domain::{Money, Price};

use crate::http::Timeouts;
use crate::keys::KeyPool;

/// How to reach one provider.
#[derive(Debug, Clone, Default)]
pub struct AdapterConfig {
    /// Overrides the provider's default base URL (required for OpenAI-compatible servers).
    pub base_url: Option<String>,
    /// Deadlines.
    pub timeouts: Timeouts,
    /// The provider's keys (optional only for keyless local servers).
    pub keys: Option<Arc<KeyPool>>,
}

/// A price from dollars per million tokens written as micro-dollars per million tokens:
/// `price(140_000, 2_800, 280_000)` is $0.14 input, $0.0028 cached input, $0.28 output.
pub(crate) const fn price(input: u64, cached: u64, output: u64) -> Price {
    Price {
        input_per_mtok: Money::from_micros(input),
        cached_input_per_mtok: Money::from_micros(cached),
        output_per_mtok: Money::from_micros(output),
    }
}
