//! Token estimates before a call: a real BPE tokenizer (OpenAI's `cl100k_base`, through
//! tiktoken-rs) rather than a bytes-per-token guess. No provider publishes an offline tokenizer
//! for every model it serves, so this is an approximation: `cl100k_base` counts code and
//! English within a few percent of DeepSeek's, Kimi's and Mistral's tokenizers and somewhat above
//! Gemini's (a larger vocabulary), which errs on the safe side for window checks.
//!
//! Used for routing by size and to skip models whose context window is too small. Budget
//! reservations do not use it: they reserve the provable bound (one token per prompt byte), so
//! a tokenizer that counts differently can never let spend pass a cap.
//!
//! The tables load once per process, on first use (about 1.7 MB, tens of milliseconds).

use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

use crate::ChatRequest;

/// Tokens a chat template adds per message (role markers, separators), as OpenAI documents for
/// its chat models; other providers' templates are of the same order.
pub const TOKENS_PER_MESSAGE: u64 = 4;

fn tokenizer() -> Option<&'static CoreBPE> {
    static BPE: OnceLock<Option<CoreBPE>> = OnceLock::new();
    BPE.get_or_init(|| match tiktoken_rs::cl100k_base() {
        Ok(bpe) => Some(bpe),
        Err(e) => {
            tracing::warn!(error = %e, "the tokenizer did not load; estimating 3 bytes a token");
            None
        }
    })
    .as_ref()
}

/// About how many tokens `text` is.
pub fn estimate(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match tokenizer() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(3),
    }
}

/// About how many prompt tokens `request` is: its system prompt and messages with the chat
/// template's per-message overhead.
pub fn estimate_request(request: &ChatRequest) -> u64 {
    let system = request
        .system
        .as_deref()
        .map_or(0, |s| estimate(s) + TOKENS_PER_MESSAGE);
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            estimate(&m.content)
                + TOKENS_PER_MESSAGE
                + m.images.len() as u64 * crate::Image::ESTIMATED_TOKENS
        })
        .sum();
    // Tool declarations and schemas are prompt too: about three bytes a token for JSON.
    system + messages + (request.schema_text_len() as u64).div_ceil(3)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn counts_like_the_reference_tokenizer() {
        // Reference counts from OpenAI's tiktoken (Python) for cl100k_base.
        assert_eq!(estimate("hello world"), 2);
        assert_eq!(estimate("tiktoken is great!"), 6);
        assert_eq!(estimate(""), 0);
    }

    #[test]
    fn code_is_far_fewer_tokens_than_bytes_and_more_than_a_fifth() {
        let code = "def add(a: int, b: int) -> int:\n    \"\"\"Add two numbers.\"\"\"\n    return a + b\n\n\
                    class Todo:\n    def __init__(self, title: str) -> None:\n        self.title = title\n"
            .repeat(20);
        let tokens = estimate(&code);
        let bytes = code.len() as u64;
        assert!(tokens < bytes / 2, "{tokens} tokens for {bytes} bytes");
        assert!(tokens > bytes / 8, "{tokens} tokens for {bytes} bytes");
    }

    #[test]
    fn a_request_counts_its_system_prompt_messages_and_overhead() {
        let request = ChatRequest {
            system: Some("hello world".into()),
            messages: vec![
                Message::user("hello world"),
                Message::assistant("hello world"),
            ],
            ..ChatRequest::default()
        };
        assert_eq!(estimate_request(&request), 3 * (2 + TOKENS_PER_MESSAGE));
    }
}
