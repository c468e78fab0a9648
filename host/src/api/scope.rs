//! The team scope of a request: who is calling and what they may do to
//! which team's objects. Every handler of a team-owned route takes a
//! [`Scope`], and the domain gets its team from it, never from the body
//! alone.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::auth::{Access, Identity};
use crate::names::{DEFAULT_TEAM, Name};

/// Who is calling; see [`Identity`]. Extracted from what the `identify`
/// middleware found.
#[derive(Debug, Clone)]
pub struct Scope(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Self)
            .ok_or_else(|| ApiError::internal("a route ran without the identify middleware"))
    }
}

impl Scope {
    /// The team a new object goes to: the one the body names, which must be
    /// the caller's own (403 otherwise), or the caller's team; a global
    /// admin may name any team and defaults to `default`. The caller needs
    /// `access` there.
    pub fn team_for(&self, requested: Option<Name>, access: Access) -> Result<Name, ApiError> {
        let team = match (&self.0, requested) {
            (Identity::Team { team, .. }, Some(requested)) if requested != team.as_str() => {
                return Err(forbidden(format!(
                    "this token acts for team {team:?}, not {:?}",
                    requested.as_str()
                )));
            }
            (Identity::Team { team, .. }, _) => {
                Name::parse(team).map_err(|err| ApiError::internal(err.to_string()))?
            }
            (_, Some(requested)) => requested,
            (_, None) => Name::from_static(DEFAULT_TEAM),
        };
        self.require_role(&team, access)?;
        Ok(team)
    }

    /// Checks that the caller may do `access` to an object of `team`: an
    /// object it may not even see is `missing()` (404, so ids do not leak),
    /// one it sees without the role for `access` is 403.
    pub fn object(
        &self,
        team: &str,
        access: Access,
        missing: impl FnOnce() -> ApiError,
    ) -> Result<(), ApiError> {
        if !self.0.sees(team) {
            return Err(missing());
        }
        self.require_role(team, access)
    }

    /// Whether the caller may see `team`'s objects.
    pub fn sees(&self, team: &str) -> bool {
        self.0.sees(team)
    }

    /// The one team whose objects the caller sees, or `None` for a caller
    /// who sees every team.
    pub fn only_team(&self) -> Option<&str> {
        match &self.0 {
            Identity::Team { team, .. } => Some(team),
            Identity::Local | Identity::Admin { .. } => None,
        }
    }

    /// Whether the caller acts for every team.
    pub fn is_global_admin(&self) -> bool {
        self.0.is_global_admin()
    }

    fn require_role(&self, team: &str, access: Access) -> Result<(), ApiError> {
        if self.0.allows(team, access) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "role {} of team {:?} may not do this; it needs {}",
                self.0.role().as_str(),
                team,
                access.needs().as_str()
            )))
        }
    }
}

/// 403 in the envelope.
pub fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}
