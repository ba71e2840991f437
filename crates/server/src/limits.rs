//! Rate limits: a GCRA bucket per API key (by its id, once the key is verified) and one per
//! client IP for requests without a valid key — including failed authentications, so guessing
//! keys is throttled too. Built on `governor` (the GCRA and keyed state); actix-governor is not
//! used because it is GPL-3.0-or-later (ADR 0009). A refusal is 429 with `Retry-After`;
//! every limited response carries `X-RateLimit-Limit` and `X-RateLimit-Remaining`.
//!
//! With `redis.url` set the buckets live in Redis (the same GCRA, evaluated atomically there),
//! so N replicas together grant what one would; when Redis fails the process's own buckets
//! decide, with a warning and a metric.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aetherflow_redis::ratelimit::{RedisRateLimiter, Verdict};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::HeaderValue;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, HttpRequest};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

use crate::error::ApiError;

type Keyed<K> = RateLimiter<
    K,
    governor::state::keyed::DefaultKeyedStateStore<K>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// Requests per minute, per key and per client IP.
#[derive(Clone)]
pub struct RateLimits {
    keys: Arc<Keyed<String>>,
    ips: Arc<Keyed<IpAddr>>,
    per_key: u32,
    per_ip: u32,
    shared: Option<RedisRateLimiter>,
    local_fallbacks: Arc<AtomicU64>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("per_key", &self.per_key)
            .field("per_ip", &self.per_ip)
            .field("shared", &self.shared.is_some())
            .finish()
    }
}

/// What the limiter said about a request, copied into its response headers.
#[derive(Debug, Clone, Copy)]
struct RateInfo {
    limit: u32,
    remaining: u32,
}

fn quota(per_minute: NonZeroU32) -> Quota {
    // The whole minute's allowance may come as a burst, refilled evenly.
    Quota::per_minute(per_minute).allow_burst(per_minute)
}

impl RateLimits {
    /// `per_key` requests a minute for each API key, `per_ip` for each client IP without one.
    pub fn new(per_key: NonZeroU32, per_ip: NonZeroU32) -> Self {
        RateLimits {
            keys: Arc::new(RateLimiter::keyed(quota(per_key)).with_middleware()),
            ips: Arc::new(RateLimiter::keyed(quota(per_ip)).with_middleware()),
            per_key: per_key.get(),
            per_ip: per_ip.get(),
            shared: None,
            local_fallbacks: Arc::default(),
        }
    }

    /// Keeps the buckets in Redis, shared with every replica.
    #[must_use]
    pub fn with_shared(mut self, limiter: RedisRateLimiter) -> Self {
        self.shared = Some(limiter);
        self
    }

    /// How many requests were limited by this process's own buckets because Redis failed.
    pub fn local_fallbacks(&self) -> u64 {
        self.local_fallbacks.load(Ordering::Relaxed)
    }

    /// Asks the shared buckets; `None` when there are none or Redis failed (then the caller
    /// uses the local ones).
    async fn shared_verdict(&self, bucket: String, limit: u32) -> Option<Verdict> {
        let limiter = self.shared.as_ref()?;
        match limiter.check(&bucket, limit).await {
            Ok(v) => Some(v),
            Err(e) => {
                self.local_fallbacks.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "shared rate limits unavailable; this process's own buckets decide");
                None
            }
        }
    }

    /// Counts a request by an authenticated key; 429 when it is over its rate.
    pub async fn check_key(&self, request: &HttpRequest, key_id: &str) -> Result<(), ApiError> {
        if let Some(v) = self
            .shared_verdict(format!("key:{key_id}"), self.per_key)
            .await
        {
            return verdict(request, self.per_key, v);
        }
        let outcome = self.keys.check_key(&key_id.to_owned());
        record(request, self.per_key, outcome)
    }

    /// Counts a request without a (valid) key against its client IP; 429 when over.
    pub async fn check_ip(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let Some(ip) = request.peer_addr().map(|a| a.ip()) else {
            return Ok(());
        };
        if let Some(v) = self.shared_verdict(format!("ip:{ip}"), self.per_ip).await {
            return verdict(request, self.per_ip, v);
        }
        let outcome = self.ips.check_key(&ip);
        record(request, self.per_ip, outcome)
    }

    /// Forgets buckets that are full again (call now and then; keeps memory bounded).
    pub fn shrink(&self) {
        self.keys.retain_recent();
        self.ips.retain_recent();
        self.keys.shrink_to_fit();
        self.ips.shrink_to_fit();
    }
}

fn verdict(request: &HttpRequest, limit: u32, v: Verdict) -> Result<(), ApiError> {
    match v {
        Verdict::Allowed { remaining } => {
            request
                .extensions_mut()
                .insert(RateInfo { limit, remaining });
            Ok(())
        }
        Verdict::Refused { retry_after } => refused(request, limit, retry_after),
    }
}

fn refused(request: &HttpRequest, limit: u32, wait: Duration) -> Result<(), ApiError> {
    request.extensions_mut().insert(RateInfo {
        limit,
        remaining: 0,
    });
    let secs = wait.max(Duration::from_secs(1)).as_secs_f64().ceil() as u64;
    Err(ApiError {
        status: 429,
        code: "rate_limited",
        message: format!("over {limit} requests a minute; retry in {secs} s"),
        retry_after: Some(secs),
    })
}

fn record(
    request: &HttpRequest,
    limit: u32,
    outcome: Result<
        governor::middleware::StateSnapshot,
        governor::NotUntil<<DefaultClock as Clock>::Instant>,
    >,
) -> Result<(), ApiError> {
    match outcome {
        Ok(snapshot) => {
            request.extensions_mut().insert(RateInfo {
                limit,
                remaining: snapshot.remaining_burst_capacity(),
            });
            Ok(())
        }
        Err(not_until) => refused(
            request,
            limit,
            not_until.wait_time_from(DefaultClock::default().now()),
        ),
    }
}

/// Middleware: requests that carry no `Authorization` header are limited by client IP here
/// (those with one are limited by key, or by IP when the key is bad, in the `Caller`
/// extractor); every response gets the `X-RateLimit-*` headers of the bucket it used.
pub async fn middleware(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody + 'static>, actix_web::Error> {
    if !request
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
        && let Some(limits) = request.app_data::<actix_web::web::Data<RateLimits>>()
    {
        limits.check_ip(request.request()).await?;
    }
    let mut response = next.call(request).await?;
    let info = response.request().extensions().get::<RateInfo>().copied();
    if let Some(info) = info {
        let headers = response.headers_mut();
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from(info.limit),
        );
        headers.insert(
            actix_web::http::header::HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from(info.remaining),
        );
    }
    Ok(response)
}
