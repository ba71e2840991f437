//! Provider adapters: one module per provider — DeepSeek, Gemini, Groq, Mistral Codestral (chat
//! and FIM), Moonshot Kimi and any OpenAI-compatible server — each behind its own cargo
//! feature, translating that provider's wire format, errors and rate-limit headers into the
//! types of `aetherflow-provider`.
//!
//! The OpenAI-style providers share [`openai`] with a per-provider [`openai::Dialect`]; Gemini
//! has its own wire format. All of them share [`wire::Transport`] (keys, deadlines, SSE) and
//! [`errors`] (every error envelope, classified into the typed taxonomy).
//!
//! ```no_run
//! use std::sync::Arc;
//! use aetherflow_provider::{ApiKey, ChatRequest, Message, Provider};
//! use aetherflow_providers::{config::AdapterConfig, keys::KeyPool};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let key = ApiKey::new("deepseek#1", "sk-…".to_owned().into());
//! let keys = Arc::new(KeyPool::new("deepseek", vec![key])?);
//! let deepseek = aetherflow_providers::deepseek::adapter(AdapterConfig {
//!     keys: Some(keys),
//!     ..AdapterConfig::default()
//! })?;
//! let answer = deepseek
//!     .chat(&ChatRequest {
//!         model: "deepseek-v4-flash".into(),
//!         messages: vec![Message::user("Say hi")],
//!         ..ChatRequest::default()
//!     })
//!     .await?;
//! println!("{}", answer.text);
//! # Ok(()) }
//! ```

pub mod config;
pub mod errors;
pub mod http;
pub mod keys;
pub mod openai;
pub mod prices;
pub mod wire;

#[cfg(feature = "codestral")]
pub mod codestral;
#[cfg(feature = "deepseek")]
pub mod deepseek;
#[cfg(feature = "gemini")]
pub mod gemini;
#[cfg(feature = "groq")]
pub mod groq;
#[cfg(feature = "kimi")]
pub mod kimi;
#[cfg(feature = "openai-compatible")]
pub mod openai_compatible;

pub use keys::mask_key;
