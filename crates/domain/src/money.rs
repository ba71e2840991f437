//! Money as integer micro-dollars, and per-model prices.
//!
//! Floating point never touches a budget: every amount is a whole number of micro-dollars
//! (one millionth of a US dollar), so sums are exact and comparisons with a cap are total.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use serde::{Deserialize, Serialize};

/// An amount of US dollars held as whole micro-dollars (1 USD = 1 000 000).
///
/// Arithmetic saturates instead of wrapping: an overflowing sum is a budget that is certainly
/// exceeded, never a small or negative number.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(u64);

impl Money {
    /// Nothing.
    pub const ZERO: Money = Money(0);

    /// An amount from whole micro-dollars.
    pub const fn from_micros(micros: u64) -> Self {
        Money(micros)
    }

    /// An amount from whole cents.
    pub const fn from_cents(cents: u64) -> Self {
        Money(cents.saturating_mul(10_000))
    }

    /// Parses a decimal dollar amount such as `"0.25"`, `"12"` or `"$1.5"`, exactly (no float).
    ///
    /// At most six decimal places are accepted, since a micro-dollar is the smallest unit.
    pub fn parse_usd(text: &str) -> Result<Self, MoneyParseError> {
        let bad = || MoneyParseError {
            input: text.to_owned(),
        };
        let trimmed = text.trim();
        let digits = trimmed.strip_prefix('$').unwrap_or(trimmed);
        let (whole, frac) = match digits.split_once('.') {
            Some((w, f)) => (w, f),
            None => (digits, ""),
        };
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 6
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let mut frac_micros: u64 = 0;
        for (i, b) in frac.bytes().enumerate() {
            frac_micros += u64::from(b - b'0') * 10u64.pow(5 - i as u32);
        }
        whole
            .checked_mul(1_000_000)
            .and_then(|w| w.checked_add(frac_micros))
            .map(Money)
            .ok_or_else(bad)
    }

    /// The amount in whole micro-dollars.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The amount in dollars, for display and metrics only (never for budget arithmetic).
    pub fn as_usd_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    /// Sum that saturates at the largest representable amount.
    pub const fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// Difference that stops at zero.
    pub const fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = self.saturating_add(rhs);
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl fmt::Display for Money {
    /// Dollars with six decimals, trailing zeros trimmed to at least two: `$0.0012`, `$3.50`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000;
        let frac = format!("{:06}", self.0 % 1_000_000);
        let trimmed = frac.trim_end_matches('0');
        let shown = if trimmed.len() < 2 {
            &frac[..2]
        } else {
            trimmed
        };
        write!(f, "${whole}.{shown}")
    }
}

/// A dollar amount that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a dollar amount: write digits with at most six decimals, e.g. `0.25` or `$12.50`"
)]
pub struct MoneyParseError {
    input: String,
}

/// What a model charges, in micro-dollars per million tokens for each kind of token.
///
/// Micro-dollars per million tokens is the same number as dollars per token times 10^12, so a
/// price of `$0.28 / 1M` is `280_000` here and cost arithmetic stays in integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Price {
    /// Uncached input (prompt) tokens.
    pub input_per_mtok: Money,
    /// Input tokens served from the provider's prompt cache.
    pub cached_input_per_mtok: Money,
    /// Output tokens, reasoning included.
    pub output_per_mtok: Money,
}

impl Price {
    /// A price that charges nothing (local servers, the offline mock).
    pub const FREE: Price = Price {
        input_per_mtok: Money::ZERO,
        cached_input_per_mtok: Money::ZERO,
        output_per_mtok: Money::ZERO,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_dollar_amounts_exactly() {
        assert_eq!(Money::parse_usd("0.25"), Ok(Money::from_micros(250_000)));
        assert_eq!(
            Money::parse_usd("$12.5"),
            Ok(Money::from_micros(12_500_000))
        );
        assert_eq!(Money::parse_usd("3"), Ok(Money::from_micros(3_000_000)));
        assert_eq!(Money::parse_usd(".000001"), Ok(Money::from_micros(1)));
    }

    #[test]
    fn rejects_malformed_amounts_with_a_hint() {
        for bad in ["", "-1", "1.0000001", "abc", "1.2.3", "$", "1e3"] {
            let err = Money::parse_usd(bad).expect_err(bad);
            assert!(err.to_string().contains("at most six decimals"), "{err}");
        }
    }

    #[test]
    fn displays_as_dollars() {
        assert_eq!(Money::from_micros(1_234).to_string(), "$0.001234");
        assert_eq!(Money::from_micros(3_500_000).to_string(), "$3.50");
        assert_eq!(Money::ZERO.to_string(), "$0.00");
        assert_eq!(Money::from_cents(7).to_string(), "$0.07");
    }

    #[test]
    fn addition_saturates_instead_of_wrapping() {
        let big = Money::from_micros(u64::MAX - 1);
        assert_eq!(big + Money::from_micros(5), Money::from_micros(u64::MAX));
        assert_eq!(Money::ZERO.saturating_sub(big), Money::ZERO);
    }

    proptest! {
        #[test]
        fn display_round_trips_through_parse(micros in 0u64..10_000_000_000_000) {
            let m = Money::from_micros(micros);
            prop_assert_eq!(Money::parse_usd(&m.to_string()), Ok(m));
        }
    }
}
