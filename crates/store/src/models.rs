//! Rows as diesel reads and writes them, and their conversion to and from the domain types.
//!
//! Reading is strict: a stored value that does not parse into its domain type (an id that is not
//! a UUID, an unknown status) is reported as corrupt data rather than guessed at.

use crate::error::corrupt;
use crate::schema::{api_keys, apps, audit_log, idp_configs, users};
use custody_identity::app::{ApiKeyRecord, App, AppName};
use custody_identity::audit::{AuditEntry, AuditOutcome};
use custody_identity::claims::{ClaimMappings, ClaimPath};
use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ids::{ApiKeyId, AppId, IdpId, UserId};
use custody_identity::issuer::Issuer;
use custody_identity::ports::StoreError;
use custody_identity::time::UnixTime;
use custody_identity::user::{User, UserStatus};
use diesel::prelude::*;
use std::collections::BTreeSet;

fn app_id(s: &str) -> Result<AppId, StoreError> {
    AppId::parse(s).map_err(|_| corrupt("app id"))
}

fn user_id(s: &str) -> Result<UserId, StoreError> {
    UserId::parse(s).map_err(|_| corrupt("user id"))
}

fn claim_path(s: &str) -> Result<ClaimPath, StoreError> {
    ClaimPath::parse(s).map_err(|_| corrupt("claim path"))
}

/// A set of names as stored: a JSON array of strings, sorted (a `BTreeSet` serialises in order).
pub(crate) fn names_to_json(names: &BTreeSet<String>) -> String {
    // Serialising strings cannot fail; an empty array is the harmless fallback regardless.
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned())
}

fn names_from_json(json: &str) -> Result<BTreeSet<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| corrupt("membership list"))
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = apps, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct AppRow {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

impl AppRow {
    pub(crate) fn into_domain(self) -> Result<App, StoreError> {
        Ok(App {
            id: app_id(&self.id)?,
            name: AppName::parse(&self.name).map_err(|_| corrupt("app name"))?,
            created_at: UnixTime(self.created_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = apps)]
pub(crate) struct NewAppRow<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub created_at: i64,
}

impl<'a> From<&'a App> for NewAppRow<'a> {
    fn from(app: &'a App) -> Self {
        Self { id: app.id.as_str(), name: app.name.as_str(), created_at: app.created_at.0 }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = api_keys, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct ApiKeyRow {
    pub id: String,
    pub app_id: String,
    pub prefix: String,
    pub hash: Vec<u8>,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl ApiKeyRow {
    pub(crate) fn into_domain(self) -> Result<ApiKeyRecord, StoreError> {
        Ok(ApiKeyRecord {
            id: ApiKeyId::parse(&self.id).map_err(|_| corrupt("api key id"))?,
            app_id: app_id(&self.app_id)?,
            prefix: self.prefix,
            hash: self.hash,
            created_at: UnixTime(self.created_at),
            last_used_at: self.last_used_at.map(UnixTime),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = api_keys)]
pub(crate) struct NewApiKeyRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub prefix: &'a str,
    pub hash: &'a [u8],
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

impl<'a> From<&'a ApiKeyRecord> for NewApiKeyRow<'a> {
    fn from(key: &'a ApiKeyRecord) -> Self {
        Self {
            id: key.id.as_str(),
            app_id: key.app_id.as_str(),
            prefix: &key.prefix,
            hash: &key.hash,
            created_at: key.created_at.0,
            last_used_at: key.last_used_at.map(|t| t.0),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idp_configs, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct IdpRow {
    pub id: String,
    pub app_id: String,
    pub kind: String,
    pub issuer: String,
    pub jwks_uri: String,
    pub audience: Option<String>,
    pub claim_user_id: String,
    pub claim_group: Option<String>,
    pub claim_role: Option<String>,
    pub claims_locked_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
}

impl IdpRow {
    pub(crate) fn into_domain(self) -> Result<IdpConfig, StoreError> {
        Ok(IdpConfig {
            id: IdpId::parse(&self.id).map_err(|_| corrupt("idp id"))?,
            app_id: app_id(&self.app_id)?,
            kind: IdpKind::parse(&self.kind).ok_or_else(|| corrupt("idp kind"))?,
            issuer: Issuer::new(self.issuer),
            jwks_uri: self.jwks_uri,
            audience: self.audience,
            claims: ClaimMappings {
                user_id: claim_path(&self.claim_user_id)?,
                group: self.claim_group.as_deref().map(claim_path).transpose()?,
                role: self.claim_role.as_deref().map(claim_path).transpose()?,
            },
            claims_locked_at: self.claims_locked_at.map(UnixTime),
            version: self.version,
            created_at: UnixTime(self.created_at),
            endpoints: IdpEndpoints {
                authorization_endpoint: self.authorization_endpoint,
                token_endpoint: self.token_endpoint,
                end_session_endpoint: self.end_session_endpoint,
            },
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = idp_configs)]
pub(crate) struct NewIdpRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub kind: &'a str,
    pub issuer: &'a str,
    pub jwks_uri: &'a str,
    pub audience: Option<&'a str>,
    pub claim_user_id: &'a str,
    pub claim_group: Option<&'a str>,
    pub claim_role: Option<&'a str>,
    pub claims_locked_at: Option<i64>,
    pub version: i64,
    pub created_at: i64,
    pub authorization_endpoint: Option<&'a str>,
    pub token_endpoint: Option<&'a str>,
    pub end_session_endpoint: Option<&'a str>,
}

impl<'a> From<&'a IdpConfig> for NewIdpRow<'a> {
    fn from(c: &'a IdpConfig) -> Self {
        Self {
            id: c.id.as_str(),
            app_id: c.app_id.as_str(),
            kind: c.kind.as_str(),
            issuer: c.issuer.as_str(),
            jwks_uri: &c.jwks_uri,
            audience: c.audience.as_deref(),
            claim_user_id: c.claims.user_id.as_str(),
            claim_group: c.claims.group.as_ref().map(ClaimPath::as_str),
            claim_role: c.claims.role.as_ref().map(ClaimPath::as_str),
            claims_locked_at: c.claims_locked_at.map(|t| t.0),
            version: c.version,
            created_at: c.created_at.0,
            authorization_endpoint: c.endpoints.authorization_endpoint.as_deref(),
            token_endpoint: c.endpoints.token_endpoint.as_deref(),
            end_session_endpoint: c.endpoints.end_session_endpoint.as_deref(),
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct UserRow {
    pub id: String,
    pub app_id: String,
    pub subject: String,
    pub status: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub groups_json: String,
    pub roles_json: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
}

impl UserRow {
    pub(crate) fn into_domain(self) -> Result<User, StoreError> {
        Ok(User {
            id: user_id(&self.id)?,
            app_id: app_id(&self.app_id)?,
            subject: self.subject,
            status: UserStatus::parse(&self.status).ok_or_else(|| corrupt("user status"))?,
            email: self.email,
            name: self.name,
            groups: names_from_json(&self.groups_json)?,
            roles: names_from_json(&self.roles_json)?,
            created_at: UnixTime(self.created_at),
            last_seen_at: self.last_seen_at.map(UnixTime),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = users)]
pub(crate) struct NewUserRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub subject: &'a str,
    pub status: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub groups_json: String,
    pub roles_json: String,
    pub created_at: i64,
    pub last_seen_at: Option<i64>,
    pub status_changed_at: Option<i64>,
}

impl<'a> From<&'a User> for NewUserRow<'a> {
    fn from(u: &'a User) -> Self {
        Self {
            id: u.id.as_str(),
            app_id: u.app_id.as_str(),
            subject: &u.subject,
            status: u.status.as_str(),
            email: u.email.as_deref(),
            name: u.name.as_deref(),
            groups_json: names_to_json(&u.groups),
            roles_json: names_to_json(&u.roles),
            created_at: u.created_at.0,
            last_seen_at: u.last_seen_at.map(|t| t.0),
            status_changed_at: None,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = audit_log, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct AuditRow {
    pub id: String,
    pub app_id: String,
    pub at: i64,
    pub action: String,
    pub actor: String,
    pub user_id: Option<String>,
    pub grant_id: Option<String>,
    pub provider: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

impl AuditRow {
    pub(crate) fn into_domain(self) -> Result<AuditEntry, StoreError> {
        Ok(AuditEntry {
            id: self.id,
            app_id: app_id(&self.app_id)?,
            at: UnixTime(self.at),
            action: self.action,
            actor: self.actor,
            user_id: self.user_id.as_deref().map(user_id).transpose()?,
            grant_id: self.grant_id,
            provider: self.provider,
            outcome: AuditOutcome::parse(&self.outcome).ok_or_else(|| corrupt("audit outcome"))?,
            detail: self.detail,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = audit_log)]
pub(crate) struct NewAuditRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub at: i64,
    pub action: &'a str,
    pub actor: &'a str,
    pub user_id: Option<&'a str>,
    pub grant_id: Option<&'a str>,
    pub provider: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

impl<'a> From<&'a AuditEntry> for NewAuditRow<'a> {
    fn from(e: &'a AuditEntry) -> Self {
        Self {
            id: &e.id,
            app_id: e.app_id.as_str(),
            at: e.at.0,
            action: &e.action,
            actor: &e.actor,
            user_id: e.user_id.as_ref().map(UserId::as_str),
            grant_id: e.grant_id.as_deref(),
            provider: e.provider.as_deref(),
            outcome: e.outcome.as_str(),
            detail: e.detail.as_deref(),
        }
    }
}
