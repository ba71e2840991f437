//! Reading request bodies with hard limits — total bytes, and a deadline for the whole body (a
//! client that trickles bytes is cut off) — whole, or as `multipart/form-data` parts (with a
//! limit on their number too).

use std::time::Duration;

use actix_multipart::Multipart;
use actix_web::HttpRequest;
use actix_web::web;
use futures::StreamExt;

use crate::error::ApiError;

/// Most parts one form may have.
pub const MAX_PARTS: usize = 8;

/// One part of a form.
#[derive(Debug, Clone)]
pub struct Part {
    /// The field name.
    pub name: String,
    /// The client's file name, when the part is a file (never used to store anything).
    pub filename: Option<String>,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Part {
    /// The part as UTF-8 text, or 400 naming the field.
    pub fn text(&self) -> Result<&str, ApiError> {
        std::str::from_utf8(&self.bytes)
            .map_err(|_| ApiError::bad_request(format!("form field `{}` is not UTF-8", self.name)))
    }
}

/// Whether the request carries a multipart form.
pub fn is_multipart(request: &HttpRequest) -> bool {
    request
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// Reads every part of the form, refusing (413) a body over `max_bytes` in all, more than
/// [`MAX_PARTS`] parts (400), or a body that is not complete within `deadline` (408).
pub async fn read(
    request: &HttpRequest,
    payload: web::Payload,
    max_bytes: usize,
    deadline: Duration,
) -> Result<Vec<Part>, ApiError> {
    if let Some(length) = request
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && length > max_bytes as u64
    {
        return Err(too_large(max_bytes));
    }
    let mut form = Multipart::new(request.headers(), payload);
    let reading = async {
        let mut parts = Vec::new();
        let mut total = 0usize;
        while let Some(field) = form.next().await {
            let mut field = field.map_err(malformed)?;
            if parts.len() == MAX_PARTS {
                return Err(ApiError::bad_request(format!(
                    "the form has more than {MAX_PARTS} parts"
                )));
            }
            let (name, filename) = match field.content_disposition() {
                Some(cd) => (
                    cd.get_name().unwrap_or_default().to_owned(),
                    cd.get_filename().map(str::to_owned),
                ),
                None => (String::new(), None),
            };
            let mut bytes = Vec::new();
            while let Some(chunk) = field.next().await {
                let chunk = chunk.map_err(malformed)?;
                total += chunk.len();
                if total > max_bytes {
                    return Err(too_large(max_bytes));
                }
                bytes.extend_from_slice(&chunk);
            }
            parts.push(Part {
                name,
                filename,
                bytes,
            });
        }
        Ok(parts)
    };
    match tokio::time::timeout(deadline, reading).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(deadline)),
    }
}

/// Reads a whole body of at most `max_bytes` (413 beyond) that must arrive within `deadline`
/// (408 otherwise).
pub async fn read_body(
    mut payload: web::Payload,
    max_bytes: usize,
    deadline: Duration,
) -> Result<web::Bytes, ApiError> {
    let reading = async {
        let mut body = web::BytesMut::new();
        while let Some(chunk) = payload.next().await {
            let chunk = chunk
                .map_err(|e| ApiError::bad_request(format!("the body could not be read: {e}")))?;
            if body.len() + chunk.len() > max_bytes {
                return Err(too_large(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    };
    match tokio::time::timeout(deadline, reading).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(deadline)),
    }
}

fn timed_out(deadline: Duration) -> ApiError {
    ApiError {
        status: 408,
        code: "request_timeout",
        message: format!(
            "the body was not received within {} s; send it again",
            deadline.as_secs()
        ),
        retry_after: None,
    }
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError {
        status: 413,
        code: "too_large",
        message: format!("the body is larger than the {max_bytes}-byte limit"),
        retry_after: None,
    }
}

fn malformed(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request(format!("the multipart form could not be read: {e}"))
}
