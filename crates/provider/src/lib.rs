//! The provider layer's contract: one async trait every LLM adapter implements, the normalised
//! types it speaks, and the error taxonomy retries and fallbacks act on.
//!
//! Adapters (crate `aetherflow-providers`) translate each provider's wire format into these
//! types; nothing above this crate knows a provider's JSON. The built-in [`mock::MockProvider`]
//! is a real provider too: offline, deterministic, and scriptable, so AetherFlow runs end to end
//! with no keys.
//!
//! ```
//! use aetherflow_provider::{ChatRequest, Message, Provider, mock::MockProvider};
//!
//! # tokio_test_block_on(async {
//! let mock = MockProvider::default();
//! let request = ChatRequest {
//!     model: "mock-1".into(),
//!     messages: vec![Message::user("Say hello")],
//!     ..ChatRequest::default()
//! };
//! let answer = mock.chat(&request).await.expect("the mock always answers unscripted calls");
//! assert!(!answer.text.is_empty());
//! # });
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
//! # }
//! ```

mod error;
pub mod mock;
pub mod tokens;
mod types;

use aetherflow_domain::Price;
use async_trait::async_trait;

pub use error::{FallbackClass, ProviderError, TimeoutPhase};
pub use types::{
    ApiKey, ChatRequest, ChatResponse, ChatStream, FinishReason, Image, JsonSchema, Message, Role,
    StepHint, StreamEvent, Tool, ToolCall, ToolChoice, collect_stream,
};

/// An LLM provider: one adapter per wire format.
///
/// Implementations are cheap to share (`Arc<dyn Provider>`) and safe to call concurrently.
#[async_trait]
pub trait Provider: Send + Sync {
    /// The provider's name as used in config, plans (`context.provider`) and reports.
    fn name(&self) -> &str;

    /// What `model` costs, when known; `None` means the model is unknown to this provider.
    fn price(&self, model: &str) -> Option<Price>;

    /// The context window of `model` in tokens (prompt and answer together), when known; used
    /// to skip models too small for a request before calling them.
    fn context_window(&self, _model: &str) -> Option<u64> {
        None
    }

    /// One complete answer.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// The answer as a stream of events ending with [`StreamEvent::Finish`].
    async fn chat_stream(&self, request: &ChatRequest) -> Result<ChatStream, ProviderError>;
}
