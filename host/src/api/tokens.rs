//! Who is calling (the `identify` middleware) and `/tokens`, where admins
//! manage API tokens.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, created, ok};
use super::extract::{ApiJson, ApiPath};
use crate::App;
use crate::auth::{Identity, Role, Token, TokenError};
use crate::names::Name;

pub(super) fn routes() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

/// Finds out who is calling and hands the [`Identity`] to the handlers:
/// `Authorization: Bearer <token>`, or no header at all on a loopback host.
pub(super) async fn identify(
    State(app): State<Arc<App>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
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
        None if app.anonymous_is_admin => Identity::Admin,
        None => {
            return Err(unauthorized(
                "this host requires `Authorization: Bearer <token>` on every request",
            ));
        }
    };
    request.extensions_mut().insert(identity);
    Ok(next.run(request).await)
}

/// 403 unless `identity` may act for `team`.
pub(super) fn require_team(identity: &Identity, team: &str) -> Result<(), ApiError> {
    if identity.may_act_for(team) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("this token does not act for team {team:?}"),
        ))
    }
}

fn require_admin(identity: &Identity) -> Result<(), ApiError> {
    match identity {
        Identity::Admin => Ok(()),
        Identity::Team(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only an admin token manages tokens",
        )),
    }
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Invalid(_) => ApiError::invalid(err.to_string()),
            TokenError::NotFound(_) => ApiError::not_found(err.to_string()),
            TokenError::Store(store) => ApiError::internal(store),
        }
    }
}

/// A token to create.
#[derive(Debug, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NewToken {
    /// `admin` or `team`.
    role: Role,
    /// The team a `team` token acts for.
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

/// Creates an API token (admin only). The secret is in this answer only.
#[utoipa::path(
    post, path = "/tokens", tag = "tokens",
    request_body = NewToken,
    responses(
        (status = 201, description = "`data` is the token and its secret", body = CreatedToken),
        (status = 403, description = "Not an admin", body = super::ErrorEnvelope),
        (status = 422, description = "Bad role or team", body = super::ErrorEnvelope),
    )
)]
async fn create_token(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    ApiJson(request): ApiJson<NewToken>,
) -> Result<Response, ApiError> {
    require_admin(&identity)?;
    let (mut token, secret) = app.tokens.create(request.role, request.team).await?;
    token.secret_sha256.clear();
    Ok(created(CreatedToken { token, secret }))
}

/// Every token, without secrets (admin only).
#[utoipa::path(
    get, path = "/tokens", tag = "tokens",
    responses(
        (status = 200, description = "`data` is the list of tokens", body = Vec<Token>),
        (status = 403, description = "Not an admin", body = super::ErrorEnvelope),
    )
)]
async fn list_tokens(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
) -> Result<Response, ApiError> {
    require_admin(&identity)?;
    Ok(ok(app.tokens.list()))
}

/// Revokes a token (admin only); requests carrying it are refused from now on.
#[utoipa::path(
    delete, path = "/tokens/{id}", tag = "tokens",
    params(("id" = Name, Path, description = "Token id, `tok_…`")),
    responses(
        (status = 200, description = "Revoked"),
        (status = 403, description = "Not an admin", body = super::ErrorEnvelope),
        (status = 404, description = "No such token", body = super::ErrorEnvelope),
    )
)]
async fn revoke_token(
    State(app): State<Arc<App>>,
    Extension(identity): Extension<Identity>,
    ApiPath(id): ApiPath<Name>,
) -> Result<Response, ApiError> {
    require_admin(&identity)?;
    app.tokens.revoke(&id).await?;
    Ok(ok(serde_json::json!({ "id": id, "revoked": true })))
}
