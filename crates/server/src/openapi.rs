//! The OpenAPI 3.1 document of the API, generated from the handlers' annotations (utoipa) and
//! served at `GET /openapi.json`, so it cannot drift from the code.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// Every error's body: `{"error": {"code", "message"}}`.
#[derive(Debug, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `unauthorized`, `forbidden`, `not_found`, `rate_limited`, `busy`, ...
    pub code: String,
    /// What happened and how to fix it.
    pub message: String,
}

struct BearerKeys;

impl Modify for BearerKeys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("afk_<id>_<secret>")
                    .description(Some(
                        "An API key from `aetherflow-api keys create`, with the scope the operation needs",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "AetherFlow API", description = "Plan runs, code-safety scans, design analysis and operations for AetherFlow."),
    paths(
        crate::app::submit_run,
        crate::app::list_runs,
        crate::app::get_run,
        crate::app::cancel_run,
        crate::app::run_events,
        crate::app::scan,
        crate::app::metrics,
        crate::execute::execute,
        crate::upload::designer_upload,
        crate::gateway::chat_completions,
        crate::gateway::models,
    ),
    components(schemas(
        crate::app::RunRequest,
        crate::app::ScanRequest,
        crate::app::ScanFile,
        crate::execute::ExecuteRequest,
        crate::store::RunRecord,
        crate::store::RunState,
        ErrorBody,
        ErrorDetail,
    )),
    modifiers(&BearerKeys)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub(crate) async fn document() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}
