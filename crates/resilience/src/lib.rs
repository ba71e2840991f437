//! Resilience for provider calls: this crate will own retries that honour the provider
//! (`Retry-After`, reset headers, `retryDelay`), typed fallback chains, circuit breakers per
//! (provider, model), hard budgets with reserve/commit/release, and the cost ledger.
//!
//! It is empty until the resilience issue lands; until then the orchestrator calls a single
//! provider once per step and records the attempt. Nothing here pretends to retry.
