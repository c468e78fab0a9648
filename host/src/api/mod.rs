//! The HTTP API under `/api/autoagents-management/v1`.
//!
//! Handlers only translate: they take typed input through [`ApiJson`] and
//! path/query extractors, call one domain module, and wrap the answer in the
//! envelope. Every error, ours or axum's, leaves as an [`ApiError`] envelope.
//! Routes are registered together with their OpenAPI description, so the
//! document served at `/openapi.json` lists every route there is.

mod alert_delivery;
mod alerts;
pub mod around;
mod error;
mod extract;
mod metrics;
mod openapi;
mod plans;
mod plugins;
mod recovery;
mod scope;
mod system;
mod tasks;
mod tokens;
mod workers;
mod workflows;

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Request};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};

use crate::App;
use around::{Around, AroundLayer};

pub use error::{ApiError, ErrorEnvelope};
pub use extract::{ApiJson, ApiPath, ApiQuery};
pub use metrics::HttpStats;
pub use scope::Scope;

/// Where every route lives.
pub const BASE_PATH: &str = "/api/autoagents-management/v1";

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 1 << 20;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AutoAgent management API",
        description = "Workers, tasks, plugins, status and metrics of an AutoAgent host. \
                       Every response is wrapped in `{\"success\": true, \"data\": ...}`; \
                       every error is `{\"success\": false, \"error\": {\"code\", \"message\"}}`."
    ),
    servers((url = "/api/autoagents-management/v1")),
    components(schemas(ErrorEnvelope))
)]
struct ApiDoc;

/// The whole API as one router, ready to serve.
pub fn router(app: Arc<App>) -> Router {
    let parts = [
        workers::routes(),
        plugins::routes(),
        system::routes(),
        tasks::routes(),
        workflows::routes(),
        plans::routes(),
        recovery::routes(),
        tokens::routes(),
        alert_delivery::routes(),
        alerts::routes(),
        alerts::alert_routes(),
    ];
    let (routes, doc) = parts
        .into_iter()
        .fold(
            OpenApiRouter::with_openapi(ApiDoc::openapi()),
            |all, part| all.merge(part.0),
        )
        .split_for_parts();
    // Rendered once: the document is the same for every request.
    let doc = axum::body::Bytes::from(
        serde_json::to_vec(&openapi::document(doc, BASE_PATH))
            .expect("the OpenAPI document is JSON"),
    );
    routes
        .route(
            &format!("{BASE_PATH}/openapi.json"),
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc,
                    )
                }
            }),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(unknown_route)
        .layer(AroundLayer(FrontDoor {
            app: app.clone(),
            limits: Arc::new(tokens::RateLimits::new(app.token_rate_per_sec)),
        }))
        .with_state(app)
}

/// One module's routes, each registered at its full path under
/// [`BASE_PATH`].
///
/// Not `Router::nest`: nesting wraps every route in two more layers (one
/// strips the prefix, one notes the nested path), each a boxed service
/// cloned per request, and rebuilds every request's URI. The OpenAPI
/// document still lists the paths relative to its server URL, the base
/// ([`openapi::document`] takes the base off).
pub(crate) struct Routes(OpenApiRouter<Arc<App>>);

impl Routes {
    /// No routes yet.
    pub(crate) fn new() -> Self {
        Self(OpenApiRouter::new())
    }

    /// Adds the handlers `routes!` gathered, at their paths under the base.
    pub(crate) fn routes(
        self,
        (schemas, mut paths, handlers): UtoipaMethodRouter<Arc<App>>,
    ) -> Self {
        paths.paths = std::mem::take(&mut paths.paths)
            .into_iter()
            .map(|(path, item)| (format!("{BASE_PATH}{path}"), item))
            .collect();
        Self(self.0.routes((schemas, paths, handlers)))
    }
}

async fn unknown_route(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route for {} {}",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Every request passes here once: the body limit, who calls
/// ([`tokens::identify`], its refusals included) and, once answered, the
/// count by method, route and status. One layer rather than three: it runs
/// on every request.
#[derive(Clone)]
struct FrontDoor {
    app: Arc<App>,
    limits: Arc<tokens::RateLimits>,
}

impl Around for FrontDoor {
    async fn around<S>(self, inner: S, request: Request) -> Response
    where
        S: tower::Service<Request, Response = Response, Error = Infallible> + Send + 'static,
        S::Future: Send,
    {
        front_door(&self.app, &self.limits, request, inner).await
    }
}

async fn front_door<S>(
    app: &App,
    limits: &tokens::RateLimits,
    request: Request,
    inner: S,
) -> Response
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    let method = request.method().clone();
    // The route template, shared with the router (no copy).
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    // The body limit of every route (an upload's own, set on its route,
    // is inside this one and wins), applied here rather than as a layer of
    // its own: each layer on the router is one more boxed service a request.
    let mut inner = DefaultBodyLimit::max(MAX_BODY_BYTES).layer(inner);
    let next = |request| async move {
        match inner.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    };
    let response = tokens::identify(app, limits, request, next)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let status = response.status();
    // A refusal of a faulted store is not an error of this request: the
    // store logs its episode once, however many requests it refuses.
    if status.is_server_error()
        && response
            .extensions()
            .get::<error::StorageRefusal>()
            .is_none()
    {
        let route = route.as_ref().map_or("-", |r| r.as_str());
        tracing::error!(%method, route = %route, status = status.as_u16(), "request failed");
    }
    app.http
        .record(&method, route.as_ref().map(|r| r.as_str()), status);
    response
}
