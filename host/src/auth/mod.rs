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

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, for every team, including managing tokens.
    Admin,
    /// Everything for its own team.
    Team,
}

/// A stored token, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// `tok_` and 16 hex digits; names the token in lists and logs.
    pub id: String,
    /// What it may do.
    pub role: Role,
    /// The team a `team` token acts for.
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
    /// An admin token, or the local operator of a loopback host.
    Admin,
    /// A token of one team.
    Team(String),
}

impl Identity {
    /// Whether this caller may act for `team`: read, call, replace or
    /// remove its plugins.
    pub fn may_act_for(&self, team: &str) -> bool {
        match self {
            Self::Admin => true,
            Self::Team(own) => own == team,
        }
    }

    /// Whether this caller may see `team`'s plugins in a list: its own and
    /// the bundled ones everybody uses.
    pub fn may_see(&self, team: &str) -> bool {
        self.may_act_for(team) || team == crate::plugins::CORE_TEAM
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
        match (role, &team) {
            (Role::Team, None) => {
                return Err(TokenError::Invalid("a team token needs a `team`".into()));
            }
            (Role::Admin, Some(_)) => {
                return Err(TokenError::Invalid(
                    "an admin token acts for every team; leave `team` out".into(),
                ));
            }
            _ => {}
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
        tracing::info!(token_id = %token.id, role = ?token.role, team = token.team.as_deref().unwrap_or("-"), "API token created");
        Ok((token, secret))
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
        Some(match (&token.role, &token.team) {
            (Role::Team, Some(team)) => Identity::Team(team.clone()),
            _ => Identity::Admin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teams_act_for_themselves_and_see_core() {
        let ops = Identity::Team("ops".into());
        assert!(ops.may_act_for("ops") && !ops.may_act_for("web"));
        assert!(ops.may_see("core") && !ops.may_see("web"));
        assert!(!ops.may_act_for("core"));
        assert!(Identity::Admin.may_act_for("web"));
    }
}
