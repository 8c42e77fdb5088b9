-- Identity tables: apps, API keys, IdP configurations, users, membership removals, audit log,
-- instance secrets. Portable types only (TEXT ids, BIGINT unix seconds, BLOB, TEXT JSON) so the
-- one hand-written schema.rs serves SQLite and PostgreSQL alike; keep in step with
-- migrations/postgres/2026-11-22-000001_identity/up.sql.

CREATE TABLE apps (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
-- Keyset pagination, oldest first.
CREATE INDEX apps_created_idx ON apps (created_at, id);

CREATE TABLE api_keys (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    prefix TEXT NOT NULL UNIQUE,
    hash BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE INDEX api_keys_app_created_idx ON api_keys (app_id, created_at, id);

CREATE TABLE idp_configs (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL UNIQUE REFERENCES apps (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    issuer TEXT NOT NULL,
    jwks_uri TEXT NOT NULL,
    audience TEXT,
    claim_user_id TEXT NOT NULL,
    claim_group TEXT,
    claim_role TEXT,
    claims_locked_at BIGINT,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    authorization_endpoint TEXT,
    token_endpoint TEXT,
    end_session_endpoint TEXT
);

CREATE TABLE users (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    subject TEXT NOT NULL,
    status TEXT NOT NULL,
    email TEXT,
    name TEXT,
    -- JSON arrays of strings, so resolving a user on the token hot path reads one row.
    groups_json TEXT NOT NULL,
    roles_json TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT,
    status_changed_at BIGINT,
    UNIQUE (app_id, subject)
);
CREATE INDEX users_app_created_idx ON users (app_id, created_at, id);

-- A group a lifecycle event removed at `removed_at`: tokens issued before then do not bring it back.
CREATE TABLE membership_removals (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_name TEXT NOT NULL,
    removed_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, group_name)
);

CREATE TABLE audit_log (
    -- `seq` orders rows by insertion, so listings are newest first even within one second.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    user_id TEXT,
    grant_id TEXT,
    provider TEXT,
    outcome TEXT NOT NULL,
    detail TEXT
);
-- Newest-first listing per app.
CREATE INDEX audit_log_app_seq_idx ON audit_log (app_id, seq DESC);

-- Secrets the instance generates for itself once (e.g. the API-key hashing key), shared by every
-- process on the database.
CREATE TABLE instance_secrets (
    name TEXT NOT NULL PRIMARY KEY,
    value BLOB NOT NULL
);
