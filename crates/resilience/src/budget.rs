//! Hard budgets with zero overshoot: every call reserves its worst-case cost in every scope it
//! belongs to before it is sent, commits the real cost after, and releases the rest. A call
//! that could push any scope past its cap is refused before it leaves the process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// The shared spend store could not be reached or failed. Budgets fail closed: the call is
/// refused, never sent unbudgeted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the shared budget store is unavailable ({0}); the call was refused so that nothing is sent unbudgeted. Check that the Redis server at redis.url is up: calls go through again as soon as it answers"
)]
pub struct StoreUnavailable(pub String);

/// Why a reservation was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The call could pass a cap.
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The shared store did not answer (fail closed).
    #[error(transparent)]
    Unavailable(#[from] StoreUnavailable),
}

/// One scope of a reservation, as a shared store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeCap {
    /// The scope.
    pub scope: Scope,
    /// Its cap in this process's configuration (`None`: spend is counted, nothing is refused).
    pub cap: Option<Money>,
    /// The spend this process was seeded with (from its own records); the store takes it only
    /// when it has no spend for the scope yet.
    pub floor: Money,
}

/// Where spend lives when several processes share caps (Redis in `aetherflow-redis`).
///
/// Caps stay in each process's configuration; committed and reserved amounts live in the store.
/// Every check-and-reserve is one atomic operation there, so processes together never pass a
/// cap. A reservation is a lease: its holder renews it while the call lasts, and a lease whose
/// process died expires and is released, so a crash never holds budget for ever.
#[async_trait::async_trait]
pub trait SpendStore: fmt::Debug + Send + Sync {
    /// Reserves `amount` under `lease` in every scope at once if each stays within its cap,
    /// or in none.
    async fn reserve(
        &self,
        lease: &str,
        scopes: &[ScopeCap],
        amount: Money,
    ) -> Result<Result<(), BudgetExceeded>, StoreUnavailable>;

    /// Extends `lease`; false when it had already expired (and its reservation was released).
    async fn renew(&self, lease: &str) -> Result<bool, StoreUnavailable>;

    /// How often a held lease must be renewed.
    fn renew_every(&self) -> Duration;

    /// Ends `lease`: releases its reservation in `scopes` and adds `actual` to their committed
    /// spend. Returns each scope's committed spend before and after, in order.
    async fn settle(
        &self,
        lease: &str,
        scopes: &[Scope],
        actual: Money,
    ) -> Result<Vec<(Money, Money)>, StoreUnavailable>;

    /// Committed and reserved spend in `scope`.
    async fn spend(&self, scope: &Scope) -> Result<(Money, Money), StoreUnavailable>;

    /// Drops the spend of `scope` (a finished run's).
    async fn forget(&self, scope: &Scope) -> Result<(), StoreUnavailable>;
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
    /// Caps of every day and every month without one of their own, so a long-lived process
    /// caps tomorrow as it capped today.
    day_cap: Option<Money>,
    month_cap: Option<Money>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            accounts: HashMap::new(),
            thresholds: vec![50, 80, 100],
            day_cap: None,
            month_cap: None,
        }
    }
}

impl Ledger {
    /// `scope`'s account, with the period cap filled in when it has none of its own.
    fn account(&self, scope: &Scope) -> Account {
        let mut a = self.accounts.get(scope).copied().unwrap_or_default();
        if a.cap.is_none() {
            a.cap = match scope {
                Scope::Day(_) => self.day_cap,
                Scope::Month(_) => self.month_cap,
                _ => None,
            };
        }
        a
    }
}

/// Caps and spend for every scope; cheap to clone and share between runs.
///
/// By default spend is kept in this process. With a [`SpendStore`] ([`Budgets::shared`]), spend
/// lives in the store and [`Budgets::acquire`] reserves there, so every process using the same
/// store shares the caps.
#[derive(Debug, Clone, Default)]
pub struct Budgets {
    ledger: Arc<Mutex<Ledger>>,
    store: Option<Arc<dyn SpendStore>>,
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
    /// No caps yet; spend kept in this process.
    pub fn new() -> Self {
        Self::default()
    }

    /// No caps yet; spend kept in `store`, shared with every process that uses it.
    pub fn shared(store: Arc<dyn SpendStore>) -> Self {
        Budgets {
            ledger: Arc::default(),
            store: Some(store),
        }
    }

    /// True when spend lives in a shared store.
    pub fn is_shared(&self) -> bool {
        self.store.is_some()
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

    /// Caps every UTC day and every UTC month (today's and this month's, and every one after),
    /// unless a scope has a cap of its own.
    pub fn set_period_caps(&self, day: Option<Money>, month: Option<Money>) {
        let mut ledger = self.lock();
        ledger.day_cap = day;
        ledger.month_cap = month;
    }

    /// Sets (or with `None` removes) the cap of `scope`.
    pub fn set_cap(&self, scope: Scope, cap: Option<Money>) {
        self.lock().accounts.entry(scope).or_default().cap = cap;
    }

    /// True when any of `scopes` has a cap (otherwise reserving is pointless).
    pub fn has_caps(&self, scopes: &[Scope]) -> bool {
        let ledger = self.lock();
        scopes.iter().any(|s| ledger.account(s).cap.is_some())
    }

    /// Records spend that happened before this process started (read from the cost ledger), so
    /// day and month caps hold across processes.
    pub fn seed(&self, scope: Scope, committed: Money) {
        self.lock().accounts.entry(scope).or_default().committed = committed;
    }

    /// Spend in `scope`.
    pub fn spend(&self, scope: &Scope) -> Spend {
        let a = self.lock().account(scope);
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
        if let Some(store) = &self.store
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let store = Arc::clone(store);
            let scope = scope.clone();
            rt.spawn(async move {
                if let Err(e) = store.forget(&scope).await {
                    tracing::warn!(%scope, error = %e, "finished scope not dropped from the shared budget store; it expires on its own");
                }
            });
        }
    }

    /// Spend in `scope` as the callers see it: from the shared store when there is one.
    pub async fn current(&self, scope: &Scope) -> Result<Spend, StoreUnavailable> {
        let local = self.spend(scope);
        match &self.store {
            None => Ok(local),
            Some(store) => {
                let (committed, reserved) = store.spend(scope).await?;
                Ok(Spend {
                    cap: local.cap,
                    committed,
                    reserved,
                })
            }
        }
    }

    /// Reserves `amount` in every scope of `scopes` at once, or in none: in the shared store
    /// when there is one (atomically there, across processes), otherwise in this process.
    pub async fn acquire(
        &self,
        scopes: &[Scope],
        amount: Money,
    ) -> Result<Reservation, BudgetError> {
        let Some(store) = &self.store else {
            return Ok(self.reserve(scopes, amount)?);
        };
        let caps: Vec<ScopeCap> = {
            let ledger = self.lock();
            scopes
                .iter()
                .map(|s| {
                    let a = ledger.account(s);
                    ScopeCap {
                        scope: s.clone(),
                        cap: a.cap,
                        floor: a.committed,
                    }
                })
                .collect()
        };
        let id = format!("{:032x}", fastrand::u128(..));
        store.reserve(&id, &caps, amount).await??;
        let renewer = tokio::runtime::Handle::try_current().ok().map(|rt| {
            let store = Arc::clone(store);
            let id = id.clone();
            rt.spawn(async move {
                let every = store.renew_every();
                loop {
                    tokio::time::sleep(every).await;
                    match store.renew(&id).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(lease = %id, "a budget lease expired while its call was in flight: the shared store could not be reached for longer than the lease, so its reservation was released early");
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %id, error = %e, "budget lease not renewed; retrying"),
                    }
                }
            })
            .abort_handle()
        });
        Ok(Reservation {
            budgets: self.clone(),
            scopes: scopes.to_vec(),
            amount,
            settled: false,
            lease: Some(Lease {
                id,
                store: Arc::clone(store),
                renewer,
            }),
        })
    }

    /// Reserves `amount` in every scope of `scopes` at once, or in none, in this process's own
    /// accounts: the check and the reservation happen under one lock, so concurrent calls cannot
    /// both pass a check that only one of them fits. Callers that may run with a shared store
    /// use [`Budgets::acquire`].
    pub fn reserve(&self, scopes: &[Scope], amount: Money) -> Result<Reservation, BudgetExceeded> {
        let mut ledger = self.lock();
        for scope in scopes {
            let a = ledger.account(scope);
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
            lease: None,
        })
    }

    fn alerts(&self, scope: &Scope, before: Money, after: Money) -> Vec<BudgetAlert> {
        let ledger = self.lock();
        let cap = ledger.account(scope).cap;
        let mut alerts = Vec::new();
        if let Some(cap) = cap.filter(|c| *c > Money::ZERO) {
            let pct = |m: Money| u128::from(m.as_micros()) * 100 / u128::from(cap.as_micros());
            for &t in &ledger.thresholds {
                if pct(before) < u128::from(t) && pct(after) >= u128::from(t) {
                    alerts.push(BudgetAlert {
                        scope: scope.clone(),
                        threshold: t,
                        spent: after,
                        cap,
                    });
                }
            }
        }
        if let Some(cap) = cap
            && after > cap
        {
            // Only possible if a provider billed more than the worst case it was allowed.
            tracing::error!(%scope, committed = %after, %cap, "spend passed the cap: the provider billed more than the reserved worst case");
        }
        alerts
    }

    fn settle(&self, scopes: &[Scope], reserved: Money, actual: Money) -> Vec<BudgetAlert> {
        let moved: Vec<(Money, Money)> = {
            let mut ledger = self.lock();
            scopes
                .iter()
                .map(|scope| {
                    let a = ledger.accounts.entry(scope.clone()).or_default();
                    a.reserved = a.reserved.saturating_sub(reserved);
                    let before = a.committed;
                    a.committed = a.committed.saturating_add(actual);
                    (before, a.committed)
                })
                .collect()
        };
        scopes
            .iter()
            .zip(moved)
            .flat_map(|(scope, (before, after))| self.alerts(scope, before, after))
            .collect()
    }
}

/// A reservation held in a shared store.
#[derive(Debug)]
struct Lease {
    id: String,
    store: Arc<dyn SpendStore>,
    renewer: Option<tokio::task::AbortHandle>,
}

/// Settles `lease` in its store, retrying briefly: a lost settle would leave the real cost
/// uncounted once the lease expires.
async fn settle_shared(
    budgets: &Budgets,
    lease: &Lease,
    scopes: &[Scope],
    actual: Money,
) -> Vec<BudgetAlert> {
    let mut wait = Duration::from_millis(50);
    for attempt in 1..=4 {
        match lease.store.settle(&lease.id, scopes, actual).await {
            Ok(moved) => {
                return scopes
                    .iter()
                    .zip(moved)
                    .flat_map(|(scope, (before, after))| budgets.alerts(scope, before, after))
                    .collect();
            }
            Err(e) if attempt < 4 => {
                tracing::warn!(lease = %lease.id, error = %e, "budget not settled in the shared store; retrying");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(e) => {
                tracing::error!(lease = %lease.id, cost = %actual, error = %e, "a call's cost was not recorded in the shared budget store; its lease expires and releases the reservation, so this cost is not counted against the caps");
            }
        }
    }
    Vec::new()
}

/// Money set aside for one call; commit the real cost, or drop it to release everything.
#[derive(Debug)]
#[must_use = "commit the real cost, or drop to release"]
pub struct Reservation {
    budgets: Budgets,
    scopes: Vec<Scope>,
    amount: Money,
    settled: bool,
    lease: Option<Lease>,
}

impl Reservation {
    /// The worst-case cost set aside.
    pub fn amount(&self) -> Money {
        self.amount
    }

    /// Records the real cost and frees the rest of the reservation; returns the soft thresholds
    /// this spend crossed. With a shared store the record is made in the background (alerts are
    /// then logged, not returned); callers that can wait use [`Reservation::settle`].
    pub fn commit(mut self, actual: Money) -> Vec<BudgetAlert> {
        self.settled = true;
        match self.lease.take() {
            None => self.budgets.settle(&self.scopes, self.amount, actual),
            Some(lease) => {
                settle_in_background(self.budgets.clone(), lease, self.scopes.clone(), actual);
                Vec::new()
            }
        }
    }

    /// Records the real cost and frees the rest of the reservation, waiting for the shared store
    /// when there is one; returns the soft thresholds this spend crossed.
    pub async fn settle(mut self, actual: Money) -> Vec<BudgetAlert> {
        self.settled = true;
        match self.lease.take() {
            None => self.budgets.settle(&self.scopes, self.amount, actual),
            Some(lease) => {
                if let Some(r) = &lease.renewer {
                    r.abort();
                }
                settle_shared(&self.budgets, &lease, &self.scopes, actual).await
            }
        }
    }
}

fn settle_in_background(budgets: Budgets, lease: Lease, scopes: Vec<Scope>, actual: Money) {
    if let Some(r) = &lease.renewer {
        r.abort();
    }
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn(async move {
                for alert in settle_shared(&budgets, &lease, &scopes, actual).await {
                    tracing::warn!(scope = %alert.scope, threshold = alert.threshold, spent = %alert.spent, cap = %alert.cap, "budget threshold crossed");
                }
            });
        }
        Err(_) => {
            tracing::error!(lease = %lease.id, cost = %actual, "no async runtime to settle a shared budget lease; it expires and releases the reservation");
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            match self.lease.take() {
                None => {
                    let _ = self.budgets.settle(&self.scopes, self.amount, Money::ZERO);
                }
                Some(lease) => settle_in_background(
                    self.budgets.clone(),
                    lease,
                    std::mem::take(&mut self.scopes),
                    Money::ZERO,
                ),
            }
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
    fn period_caps_hold_for_days_and_months_not_yet_seen() {
        let b = Budgets::new();
        b.set_period_caps(Some(Money::from_micros(100)), None);
        let tomorrow = Scope::Day("2026-12-01".into());
        assert!(b.has_caps(std::slice::from_ref(&tomorrow)));
        assert!(!b.has_caps(&[Scope::Month("2026-12".into())]));
        let err = b
            .reserve(std::slice::from_ref(&tomorrow), Money::from_micros(101))
            .expect_err("tomorrow is capped too");
        assert_eq!(err.cap, Money::from_micros(100));
        // A scope's own cap wins over the period's.
        b.set_cap(tomorrow.clone(), Some(Money::from_micros(500)));
        assert!(b.reserve(&[tomorrow], Money::from_micros(101)).is_ok());
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
