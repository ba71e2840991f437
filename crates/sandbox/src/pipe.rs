//! Captured stdout/stderr with a byte cap: output past the cap is dropped and flagged, never an
//! error the guest sees (a `print` in a loop must not turn into a traceback about the pipe).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

/// A cloneable capture buffer holding at most `cap` bytes.
#[derive(Debug, Clone)]
pub(crate) struct CappedPipe {
    cap: usize,
    inner: Arc<Mutex<Captured>>,
}

impl CappedPipe {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            inner: Arc::default(),
        }
    }

    fn push(&self, data: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let room = self.cap.saturating_sub(inner.bytes.len());
        if data.len() > room {
            inner.truncated = true;
        }
        let take = data.len().min(room);
        inner.bytes.extend_from_slice(&data[..take]);
    }

    /// The captured bytes and whether anything was dropped.
    pub(crate) fn take(&self) -> (Vec<u8>, bool) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (std::mem::take(&mut inner.bytes), inner.truncated)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always accept a full buffer: what does not fit is dropped, not refused.
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_cap_bytes_and_flags_the_rest() {
        let mut pipe = CappedPipe::new(5);
        pipe.write(Bytes::from_static(b"abc")).unwrap();
        pipe.write(Bytes::from_static(b"defgh")).unwrap();
        assert_eq!(pipe.take(), (b"abcde".to_vec(), true));
    }

    #[test]
    fn output_within_the_cap_is_not_flagged() {
        let mut pipe = CappedPipe::new(5);
        pipe.write(Bytes::from_static(b"abcde")).unwrap();
        assert_eq!(pipe.take(), (b"abcde".to_vec(), false));
    }
}
