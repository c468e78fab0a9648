//! Who is calling (the `identify` middleware) and `/tokens`, where admins
//! manage API tokens.

use std::sync::Arc;

use std::num::NonZeroU32;

use super::Routes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath};
use super::scope::{Scope, forbidden};
use crate::App;
use crate::auth::{Access, Identity, Role, Token, TokenError};
use crate::names::Name;

pub(super) fn routes() -> Routes {
    Routes::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// Request rates per token: each token may send `rate` requests a second on
/// average, in bursts of up to twice that. The local operator of a loopback
/// host (no token) is not limited.
pub(super) struct RateLimits {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    /// Limits of `per_second` requests per token; 0 turns them off.
    pub(super) fn new(per_second: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2 is not 0"));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    fn check(&self, identity: &Identity) -> Result<(), ApiError> {
        let (Some(limiter), false) = (&self.limiter, *identity == Identity::Local) else {
            return Ok(());
        };
        limiter
            .check_key(&identity.token_id().to_owned())
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!(
                        "token {} sent more requests than its rate limit allows; retry in {} ms",
                        identity.token_id(),
                        wait.as_millis().max(1)
                    ),
                )
            })
    }
}

/// Finds out who is calling and hands the [`Identity`] to the handlers:
/// `Authorization: Bearer <token>`, or no header at all on a loopback host.
/// Applies the token's rate limit, and logs every write with the token's
/// id, team and role (never its secret).
pub(super) async fn identify<F>(
    app: &App,
    limits: &RateLimits,
    mut request: Request,
    next: impl FnOnce(Request) -> F,
) -> Result<Response, ApiError>
where
    F: Future<Output = Response>,
{
    let unauthorized =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
    let identity = match request.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let secret = value
                .to_str()
                .ok()
                .and_then(|value| value.strip_prefix("Bearer "))
                .ok_or_else(|| unauthorized("expected `Authorization: Bearer <token>`"))?;
            app.tokens
                .authenticate(secret.trim())
                .ok_or_else(|| unauthorized("unknown or revoked token"))?
        }
        None if app.anonymous_is_admin => Identity::Local,
        None => {
            return Err(unauthorized(
                "this host requires `Authorization: Bearer <token>` on every request",
            ));
        }
    };
    limits.check(&identity)?;
    let write = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    // Kept only for the log line of a write.
    let uri = write.then(|| request.uri().clone());
    let method = request.method().clone();
    request.extensions_mut().insert(identity.clone());
    let response = next(request).await;
    if let Some(uri) = uri {
        tracing::info!(
            token_id = %identity.token_id(),
            team = %identity.team(),
            role = %identity.role().as_str(),
            method = %method,
            path = %uri.path(),
            status = response.status().as_u16(),
            "write request"
        );
    }
    Ok(response)
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Invalid(_) => ApiError::invalid(err.to_string()),
            TokenError::NotFound(_) => ApiError::not_found(err.to_string()),
            TokenError::Store(store) => store.into(),
        }
    }
}

/// A token to create.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewToken {
    /// `viewer`, `operator` or `admin` (`team` is read as `admin`).
    role: Role,
    /// The team it acts for; leave it out for a global admin token.
    team: Option<Name>,
}

/// A token just created, with its secret, which is shown only this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct CreatedToken {
    #[serde(flatten)]
    token: Token,
    /// Send as `Authorization: Bearer <secret>`.
    secret: String,
}

/// Creates an API token. A global admin creates any; a team admin creates
/// tokens of its own team. The secret is in this answer only.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "`data` is the token and its secret", body = CreatedToken),
        (status = 403, description = "Not an admin of the token's team", body = super::ErrorEnvelope),
        (status = 422, description = "Bad role or team", body = super::ErrorEnvelope),
    )
)]
async fn create_token(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiJson(request): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    let team = match request.team {
        Some(team) => Some(scope.team_for(Some(team), Access::Manage)?),
        None if scope.is_global_admin() => None,
        None => return Err(forbidden("only a global admin creates global admin tokens")),
    };
    let (mut token, secret) = app.tokens.create(request.role, team).await?;
    token.secret_sha256.clear();
    Ok(created(CreatedToken { token, secret }))
}

/// The tokens the caller manages, without secrets: every token for a global
/// admin, its team's for a team admin.
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    responses(
        (status = 200, description = "`data` is the list of tokens", body = Vec<Token>),
        (status = 403, description = "Not an admin", body = super::ErrorEnvelope),
    )
)]
async fn list_tokens(State(app): State<Arc<App>>, scope: Scope) -> Result<Response, ApiError> {
    if !scope.is_global_admin() && scope.0.role() != Role::Admin {
        return Err(forbidden("only admins manage tokens"));
    }
    let mut tokens = app.tokens.list();
    tokens.retain(|token| match &token.team {
        Some(team) => scope.0.allows(team, Access::Manage),
        None => scope.is_global_admin(),
    });
    Ok(ok(tokens))
}

/// Revokes a token; requests carrying it are refused from now on.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = Name, Path, description = "Token id, `tok_…`")),
    responses(
        (status = 200, description = "Revoked"),
        (status = 403, description = "Not an admin of the token's team", body = super::ErrorEnvelope),
        (status = 404, description = "No such token", body = super::ErrorEnvelope),
    )
)]
async fn revoke_token(
    State(app): State<Arc<App>>,
    scope: Scope,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    let missing = || ApiError::from(TokenError::NotFound(id.to_string()));
    let token = app.tokens.get(&id).ok_or_else(missing)?;
    match &token.team {
        Some(team) => scope.object(team, Access::Manage, missing)?,
        None if scope.is_global_admin() => {}
        None => return Err(missing()),
    }
    app.tokens.revoke(&id).await?;
    Ok(ok(serde_json::json!({ "id": id, "revoked": true })))
}
