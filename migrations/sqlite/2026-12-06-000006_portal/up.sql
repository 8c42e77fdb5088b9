-- Developer Portal sessions (`/portal`): one row per signed-in operator browser. The session
-- token lives only in the browser's `custody_portal` cookie; the database keeps its keyed hash
-- (base64url of HMAC-SHA-256), so a database reader cannot sign in to the portal.
-- Keep in step with the other backend's migration of the same name.
CREATE TABLE portal_sessions (
    id_hash TEXT NOT NULL PRIMARY KEY,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX portal_sessions_expires_idx ON portal_sessions (expires_at);
