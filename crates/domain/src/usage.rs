//! Token usage, normalised across providers, and its cost.

use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

use crate::money::{Money, Price};

/// Tokens one call (or a sum of calls) consumed, in one shape for every provider.
///
/// `input_tokens` includes `cached_input_tokens`; `output_tokens` includes `reasoning_tokens`
/// (providers that report thoughts separately, such as Gemini, are normalised by their adapter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// All prompt tokens, cached or not.
    pub input_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    pub cached_input_tokens: u64,
    /// All generated tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of `output_tokens` spent on hidden reasoning.
    pub reasoning_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens.saturating_add(self.output_tokens)
    }

    /// What this usage costs at `price`, rounded up to the next micro-dollar so that a
    /// budget never under-counts.
    pub fn cost(&self, price: &Price) -> Money {
        let cached = self.cached_input_tokens.min(self.input_tokens);
        let uncached = self.input_tokens - cached;
        // u128 keeps tokens × micro-dollars-per-million exact before the division.
        let numerator = u128::from(uncached) * u128::from(price.input_per_mtok.as_micros())
            + u128::from(cached) * u128::from(price.cached_input_per_mtok.as_micros())
            + u128::from(self.output_tokens) * u128::from(price.output_per_mtok.as_micros());
        let micros = numerator.div_ceil(1_000_000);
        Money::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

impl Add for Usage {
    type Output = Usage;
    fn add(self, rhs: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_add(rhs.input_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_add(rhs.cached_input_tokens),
            output_tokens: self.output_tokens.saturating_add(rhs.output_tokens),
            reasoning_tokens: self.reasoning_tokens.saturating_add(rhs.reasoning_tokens),
        }
    }
}

impl AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        *self = *self + rhs;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deepseek_chat() -> Price {
        Price {
            input_per_mtok: Money::from_micros(280_000),
            cached_input_per_mtok: Money::from_micros(28_000),
            output_per_mtok: Money::from_micros(420_000),
        }
    }

    #[test]
    fn cost_charges_cached_input_at_the_cache_rate() {
        let usage = Usage {
            input_tokens: 1_000_000,
            cached_input_tokens: 500_000,
            output_tokens: 1_000_000,
            reasoning_tokens: 0,
        };
        // 0.5M × 0.28 + 0.5M × 0.028 + 1M × 0.42 = 0.14 + 0.014 + 0.42
        assert_eq!(usage.cost(&deepseek_chat()), Money::from_micros(574_000));
    }

    #[test]
    fn cost_rounds_up_so_budgets_never_undercount() {
        let usage = Usage {
            input_tokens: 1,
            ..Usage::default()
        };
        assert_eq!(usage.cost(&deepseek_chat()), Money::from_micros(1));
        assert_eq!(Usage::default().cost(&deepseek_chat()), Money::ZERO);
    }

    #[test]
    fn cached_tokens_beyond_input_are_not_billed_twice() {
        let usage = Usage {
            input_tokens: 10,
            cached_input_tokens: 50,
            ..Usage::default()
        };
        let price = Price {
            input_per_mtok: Money::from_micros(1_000_000),
            cached_input_per_mtok: Money::from_micros(1_000_000),
            output_per_mtok: Money::ZERO,
        };
        assert_eq!(usage.cost(&price), Money::from_micros(10));
    }

    #[test]
    fn usages_add_field_by_field() {
        let a = Usage {
            input_tokens: 3,
            cached_input_tokens: 1,
            output_tokens: 4,
            reasoning_tokens: 2,
        };
        let sum = a + a;
        assert_eq!(sum.input_tokens, 6);
        assert_eq!(sum.cached_input_tokens, 2);
        assert_eq!(sum.total_tokens(), 14);
    }
}
