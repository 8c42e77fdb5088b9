-- Sign-in through the app's identity provider: the app's OIDC client, pending sign-in states,
-- SDK sign-in sessions and Wallet sessions. Portable types only, as in 000001; keep in step with
-- migrations/postgres/2026-11-22-000004_sign_in/up.sql.
--
-- Secrets are never stored in the clear: the client secret, PKCE verifiers and ID tokens are
-- sealed (AES-256-GCM, bound by associated data to their row's key); state values and Wallet
-- session tokens are stored only as their SHA-256; nonces only as their SHA-256.

-- The app's OIDC client (one per app). It belongs to the IdP configuration it was set for and
-- goes with it.
CREATE TABLE oidc_clients (
    app_id TEXT NOT NULL PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    idp_id TEXT NOT NULL UNIQUE REFERENCES idp_configs (id) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    -- Sealed with associated data `oidc-client-secret:<app_id>`.
    client_secret BLOB NOT NULL,
    token_auth_method TEXT NOT NULL CHECK (token_auth_method IN ('client_secret_basic', 'client_secret_post')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- SDK sign-in sessions: pending until the browser comes back through the callback.
CREATE TABLE sdk_sessions (
    id TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'complete', 'failed')),
    -- A stable error code when failed.
    error TEXT,
    user_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    -- The ID token, sealed with associated data `sdk-session:<id>`, until it is handed out.
    user_token BLOB,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    completed_at BIGINT,
    token_delivered_at BIGINT
);
CREATE INDEX sdk_sessions_app_idx ON sdk_sessions (app_id);
CREATE INDEX sdk_sessions_user_idx ON sdk_sessions (user_id);
CREATE INDEX sdk_sessions_expires_idx ON sdk_sessions (expires_at);

-- Pending sign-ins, keyed by the SHA-256 of their state value; consumed once. They go with the
-- app's OIDC client.
CREATE TABLE sign_in_states (
    state_hash TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES oidc_clients (app_id) ON DELETE CASCADE,
    purpose TEXT NOT NULL CHECK (purpose IN ('sdk', 'wallet')),
    sdk_session_id TEXT REFERENCES sdk_sessions (id) ON DELETE CASCADE,
    nonce_hash TEXT NOT NULL,
    -- Sealed with associated data `sign-in:<state_hash>`.
    pkce_verifier BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sign_in_states_app_idx ON sign_in_states (app_id);
CREATE INDEX sign_in_states_sdk_idx ON sign_in_states (sdk_session_id);
CREATE INDEX sign_in_states_expires_idx ON sign_in_states (expires_at);

-- Wallet sessions, keyed by the SHA-256 of the cookie's value. They go with the IdP
-- configuration they were signed in through, and with the user.
CREATE TABLE wallet_sessions (
    id_hash TEXT NOT NULL PRIMARY KEY,
    app_id TEXT NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    idp_id TEXT NOT NULL REFERENCES idp_configs (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The ID token (for `id_token_hint` at sign-out), sealed with `wallet-session:<id_hash>`.
    id_token BLOB,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX wallet_sessions_app_idx ON wallet_sessions (app_id);
CREATE INDEX wallet_sessions_idp_idx ON wallet_sessions (idp_id);
CREATE INDEX wallet_sessions_user_idx ON wallet_sessions (user_id);
CREATE INDEX wallet_sessions_expires_idx ON wallet_sessions (expires_at);
