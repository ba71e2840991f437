//! Hard budgets with zero overshoot: every call reserves its worst-case cost in every scope it
//! belongs to before it is sent, commits the real cost after, and releases the rest. A call
//! that could push any scope past its cap is refused before it leaves the process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use aetherflow_domain::{Money, Price, Usage};

/// What a budget applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One run of a plan.
    Run(String),
    /// One API key of the HTTP server.
    ApiKey(String),
    /// One UTC day (`2026-11-25`).
    Day(String),
    /// One UTC month (`2026-11`).
    Month(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Run(id) => write!(f, "run {id}"),
            Scope::ApiKey(id) => write!(f, "API key {id}"),
            Scope::Day(d) => write!(f, "day {d}"),
            Scope::Month(m) => write!(f, "month {m}"),
        }
    }
}

/// A call was refused because it could exceed a cap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "budget for {scope} exceeded: this call could cost up to {requested}, but only {available} of the {cap} cap is left; raise the cap or shorten the step"
)]
pub struct BudgetExceeded {
    /// The scope whose cap would be passed.
    pub scope: Scope,
    /// The cap.
    pub cap: Money,
    /// What is left of it (cap − committed − reserved).
    pub available: Money,
    /// The worst-case cost of the call.
    pub requested: Money,
}

#[derive(Debug, Default, Clone, Copy)]
struct Account {
    cap: Option<Money>,
    committed: Money,
    reserved: Money,
}

#[derive(Debug)]
struct Ledger {
    accounts: HashMap<Scope, Account>,
    thresholds: Vec<u8>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            accounts: HashMap::new(),
            thresholds: vec![50, 80, 100],
        }
    }
}

/// Caps and spend for every scope; cheap to clone and share between runs.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    ledger: Arc<Mutex<Ledger>>,
}

/// Spend in a capped scope crossed a soft threshold (a percentage of the cap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetAlert {
    /// The scope.
    pub scope: Scope,
    /// The threshold crossed, in percent of the cap.
    pub threshold: u8,
    /// Committed spend after the call.
    pub spent: Money,
    /// The cap.
    pub cap: Money,
}

/// Spend so far in one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spend {
    /// The cap, if any.
    pub cap: Option<Money>,
    /// Real costs of finished calls.
    pub committed: Money,
    /// Worst-case costs of calls in flight.
    pub reserved: Money,
}

impl Budgets {
    /// No caps yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the soft thresholds, in percent of each cap, that raise alerts (default 50, 80, 100).
    pub fn set_thresholds(&self, mut thresholds: Vec<u8>) {
        thresholds.sort_unstable();
        thresholds.dedup();
        self.lock().thresholds = thresholds;
    }

    /// Sets (or with `None` removes) the cap of `scope`.
    pub fn set_cap(&self, scope: Scope, cap: Option<Money>) {
        self.lock().accounts.entry(scope).or_default().cap = cap;
    }

    /// True when any of `scopes` has a cap (otherwise reserving is pointless).
    pub fn has_caps(&self, scopes: &[Scope]) -> bool {
        let ledger = self.lock();
        scopes
            .iter()
            .any(|s| ledger.accounts.get(s).is_some_and(|a| a.cap.is_some()))
    }

    /// Records spend that happened before this process started (read from the cost ledger), so
    /// day and month caps hold across processes.
    pub fn seed(&self, scope: Scope, committed: Money) {
        self.lock().accounts.entry(scope).or_default().committed = committed;
    }

    /// Spend in `scope`.
    pub fn spend(&self, scope: &Scope) -> Spend {
        let a = self.lock().accounts.get(scope).copied().unwrap_or_default();
        Spend {
            cap: a.cap,
            committed: a.committed,
            reserved: a.reserved,
        }
    }

    /// Drops the account of `scope` (a finished run's, say), so a long-lived process does not
    /// keep one per run forever. Reservations still held on it settle into a fresh account.
    pub fn forget(&self, scope: &Scope) {
        self.lock().accounts.remove(scope);
    }

    /// Reserves `amount` in every scope of `scopes` at once, or in none: the check and the
    /// reservation happen under one lock, so concurrent calls cannot both pass a check that
    /// only one of them fits.
    pub fn reserve(&self, scopes: &[Scope], amount: Money) -> Result<Reservation, BudgetExceeded> {
        let mut ledger = self.lock();
        for scope in scopes {
            let a = ledger.accounts.get(scope).copied().unwrap_or_default();
            if let Some(cap) = a.cap {
                let used = a.committed.saturating_add(a.reserved);
                let available = cap.saturating_sub(used);
                if amount > available {
                    return Err(BudgetExceeded {
                        scope: scope.clone(),
                        cap,
                        available,
                        requested: amount,
                    });
                }
            }
        }
        for scope in scopes {
            let a = ledger.accounts.entry(scope.clone()).or_default();
            a.reserved = a.reserved.saturating_add(amount);
        }
        Ok(Reservation {
            budgets: self.clone(),
            scopes: scopes.to_vec(),
            amount,
            settled: false,
        })
    }

    fn settle(&self, scopes: &[Scope], reserved: Money, actual: Money) -> Vec<BudgetAlert> {
        let mut guard = self.lock();
        let ledger = &mut *guard;
        let mut alerts = Vec::new();
        for scope in scopes {
            let a = ledger.accounts.entry(scope.clone()).or_default();
            a.reserved = a.reserved.saturating_sub(reserved);
            let before = a.committed;
            a.committed = a.committed.saturating_add(actual);
            if let Some(cap) = a.cap.filter(|c| *c > Money::ZERO) {
                let pct = |m: Money| u128::from(m.as_micros()) * 100 / u128::from(cap.as_micros());
                for &t in &ledger.thresholds {
                    if pct(before) < u128::from(t) && pct(a.committed) >= u128::from(t) {
                        alerts.push(BudgetAlert {
                            scope: scope.clone(),
                            threshold: t,
                            spent: a.committed,
                            cap,
                        });
                    }
                }
            }
            if let Some(cap) = a.cap
                && a.committed > cap
            {
                // Only possible if a provider billed more than the worst case it was allowed.
                tracing::error!(%scope, committed = %a.committed, %cap, "spend passed the cap: the provider billed more than the reserved worst case");
            }
        }
        alerts
    }
}

/// Money set aside for one call; commit the real cost, or drop it to release everything.
#[derive(Debug)]
#[must_use = "commit the real cost, or drop to release"]
pub struct Reservation {
    budgets: Budgets,
    scopes: Vec<Scope>,
    amount: Money,
    settled: bool,
}

impl Reservation {
    /// The worst-case cost set aside.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// Records the real cost and frees the rest of the reservation; returns the soft thresholds
    /// this spend crossed.
    pub fn commit(mut self, actual: Money) -> Vec<BudgetAlert> {
        self.settled = true;
        self.budgets.settle(&self.scopes, self.amount, actual)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            let _ = self.budgets.settle(&self.scopes, self.amount, Money::ZERO);
        }
    }
}

/// The most a call can cost: every prompt byte as an uncached input token (a token is never
/// shorter than one byte) plus the full output allowance.
pub fn worst_case_cost(prompt_bytes: u64, max_output_tokens: u64, price: &Price) -> Money {
    Usage {
        input_tokens: prompt_bytes,
        cached_input_tokens: 0,
        output_tokens: max_output_tokens,
        reasoning_tokens: 0,
    }
    .cost(price)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run() -> Scope {
        Scope::Run("r1".into())
    }

    #[test]
    fn a_forgotten_scope_has_no_cap_or_spend_left() {
        let b = Budgets::new();
        b.set_cap(run(), Some(Money::from_micros(100)));
        b.reserve(&[run()], Money::from_micros(60))
            .expect("fits")
            .commit(Money::from_micros(60));
        b.forget(&run());
        let spend = b.spend(&run());
        assert_eq!((spend.cap, spend.committed), (None, Money::ZERO));
    }

    #[test]
    fn a_call_that_could_pass_the_cap_is_refused_before_it_is_sent() {
        let b = Budgets::new();
        b.set_cap(run(), Some(Money::from_micros(100)));
        let r = b.reserve(&[run()], Money::from_micros(60)).expect("fits");
        let err = b
            .reserve(&[run()], Money::from_micros(60))
            .expect_err("would pass");
        assert_eq!(err.available, Money::from_micros(40));
        assert!(
            err.to_string().contains("budget for run r1 exceeded"),
            "{err}"
        );
        r.commit(Money::from_micros(10));
        // The unused 50 came back.
        assert!(b.reserve(&[run()], Money::from_micros(90)).is_ok());
    }

    #[test]
    fn crossing_a_soft_threshold_raises_one_alert() {
        let b = Budgets::new();
        b.set_cap(run(), Some(Money::from_micros(1_000)));
        let alerts = b
            .reserve(&[run()], Money::from_micros(600))
            .expect("fits")
            .commit(Money::from_micros(550));
        assert_eq!(alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [50]);
        let alerts = b
            .reserve(&[run()], Money::from_micros(400))
            .expect("fits")
            .commit(Money::from_micros(400));
        assert_eq!(alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(), [80]);
        let alerts = b
            .reserve(&[run()], Money::from_micros(50))
            .expect("fits")
            .commit(Money::from_micros(50));
        assert_eq!(
            alerts.iter().map(|a| a.threshold).collect::<Vec<_>>(),
            [100]
        );
        assert_eq!(alerts[0].spent, Money::from_micros(1_000));
    }

    #[test]
    fn dropping_a_reservation_releases_it() {
        let b = Budgets::new();
        b.set_cap(run(), Some(Money::from_micros(100)));
        drop(b.reserve(&[run()], Money::from_micros(100)).expect("fits"));
        assert_eq!(b.spend(&run()).reserved, Money::ZERO);
        assert_eq!(b.spend(&run()).committed, Money::ZERO);
    }

    #[test]
    fn every_scope_must_fit_or_none_is_touched() {
        let b = Budgets::new();
        let day = Scope::Day("2026-11-25".into());
        b.set_cap(run(), Some(Money::from_micros(1_000)));
        b.set_cap(day.clone(), Some(Money::from_micros(50)));
        let err = b
            .reserve(&[run(), day.clone()], Money::from_micros(60))
            .expect_err("day cap");
        assert_eq!(err.scope, day);
        assert_eq!(
            b.spend(&run()).reserved,
            Money::ZERO,
            "the run scope was not touched"
        );
    }

    #[test]
    fn worst_case_counts_every_byte_and_the_full_output() {
        let price = Price {
            input_per_mtok: Money::from_micros(1_000_000),
            cached_input_per_mtok: Money::ZERO,
            output_per_mtok: Money::from_micros(2_000_000),
        };
        assert_eq!(
            worst_case_cost(1_000, 500, &price),
            Money::from_micros(2_000)
        );
    }

    #[test]
    fn concurrent_calls_never_overshoot_and_admit_the_most_that_fits() {
        let b = Budgets::new();
        b.set_cap(run(), Some(Money::from_micros(1_000)));
        let admitted = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..100 {
                s.spawn(|| {
                    if let Ok(r) = b.reserve(&[run()], Money::from_micros(30)) {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        std::thread::yield_now();
                        r.commit(Money::from_micros(30));
                    }
                });
            }
        });
        // Reservations are held until commit, and each call commits its full worst case here,
        // so exactly floor(1000 / 30) = 33 calls fit.
        assert_eq!(admitted.into_inner(), 33);
        assert_eq!(b.spend(&run()).committed, Money::from_micros(990));
    }

    proptest! {
        #[test]
        fn committed_spend_never_exceeds_the_cap(
            cap in 0u64..10_000,
            calls in proptest::collection::vec((1u64..2_000, 0u64..=100), 1..60),
        ) {
            let b = Budgets::new();
            b.set_cap(run(), Some(Money::from_micros(cap)));
            let mut held = Vec::new();
            for (worst, pct) in calls {
                if let Ok(r) = b.reserve(&[run()], Money::from_micros(worst)) {
                    // The real cost is at most the worst case.
                    held.push((r, worst * pct / 100));
                }
                if held.len() > 3 {
                    let (r, actual) = held.remove(0);
                    r.commit(Money::from_micros(actual));
                }
                let s = b.spend(&run());
                prop_assert!(s.committed.saturating_add(s.reserved) <= Money::from_micros(cap));
            }
            for (r, actual) in held {
                r.commit(Money::from_micros(actual));
            }
            prop_assert!(b.spend(&run()).committed <= Money::from_micros(cap));
        }
    }
}
