//! Rows as diesel reads and writes them, and their conversion to and from the domain types.
//!
//! Reading is strict: a stored value that does not parse into its domain type (an id that is not
//! a UUID, an unknown status) is reported as corrupt data rather than guessed at.

use crate::error::corrupt;
use crate::schema::{
    api_keys, apps, audit_log, connect_states, credentials, grants, idp_configs, policies, providers,
    revocation_outbox, users,
};
use custody_identity::app::{ApiKeyRecord, App, AppName};
use custody_identity::audit::{AuditEntry, AuditOutcome};
use custody_identity::cipher::SealedBox;
use custody_identity::claims::{ClaimMappings, ClaimPath};
use custody_identity::idp::{IdpConfig, IdpEndpoints, IdpKind};
use custody_identity::ids::{ApiKeyId, AppId, IdpId, UserId};
use custody_identity::issuer::Issuer;
use custody_identity::ports::StoreError;
use custody_identity::time::UnixTime;
use custody_identity::user::{User, UserStatus};
use custody_vault::grant::{Credential, Grant, GrantId, GrantStatus, TokenKind};
use custody_vault::policy::{Policy, PolicyLookup, TokenAccess};
use custody_vault::ports::{ConnectState, OutboxItem};
use custody_vault::provider::{ProviderConfig, ProviderName};
use diesel::prelude::*;
use std::collections::BTreeSet;

/// Borrowed text is copied; an owned `String` (a decoded row's field) becomes the id itself.
pub(crate) fn app_id(s: impl Into<String>) -> Result<AppId, StoreError> {
    AppId::try_from(s.into()).map_err(|_| corrupt("app id"))
}

/// Borrowed text is copied; an owned `String` (a decoded row's field) becomes the id itself.
pub(crate) fn user_id(s: impl Into<String>) -> Result<UserId, StoreError> {
    UserId::try_from(s.into()).map_err(|_| corrupt("user id"))
}

fn claim_path(s: &str) -> Result<ClaimPath, StoreError> {
    ClaimPath::parse(s).map_err(|_| corrupt("claim path"))
}

/// A set of names as stored: a JSON array of strings, sorted (a `BTreeSet` serialises in order).
pub(crate) fn names_to_json(names: &BTreeSet<String>) -> String {
    // Serialising strings cannot fail; an empty array is the harmless fallback regardless.
    serde_json::to_string(names).unwrap_or_else(|_| "[]".to_owned())
}

pub(crate) fn names_from_json(json: &str) -> Result<BTreeSet<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| corrupt("membership list"))
}

/// A list of strings as stored, in its order: a JSON array of strings.
pub(crate) fn strings_to_json(items: &[String]) -> String {
    // Serialising strings cannot fail; an empty array is the harmless fallback regardless.
    serde_json::to_string(items).unwrap_or_else(|_| "[]".to_owned())
}

fn strings_from_json(json: &str, what: &'static str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(json).map_err(|_| corrupt(what))
}

/// Borrowed text is copied; an owned `String` (a decoded row's field) becomes the id itself.
pub(crate) fn grant_id(s: impl Into<String>) -> Result<GrantId, StoreError> {
    GrantId::try_from(s.into()).map_err(|_| corrupt("grant id"))
}

pub(crate) fn provider_name(s: &str) -> Result<ProviderName, StoreError> {
    ProviderName::parse(s).map_err(|_| corrupt("provider name"))
}

/// The stored text of a token kind.
pub(crate) fn token_kind_str(kind: TokenKind) -> &'static str {
    match kind {
        TokenKind::Access => "access",
        TokenKind::Refresh => "refresh",
    }
}

pub(crate) fn token_kind(s: &str) -> Result<TokenKind, StoreError> {
    match s {
        "access" => Ok(TokenKind::Access),
        "refresh" => Ok(TokenKind::Refresh),
        _ => Err(corrupt("token kind")),
    }
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
            id: app_id(self.id)?,
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
            id: ApiKeyId::try_from(self.id).map_err(|_| corrupt("api key id"))?,
            app_id: app_id(self.app_id)?,
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
            app_id: app_id(self.app_id)?,
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
    pub app_id: String,
    pub subject: String,
    #[diesel(embed)]
    pub body: UserBody,
}

/// A user's columns other than the app and subject it is found by: what a read that already
/// knows those two (the hand-out's, see `handout.rs`) decodes.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct UserBody {
    pub id: String,
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
        self.body.into_user(app_id(self.app_id)?, self.subject)
    }
}

impl UserBody {
    /// The user of `app` whose subject is `subject` that this row holds.
    pub(crate) fn into_user(self, app_id: AppId, subject: String) -> Result<User, StoreError> {
        Ok(User {
            id: user_id(self.id)?,
            app_id,
            subject,
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
    pub seq: i64,
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
            app_id: app_id(self.app_id)?,
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

/// `None` binds NULL rather than `DEFAULT` (the optional columns have no default anyway): on
/// SQLite diesel cannot write `DEFAULT` in a multi-row `VALUES`, so with the default treatment the
/// hand-out log's batch became one `INSERT` per row inside a savepoint (counted by
/// `Store::database_calls`: a batch of n rows was n + 4 statements instead of 3).
#[derive(Insertable)]
#[diesel(table_name = audit_log, treat_none_as_default_value = false)]
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

#[derive(Queryable, Selectable)]
#[diesel(table_name = providers, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct ProviderRow {
    pub app_id: String,
    pub name: String,
    pub authorization_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    pub client_secret: Vec<u8>,
    pub scopes_json: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub api_base_url: Option<String>,
}

impl ProviderRow {
    pub(crate) fn into_domain(self) -> Result<ProviderConfig, StoreError> {
        Ok(ProviderConfig {
            app_id: app_id(self.app_id)?,
            name: provider_name(&self.name)?,
            authorization_url: self.authorization_url,
            token_url: self.token_url,
            revocation_url: self.revocation_url,
            client_id: self.client_id,
            client_secret: SealedBox(self.client_secret),
            scopes: strings_from_json(&self.scopes_json, "provider scopes")?,
            api_base_url: self.api_base_url,
            created_at: UnixTime(self.created_at),
            updated_at: UnixTime(self.updated_at),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = providers)]
pub(crate) struct NewProviderRow<'a> {
    pub app_id: &'a str,
    pub name: &'a str,
    pub authorization_url: &'a str,
    pub token_url: &'a str,
    pub revocation_url: Option<&'a str>,
    pub client_id: &'a str,
    pub client_secret: &'a [u8],
    pub scopes_json: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub api_base_url: Option<&'a str>,
}

impl<'a> From<&'a ProviderConfig> for NewProviderRow<'a> {
    fn from(p: &'a ProviderConfig) -> Self {
        Self {
            app_id: p.app_id.as_str(),
            name: p.name.as_str(),
            authorization_url: &p.authorization_url,
            token_url: &p.token_url,
            revocation_url: p.revocation_url.as_deref(),
            client_id: &p.client_id,
            client_secret: &p.client_secret.0,
            scopes_json: strings_to_json(&p.scopes),
            created_at: p.created_at.0,
            updated_at: p.updated_at.0,
            api_base_url: p.api_base_url.as_deref(),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = policies, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct PolicyRow {
    pub app_id: String,
    pub provider: String,
    #[diesel(embed)]
    pub body: PolicyBody,
}

/// A policy's columns other than its key (app and provider): what a read that joined it on a
/// grant's app and provider (the hand-out's, see `handout.rs`) decodes.
#[derive(Queryable, Selectable)]
#[diesel(table_name = policies, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct PolicyBody {
    pub allow_groups_json: String,
    pub allow_roles_json: String,
    pub updated_at: i64,
    pub token_access: String,
}

impl PolicyRow {
    pub(crate) fn into_domain(self) -> Result<Policy, StoreError> {
        self.body.into_policy(app_id(self.app_id)?, provider_name(&self.provider)?)
    }

    /// The lookup this row means: a policy, or [`PolicyLookup::Unreadable`] (deny) when any
    /// part of it does not decode.
    pub(crate) fn into_lookup(self) -> PolicyLookup {
        lookup(self.into_domain())
    }
}

impl PolicyBody {
    /// The policy of `app` for `provider` that this row holds.
    pub(crate) fn into_policy(self, app_id: AppId, provider: ProviderName) -> Result<Policy, StoreError> {
        Ok(Policy {
            app_id,
            provider,
            allow_groups: names_from_json(&self.allow_groups_json).map_err(|_| corrupt("policy groups"))?,
            allow_roles: names_from_json(&self.allow_roles_json).map_err(|_| corrupt("policy roles"))?,
            token_access: TokenAccess::parse(&self.token_access).ok_or_else(|| corrupt("policy token access"))?,
            updated_at: UnixTime(self.updated_at),
        })
    }

    /// As [`PolicyRow::into_lookup`].
    pub(crate) fn into_lookup(self, app_id: AppId, provider: ProviderName) -> PolicyLookup {
        lookup(self.into_policy(app_id, provider))
    }
}

/// The lookup a decoded policy row means: deny ([`PolicyLookup::Unreadable`]) when it did not
/// decode.
fn lookup(policy: Result<Policy, StoreError>) -> PolicyLookup {
    match policy {
        Ok(policy) => PolicyLookup::Found(policy),
        Err(_) => PolicyLookup::Unreadable,
    }
}

#[derive(Insertable)]
#[diesel(table_name = policies)]
pub(crate) struct NewPolicyRow<'a> {
    pub app_id: &'a str,
    pub provider: &'a str,
    pub allow_groups_json: String,
    pub allow_roles_json: String,
    pub updated_at: i64,
    pub token_access: &'static str,
}

impl<'a> From<&'a Policy> for NewPolicyRow<'a> {
    fn from(p: &'a Policy) -> Self {
        Self {
            app_id: p.app_id.as_str(),
            provider: p.provider.as_str(),
            allow_groups_json: names_to_json(&p.allow_groups),
            allow_roles_json: names_to_json(&p.allow_roles),
            updated_at: p.updated_at.0,
            token_access: p.token_access.as_str(),
        }
    }
}

#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = grants, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct GrantRow {
    pub app_id: String,
    pub user_id: String,
    #[diesel(embed)]
    pub body: GrantBody,
}

/// A grant's columns other than its app and user: what a read that joined it on a user (the
/// hand-out's, see `handout.rs`) decodes.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = grants, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct GrantBody {
    pub id: String,
    pub provider: String,
    pub status: String,
    pub scopes_json: String,
    pub account: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl GrantRow {
    pub(crate) fn into_domain(self) -> Result<Grant, StoreError> {
        self.body.into_grant(app_id(self.app_id)?, user_id(self.user_id)?)
    }
}

impl GrantBody {
    /// The grant of `user` (of `app`) that this row holds.
    pub(crate) fn into_grant(self, app_id: AppId, user_id: UserId) -> Result<Grant, StoreError> {
        Ok(Grant {
            id: grant_id(self.id)?,
            app_id,
            user_id,
            provider: provider_name(&self.provider)?,
            status: GrantStatus::parse(&self.status).ok_or_else(|| corrupt("grant status"))?,
            scopes: strings_from_json(&self.scopes_json, "grant scopes")?,
            account: self.account,
            created_at: UnixTime(self.created_at),
            updated_at: UnixTime(self.updated_at),
            last_used_at: self.last_used_at.map(UnixTime),
            revoked_at: self.revoked_at.map(UnixTime),
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = grants)]
pub(crate) struct NewGrantRow<'a> {
    pub id: &'a str,
    pub app_id: &'a str,
    pub user_id: &'a str,
    pub provider: &'a str,
    pub status: &'a str,
    pub scopes_json: String,
    pub account: Option<&'a str>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl<'a> From<&'a Grant> for NewGrantRow<'a> {
    fn from(g: &'a Grant) -> Self {
        Self {
            id: g.id.as_str(),
            app_id: g.app_id.as_str(),
            user_id: g.user_id.as_str(),
            provider: g.provider.as_str(),
            status: g.status.as_str(),
            scopes_json: strings_to_json(&g.scopes),
            account: g.account.as_deref(),
            created_at: g.created_at.0,
            updated_at: g.updated_at.0,
            last_used_at: g.last_used_at.map(|t| t.0),
            revoked_at: g.revoked_at.map(|t| t.0),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = credentials, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct CredentialRow {
    pub grant_id: String,
    #[diesel(embed)]
    pub body: CredentialBody,
}

/// A credential's columns other than its grant's id: what a read that joined it on its grant
/// (the hand-out's, see `handout.rs`) decodes.
#[derive(Queryable, Selectable)]
#[diesel(table_name = credentials, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct CredentialBody {
    pub access_token: Vec<u8>,
    pub refresh_token: Option<Vec<u8>>,
    pub token_type: String,
    pub expires_at: Option<i64>,
    pub version: i64,
}

impl CredentialRow {
    pub(crate) fn into_domain(self) -> Result<Credential, StoreError> {
        Ok(self.body.into_credential(grant_id(self.grant_id)?))
    }
}

impl CredentialBody {
    /// The credential of the grant `grant_id` that this row holds.
    pub(crate) fn into_credential(self, grant_id: GrantId) -> Credential {
        Credential {
            grant_id,
            access_token: SealedBox(self.access_token),
            refresh_token: self.refresh_token.map(SealedBox),
            token_type: self.token_type,
            expires_at: self.expires_at.map(UnixTime),
            version: self.version,
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = credentials)]
pub(crate) struct NewCredentialRow<'a> {
    pub grant_id: &'a str,
    pub access_token: &'a [u8],
    pub refresh_token: Option<&'a [u8]>,
    pub token_type: &'a str,
    pub expires_at: Option<i64>,
    pub version: i64,
}

impl<'a> From<&'a Credential> for NewCredentialRow<'a> {
    fn from(c: &'a Credential) -> Self {
        Self {
            grant_id: c.grant_id.as_str(),
            access_token: &c.access_token.0,
            refresh_token: c.refresh_token.as_ref().map(|b| b.0.as_slice()),
            token_type: &c.token_type,
            expires_at: c.expires_at.map(|t| t.0),
            version: c.version,
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = connect_states, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct ConnectStateRow {
    pub state_hash: String,
    pub app_id: String,
    pub user_id: String,
    pub provider: String,
    pub return_url: String,
    pub scopes_json: String,
    pub pkce_verifier: Vec<u8>,
    pub created_at: i64,
    pub expires_at: i64,
    pub browser_hash: Option<String>,
}

impl ConnectStateRow {
    pub(crate) fn into_domain(self) -> Result<ConnectState, StoreError> {
        Ok(ConnectState {
            state_hash: self.state_hash,
            app_id: app_id(self.app_id)?,
            user_id: user_id(self.user_id)?,
            provider: provider_name(&self.provider)?,
            return_url: self.return_url,
            scopes: strings_from_json(&self.scopes_json, "connect scopes")?,
            pkce_verifier: SealedBox(self.pkce_verifier),
            created_at: UnixTime(self.created_at),
            expires_at: UnixTime(self.expires_at),
            browser_hash: self.browser_hash,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = connect_states)]
pub(crate) struct NewConnectStateRow<'a> {
    pub state_hash: &'a str,
    pub app_id: &'a str,
    pub user_id: &'a str,
    pub provider: &'a str,
    pub return_url: &'a str,
    pub scopes_json: String,
    pub pkce_verifier: &'a [u8],
    pub created_at: i64,
    pub expires_at: i64,
    pub browser_hash: Option<&'a str>,
}

impl<'a> From<&'a ConnectState> for NewConnectStateRow<'a> {
    fn from(c: &'a ConnectState) -> Self {
        Self {
            state_hash: &c.state_hash,
            app_id: c.app_id.as_str(),
            user_id: c.user_id.as_str(),
            provider: c.provider.as_str(),
            return_url: &c.return_url,
            scopes_json: strings_to_json(&c.scopes),
            pkce_verifier: &c.pkce_verifier.0,
            created_at: c.created_at.0,
            expires_at: c.expires_at.0,
            browser_hash: c.browser_hash.as_deref(),
        }
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = revocation_outbox, check_for_backend(diesel::sqlite::Sqlite, diesel::pg::Pg))]
pub(crate) struct OutboxRow {
    pub id: String,
    pub app_id: String,
    pub grant_id: String,
    pub provider: String,
    pub token_kind: String,
    pub token: Vec<u8>,
    pub revocation_url: String,
    pub client_id: String,
    pub client_secret: Vec<u8>,
    pub attempts: i32,
    pub next_attempt_at: i64,
}

impl OutboxRow {
    pub(crate) fn into_domain(self) -> Result<OutboxItem, StoreError> {
        Ok(OutboxItem {
            id: self.id,
            app_id: app_id(self.app_id)?,
            grant_id: grant_id(self.grant_id)?,
            provider: provider_name(&self.provider)?,
            token_kind: token_kind(&self.token_kind)?,
            token: SealedBox(self.token),
            revocation_url: self.revocation_url,
            client_id: self.client_id,
            client_secret: SealedBox(self.client_secret),
            attempts: self.attempts,
            next_attempt_at: UnixTime(self.next_attempt_at),
        })
    }
}
