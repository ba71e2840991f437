//! Resilience for provider calls: [`retry`] decides when to call the same model again (and
//! honours the provider's own wait), [`breaker`] stops calling a (provider, model) that keeps
//! failing and probes it back, and [`budget`] refuses a call before it is sent when its worst
//! case could pass a cap.
//!
//! Everything here is synchronous bookkeeping over the typed [`aetherflow_provider::ProviderError`];
//! the orchestrator drives the calls. Time comes from tokio's clock, so tests pause it.
//!
//! ```
//! use aetherflow_domain::Money;
//! use aetherflow_resilience::budget::{Budgets, Scope};
//!
//! let budgets = Budgets::new();
//! let run = Scope::Run("r1".into());
//! budgets.set_cap(run.clone(), Some(Money::from_cents(10)));
//! let reservation = budgets.reserve(&[run.clone()], Money::from_cents(4)).expect("fits");
//! reservation.commit(Money::from_cents(1));
//! assert_eq!(budgets.spend(&run).committed, Money::from_cents(1));
//! ```
//!
//! [`fallback`] orders the providers a step tries; [`ledger`] keeps an append-only record of
//! every call's cost; [`alerts`] watches spend and error rates for spikes.

pub mod alerts;
pub mod breaker;
pub mod budget;
pub mod fallback;
pub mod ledger;
pub mod retry;
