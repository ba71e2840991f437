//! `Authorization: Bearer <key>` → the calling key and its scopes, or 401. Handlers then ask for
//! the scope they need ([`Caller::require`], 403 without it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::http::header::AUTHORIZATION;
use actix_web::{FromRequest, HttpRequest, web};

use crate::error::ApiError;
use crate::{KeyScope, Scopes, Store};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key's public id.
    pub key_id: String,
    /// What it may do.
    pub scopes: Scopes,
}

impl Caller {
    /// Ok when the key has `scope` (or `admin`), else 403.
    pub fn require(&self, scope: KeyScope) -> Result<(), ApiError> {
        if self.scopes.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::forbidden(scope))
        }
    }

    /// Whether the caller sees every key's runs.
    pub fn is_admin(&self) -> bool {
        self.scopes.0.contains(&KeyScope::Admin)
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let store = req.app_data::<web::Data<Arc<dyn Store>>>().cloned();
        let limits = req
            .app_data::<web::Data<crate::limits::RateLimits>>()
            .cloned();
        let request = req.clone();
        let presented = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|v| v.trim().to_owned());
        Box::pin(async move {
            // Requests without the header were already counted by IP in the middleware.
            let had_key = presented.is_some();
            let found = match (store, presented) {
                (Some(store), Some(presented)) => store.authenticate(&presented).await?,
                _ => None,
            };
            match (found, limits) {
                (Some((key_id, scopes)), limits) => {
                    if let Some(limits) = limits {
                        limits.check_key(&request, &key_id).await?;
                    }
                    Ok(Caller { key_id, scopes })
                }
                // A missing or bad key counts against the client's IP: guessing is throttled.
                (None, Some(limits)) if had_key => {
                    limits.check_ip(&request).await?;
                    Err(ApiError::unauthorized())
                }
                (None, _) => Err(ApiError::unauthorized()),
            }
        })
    }
}
