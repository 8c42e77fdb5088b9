-- Lifecycle webhook settings of an app's identity provider. Keep in step with
-- migrations/postgres/2026-11-22-000003_webhooks/up.sql.
--
-- One row per identity provider, deleted with it (and so with the app). A generated secret
-- (Auth0, custom OIDC) is kept only as its keyed hash; a provided one (Clerk's `whsec_...`) is
-- sealed by the key ring with the app id as associated data. Disabling clears both.
CREATE TABLE idp_webhooks (
    app_id TEXT NOT NULL PRIMARY KEY REFERENCES apps (id) ON DELETE CASCADE,
    idp_id TEXT NOT NULL UNIQUE REFERENCES idp_configs (id) ON DELETE CASCADE,
    enabled BOOLEAN NOT NULL,
    secret_source TEXT NOT NULL CHECK (secret_source IN ('generated', 'provided')),
    secret_hash BLOB,
    sealed_secret BLOB,
    rotated_at BIGINT,
    updated_at BIGINT NOT NULL,
    CHECK (NOT enabled OR secret_hash IS NOT NULL OR sealed_secret IS NOT NULL)
);
