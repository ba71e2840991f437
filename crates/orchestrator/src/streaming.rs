//! Streaming with failover: a stream may move to the next target only before its first event
//! reaches the caller; once tokens flowed, an error is the caller's (text already shown cannot
//! be taken back).

use aetherflow_provider::{ChatRequest, ChatStream, ProviderError};
use futures::StreamExt;

use crate::routing::Target;

/// The targets tried before one produced a first event, and why each failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("no provider could start the stream: {}", .failures.iter().map(|(t, e)| format!("{t}: {e}")).collect::<Vec<_>>().join("; then "))]
pub struct StreamFailed {
    /// (provider/model, error) per target tried.
    pub failures: Vec<(String, ProviderError)>,
}

/// Opens a stream on the first target that produces a first event, trying `targets` in order.
/// Returns the target's index and the stream (its first event included).
pub async fn stream_with_failover(
    targets: &[Target],
    request: &ChatRequest,
) -> Result<(usize, ChatStream), StreamFailed> {
    let mut failures = Vec::new();
    for (i, target) in targets.iter().enumerate() {
        let mut req = request.clone();
        req.model.clone_from(&target.entry.model);
        let label = format!("{}/{}", target.name, target.entry.model);
        let mut stream = match target.entry.provider.chat_stream(&req).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(target = %label, error = %e, "stream did not start; trying the next provider");
                failures.push((label, e));
                continue;
            }
        };
        match stream.next().await {
            Some(Ok(first)) => {
                let joined = futures::stream::once(async move { Ok(first) }).chain(stream);
                return Ok((i, Box::pin(joined)));
            }
            Some(Err(e)) => {
                tracing::info!(target = %label, error = %e, "stream failed before its first event; trying the next provider");
                failures.push((label, e));
            }
            None => failures.push((
                label,
                ProviderError::Decode {
                    message: "the stream ended without any event".into(),
                },
            )),
        }
    }
    Err(StreamFailed { failures })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use aetherflow_domain::Price;
    use aetherflow_provider::{ChatResponse, FinishReason, Message, Provider, StreamEvent};
    use async_trait::async_trait;

    use super::*;
    use crate::routing::ProviderEntry;

    /// Streams `events`; an `Err` among them is yielded in place.
    struct Scripted(
        Vec<Result<StreamEvent, ProviderError>>,
        Option<ProviderError>,
    );

    #[async_trait]
    impl Provider for Scripted {
        fn name(&self) -> &str {
            "scripted"
        }
        fn price(&self, _: &str) -> Option<Price> {
            Some(Price::FREE)
        }
        async fn chat(&self, _: &ChatRequest) -> Result<ChatResponse, ProviderError> {
            Err(ProviderError::InvalidRequest {
                message: "stream only".into(),
            })
        }
        async fn chat_stream(&self, _: &ChatRequest) -> Result<ChatStream, ProviderError> {
            if let Some(e) = &self.1 {
                return Err(e.clone());
            }
            Ok(Box::pin(futures::stream::iter(self.0.clone())))
        }
    }

    fn target(name: &str, p: Scripted) -> Target {
        Target {
            name: name.into(),
            entry: ProviderEntry {
                provider: Arc::new(p),
                model: "m".into(),
            },
        }
    }

    fn server() -> ProviderError {
        ProviderError::Server {
            status: Some(503),
            message: "down".into(),
        }
    }

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message::user("hi")],
            ..ChatRequest::default()
        }
    }

    async fn collect(s: ChatStream) -> Vec<Result<StreamEvent, ProviderError>> {
        s.collect().await
    }

    #[tokio::test]
    async fn fails_over_before_the_first_event() {
        let targets = [
            target("refuses", Scripted(vec![], Some(server()))),
            target("breaks", Scripted(vec![Err(server())], None)),
            target(
                "works",
                Scripted(
                    vec![
                        Ok(StreamEvent::Text("hel".into())),
                        Ok(StreamEvent::Text("lo".into())),
                        Ok(StreamEvent::Finish(FinishReason::Stop)),
                    ],
                    None,
                ),
            ),
        ];
        let (i, stream) = stream_with_failover(&targets, &request())
            .await
            .expect("a stream");
        assert_eq!(i, 2);
        let events = collect(stream).await;
        assert_eq!(events.len(), 3, "the first event is not lost");
        assert!(matches!(&events[0], Ok(StreamEvent::Text(t)) if t == "hel"));
    }

    #[tokio::test]
    async fn after_the_first_event_errors_reach_the_caller() {
        let targets = [
            target(
                "cuts",
                Scripted(
                    vec![Ok(StreamEvent::Text("par".into())), Err(server())],
                    None,
                ),
            ),
            target(
                "never",
                Scripted(vec![Ok(StreamEvent::Text("other".into()))], None),
            ),
        ];
        let (i, stream) = stream_with_failover(&targets, &request())
            .await
            .expect("a stream");
        assert_eq!(i, 0);
        let events = collect(stream).await;
        assert!(matches!(events.last(), Some(Err(e)) if e.kind() == "server"));
    }

    #[tokio::test]
    async fn when_nothing_starts_every_failure_is_named() {
        let targets = [
            target("a", Scripted(vec![], Some(server()))),
            target("b", Scripted(vec![], None)),
        ];
        let err = stream_with_failover(&targets, &request())
            .await
            .err()
            .expect("no stream");
        assert_eq!(err.failures.len(), 2);
        assert!(err.to_string().contains("a/m: provider error"), "{err}");
        assert!(err.to_string().contains("b/m: could not decode"), "{err}");
    }
}
