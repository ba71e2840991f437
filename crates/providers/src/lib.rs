//! Provider adapters: this crate will own one module per provider — DeepSeek, Gemini, Groq,
//! Mistral Codestral (chat and FIM), Moonshot Kimi and any OpenAI-compatible server — each behind
//! its own cargo feature, translating that provider's wire format, errors and rate-limit headers
//! into the types of `aetherflow-provider`.
//!
//! It is empty until the providers issue lands. Until then the CLI runs only `--offline` with
//! the built-in mock provider, and says so when keys are configured.
