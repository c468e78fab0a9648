//! API tokens: who is calling, and for which team.
//!
//! A token belongs to one team (it may act for that team only) or is an
//! admin token (it may act for every team and manage tokens). Only the
//! SHA-256 of a token's secret is stored; the secret is shown once, when the
//! token is created.
//!
//! Callers without a token are the local operator when the host listens on
//! a loopback address, and act as admin, so the user guide's `curl` lines
//! work as written; a host on any other address refuses them.

use std::collections::HashMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::digest::{random_hex, sha256_hex};
use crate::names::Name;
use crate::store::{Batch, Store, StoreError, Table};

const TOKENS: &str = "api_tokens";

/// What a token may do for its team; a token without a team and the role
/// `admin` is a global admin.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the team's workers, tasks, workflows and plugins.
    Viewer,
    /// Also submits and cancels tasks, runs workflows, calls plugins and
    /// restarts workers.
    Operator,
    /// Everything of the team: also registers workers, defines workflows,
    /// uploads and removes plugins, and manages the team's tokens. Without a
    /// team: everything, for every team. (`team`, the one role of earlier
    /// versions, reads as `admin`.)
    #[serde(alias = "team")]
    Admin,
}

impl Role {
    /// The word the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

/// What a request wants to do with a team's objects; each needs a role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read.
    Read,
    /// Run things: tasks, workflows, plugin calls, worker restarts.
    Operate,
    /// Change what exists: workers, workflows, plugins, tokens.
    Manage,
}

impl Access {
    /// The least role that grants this access.
    pub fn needs(self) -> Role {
        match self {
            Self::Read => Role::Viewer,
            Self::Operate => Role::Operator,
            Self::Manage => Role::Admin,
        }
    }
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// `tok_` and 16 hex digits; names the token in lists and logs.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The team it acts for; none for a global admin.
    pub team: Option<String>,
    /// When it was created.
    pub created_at: Timestamp,
    /// SHA-256 of the secret, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    #[schema(ignore)]
    pub secret_sha256: String,
}

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// The local operator of a loopback host, without a token: a global
    /// admin.
    Local,
    /// A global admin token.
    Admin {
        /// The token's id.
        token_id: String,
    },
    /// A token of one team.
    Team {
        /// The token's id.
        token_id: String,
        /// The team.
        team: String,
        /// Its role there.
        role: Role,
    },
}

impl Identity {
    /// Whether this caller acts for every team.
    pub fn is_global_admin(&self) -> bool {
        matches!(self, Self::Local | Self::Admin { .. })
    }

    /// Whether this caller may do `access` to `team`'s objects.
    pub fn allows(&self, team: &str, access: Access) -> bool {
        match self {
            Self::Local | Self::Admin { .. } => true,
            Self::Team {
                team: own, role, ..
            } => own == team && *role >= access.needs(),
        }
    }

    /// Whether this caller may see `team`'s objects at all. Objects it may
    /// not see answer 404, so their ids do not leak.
    pub fn sees(&self, team: &str) -> bool {
        self.allows(team, Access::Read)
    }

    /// Whether this caller may see `team`'s plugins in a list: its own and
    /// the bundled ones everybody uses.
    pub fn sees_plugins_of(&self, team: &str) -> bool {
        self.sees(team) || team == crate::plugins::CORE_TEAM
    }

    /// The token's id, for the log; `-` for the local operator.
    pub fn token_id(&self) -> &str {
        match self {
            Self::Local => "-",
            Self::Admin { token_id } | Self::Team { token_id, .. } => token_id,
        }
    }

    /// The team the caller acts for; `*` for a global admin.
    pub fn team(&self) -> &str {
        match self {
            Self::Local | Self::Admin { .. } => "*",
            Self::Team { team, .. } => team,
        }
    }

    /// The caller's role.
    pub fn role(&self) -> Role {
        match self {
            Self::Local | Self::Admin { .. } => Role::Admin,
            Self::Team { role, .. } => *role,
        }
    }
}

/// Why a token could not be created or removed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// A value is not allowed.
    #[error("{0}")]
    Invalid(String),
    /// No token with that id.
    #[error("no token with id {0:?}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The tokens of one host.
pub struct Tokens {
    store: Store,
    table: Table<Token>,
    by_secret: RwLock<HashMap<String, Token>>,
}

impl Tokens {
    /// Loads the tokens kept in `store`.
    pub async fn open(store: &Store) -> Result<Self, StoreError> {
        let table: Table<Token> = store.table(TOKENS);
        let by_secret = table
            .load()
            .await?
            .into_iter()
            .map(|token| (token.secret_sha256.clone(), token))
            .collect();
        Ok(Self {
            store: store.clone(),
            table,
            by_secret: RwLock::new(by_secret),
        })
    }

    /// Whether any token exists.
    pub fn is_empty(&self) -> bool {
        self.by_secret.read().expect("tokens poisoned").is_empty()
    }

    /// Creates a token; returns it and its secret, which is not kept.
    pub async fn create(
        &self,
        role: Role,
        team: Option<Name>,
    ) -> Result<(Token, String), TokenError> {
        if team.is_none() && role != Role::Admin {
            return Err(TokenError::Invalid(format!(
                "a {} token acts for one team and needs a `team`",
                role.as_str()
            )));
        }
        let secret = format!("aat_{}", random_hex(24));
        let token = Token {
            id: format!("tok_{}", random_hex(8)),
            role,
            team: team.map(String::from),
            created_at: Timestamp::now(),
            secret_sha256: sha256_hex(secret.as_bytes()),
        };
        self.table.insert(&token.id, &token).await?;
        self.by_secret
            .write()
            .expect("tokens poisoned")
            .insert(token.secret_sha256.clone(), token.clone());
        tracing::info!(token_id = %token.id, role = %token.role.as_str(), team = %token.team.as_deref().unwrap_or("*"), "API token created");
        Ok((token, secret))
    }

    /// One token, without its secret.
    pub fn get(&self, id: &str) -> Option<Token> {
        self.list().into_iter().find(|token| token.id == id)
    }

    /// Every token, without secrets, oldest first.
    pub fn list(&self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self
            .by_secret
            .read()
            .expect("tokens poisoned")
            .values()
            .cloned()
            .map(|mut token| {
                token.secret_sha256.clear();
                token
            })
            .collect();
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        tokens
    }

    /// Removes a token; requests carrying it are refused from then on.
    pub async fn revoke(&self, id: &str) -> Result<(), TokenError> {
        let hash = self
            .by_secret
            .read()
            .expect("tokens poisoned")
            .iter()
            .find(|(_, token)| token.id == id)
            .map(|(hash, _)| hash.clone())
            .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
        let mut batch = Batch::new();
        batch.push(self.table.delete_op(id));
        self.store.write(batch).await?;
        self.by_secret
            .write()
            .expect("tokens poisoned")
            .remove(&hash);
        tracing::info!(token_id = %id, "API token revoked");
        Ok(())
    }

    /// Who holds `secret`, if it is a token of this host.
    pub fn authenticate(&self, secret: &str) -> Option<Identity> {
        let tokens = self.by_secret.read().expect("tokens poisoned");
        let token = tokens.get(&sha256_hex(secret.as_bytes()))?;
        Some(match &token.team {
            Some(team) => Identity::Team {
                token_id: token.id.clone(),
                team: team.clone(),
                role: token.role,
            },
            None => Identity::Admin {
                token_id: token.id.clone(),
            },
        })
    }
}

/// The team a list is limited to, for a caller who sees only `only` (a team
/// token) and asked for `asked`: `Some(None)` for every team, `Some(team)`
/// for one, and `None` when the caller asked for a team it does not see
/// (the list is empty, as if that team had nothing).
pub fn team_filter(only: Option<&str>, asked: Option<&str>) -> Option<Option<String>> {
    match (only, asked) {
        (Some(own), Some(asked)) if own != asked => None,
        (Some(own), _) => Some(Some(own.to_owned())),
        (None, asked) => Some(asked.map(str::to_owned)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_in_order_and_only_for_their_team() {
        let as_role = |role| Identity::Team {
            token_id: "tok_1".into(),
            team: "ops".into(),
            role,
        };
        let viewer = as_role(Role::Viewer);
        assert!(viewer.allows("ops", Access::Read));
        assert!(!viewer.allows("ops", Access::Operate));
        let operator = as_role(Role::Operator);
        assert!(operator.allows("ops", Access::Operate));
        assert!(!operator.allows("ops", Access::Manage));
        let admin = as_role(Role::Admin);
        assert!(admin.allows("ops", Access::Manage));
        assert!(!admin.allows("web", Access::Read));
        assert!(admin.sees_plugins_of("core") && !admin.sees_plugins_of("web"));
        assert!(Identity::Local.allows("web", Access::Manage));
    }

    #[test]
    fn the_old_team_role_reads_as_team_admin() {
        let role: Role = serde_json::from_str("\"team\"").unwrap();
        assert_eq!(role, Role::Admin);
    }
}
