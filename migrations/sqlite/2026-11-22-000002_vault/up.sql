-- Vault tables: providers, policies, grants, credentials, connect states, the revocation outbox
-- and webhook event ids. Portable types only, as in 000001; keep in step with
-- migrations/postgres/2026-11-22-000002_vault/up.sql.
--
-- Sealed values (BLOB) are opaque envelopes bound by associated data to their row's key; the
-- store never opens them.

-- Third-party OAuth providers of an app; the client secret is sealed.
CREATE TABLE providers (
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    authorization_url TEXT NOT NULL,
    token_url TEXT NOT NULL,
    revocation_url TEXT,
    client_id TEXT NOT NULL,
    client_secret BLOB NOT NULL,
    -- JSON array of strings.
    scopes_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, name)
);

-- At most one policy per provider; it goes with its provider.
CREATE TABLE policies (
    app_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    -- JSON arrays of strings. A row that does not decode denies (fail closed).
    allow_groups_json TEXT NOT NULL,
    allow_roles_json TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, provider),
    FOREIGN KEY (app_id, provider) REFERENCES providers (app_id, name) ON DELETE CASCADE
);

-- A user's connection to a provider. No foreign key to providers: deleting a provider revokes
-- its grants, which stay for the record.
CREATE TABLE grants (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'expired', 'revoked')),
    scopes_json TEXT NOT NULL,
    account TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
-- A user has at most one active grant per provider.
CREATE UNIQUE INDEX grants_one_active_idx ON grants (app_id, user_id, provider) WHERE status = 'active';
-- Newest-first listing per app, per app and provider (and revocation by provider), per user
-- (and revocation by user); the current grant of a user for a provider.
CREATE INDEX grants_app_created_idx ON grants (app_id, created_at, id);
CREATE INDEX grants_app_provider_created_idx ON grants (app_id, provider, created_at, id);
CREATE INDEX grants_user_created_idx ON grants (user_id, created_at, id);
CREATE INDEX grants_user_provider_updated_idx ON grants (user_id, provider, updated_at);

-- A grant's sealed tokens; only active grants have one.
CREATE TABLE credentials (
    grant_id TEXT NOT NULL PRIMARY KEY REFERENCES grants (id) ON DELETE CASCADE,
    access_token BLOB NOT NULL,
    refresh_token BLOB,
    token_type TEXT NOT NULL,
    expires_at BIGINT,
    -- Compare-and-set version: bumped on every change.
    version BIGINT NOT NULL
);

-- Pending connect flows, keyed by the SHA-256 of their state value; consumed once.
CREATE TABLE connect_states (
    state_hash TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    return_url TEXT NOT NULL,
    scopes_json TEXT NOT NULL,
    pkce_verifier BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX connect_states_user_idx ON connect_states (user_id);
CREATE INDEX connect_states_expires_idx ON connect_states (expires_at);

-- Tokens of revoked grants waiting to be revoked at their provider (RFC 7009). Each row copies
-- what the call needs (the provider may be deleted meanwhile). No foreign key to grants: the app
-- cascade removes these rows together with the grants.
CREATE TABLE revocation_outbox (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    grant_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    token_kind TEXT NOT NULL CHECK (token_kind IN ('access', 'refresh')),
    token BLOB NOT NULL,
    revocation_url TEXT NOT NULL,
    client_id TEXT NOT NULL,
    client_secret BLOB NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX revocation_outbox_due_idx ON revocation_outbox (next_attempt_at, created_at, id);
-- The app cascade.
CREATE INDEX revocation_outbox_app_idx ON revocation_outbox (app_id);

-- Lifecycle webhook event ids already processed, per app, for de-duplication.
CREATE TABLE webhook_events (
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    event_id TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (app_id, event_id)
);
CREATE INDEX webhook_events_received_idx ON webhook_events (received_at);
