//! The HTTP API behind `aetherflow-api`: API keys (hashed, scoped, constant-time checks), the
//! persistence trait with its embedded SQLite implementation and a PostgreSQL one for several
//! replicas, plan runs as background jobs
//! (bounded queue and workers, events kept for replay), rate limits, CORS and trusted hosts,
//! design uploads, request deadlines, metrics, the OpenAPI document, and the actix-web
//! application.

pub mod app;
pub mod auth;
pub mod edge;
pub mod error;
pub mod execute;
pub mod form;
pub mod gateway;
pub mod jobs;
pub mod keys;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub mod pg;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timeouts;
pub mod trace;
pub mod upload;
pub mod worker;

pub use keys::{KeyScope, Scopes};
pub use store::{KeyInfo, RunFilter, RunRecord, RunState, SqliteStore, Store, StoreError};
