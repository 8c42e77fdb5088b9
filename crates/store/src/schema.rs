//! The database schema, written by hand with portable types only so one definition serves SQLite
//! and PostgreSQL: text ids (UUID strings), `BigInt` unix seconds, `Binary` (BLOB/BYTEA) and text
//! JSON. It mirrors `migrations/{sqlite,postgres}/*/up.sql`; the contract tests exercise every
//! column on both backends, so a drift shows up there.

diesel::table! {
    /// Apps (tenants).
    apps (id) {
        id -> Text,
        name -> Text,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// API keys: the public prefix and a keyed hash, never the key.
    api_keys (id) {
        id -> Text,
        app_id -> Text,
        prefix -> Text,
        hash -> Binary,
        created_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// One IdP configuration per app, with its claim mappings, their lock and a version.
    idp_configs (id) {
        id -> Text,
        app_id -> Text,
        kind -> Text,
        issuer -> Text,
        jwks_uri -> Text,
        audience -> Nullable<Text>,
        claim_user_id -> Text,
        claim_group -> Nullable<Text>,
        claim_role -> Nullable<Text>,
        claims_locked_at -> Nullable<BigInt>,
        version -> BigInt,
        created_at -> BigInt,
        authorization_endpoint -> Nullable<Text>,
        token_endpoint -> Nullable<Text>,
        end_session_endpoint -> Nullable<Text>,
    }
}

diesel::table! {
    /// Users of an app, unique per (app, subject). Groups and roles are JSON arrays of strings.
    users (id) {
        id -> Text,
        app_id -> Text,
        subject -> Text,
        status -> Text,
        email -> Nullable<Text>,
        name -> Nullable<Text>,
        groups_json -> Text,
        roles_json -> Text,
        created_at -> BigInt,
        last_seen_at -> Nullable<BigInt>,
        status_changed_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Groups removed from a user by a lifecycle event, and when.
    membership_removals (user_id, group_name) {
        user_id -> Text,
        group_name -> Text,
        removed_at -> BigInt,
    }
}

diesel::table! {
    /// The audit log, listed newest first per app.
    audit_log (seq) {
        seq -> BigInt,
        id -> Text,
        app_id -> Text,
        at -> BigInt,
        action -> Text,
        actor -> Text,
        user_id -> Nullable<Text>,
        grant_id -> Nullable<Text>,
        provider -> Nullable<Text>,
        outcome -> Text,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    /// Secrets the instance generates for itself, shared by every process on the database.
    instance_secrets (name) {
        name -> Text,
        value -> Binary,
    }
}

diesel::table! {
    /// Third-party OAuth providers of an app; the client secret is sealed.
    providers (app_id, name) {
        app_id -> Text,
        name -> Text,
        authorization_url -> Text,
        token_url -> Text,
        revocation_url -> Nullable<Text>,
        client_id -> Text,
        client_secret -> Binary,
        scopes_json -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
        api_base_url -> Nullable<Text>,
    }
}

diesel::table! {
    /// One policy per provider: JSON arrays of allowed groups and roles.
    policies (app_id, provider) {
        app_id -> Text,
        provider -> Text,
        allow_groups_json -> Text,
        allow_roles_json -> Text,
        updated_at -> BigInt,
        token_access -> Text,
    }
}

diesel::table! {
    /// Grants: a user's connection to a provider; at most one active per user and provider.
    grants (id) {
        id -> Text,
        app_id -> Text,
        user_id -> Text,
        provider -> Text,
        status -> Text,
        scopes_json -> Text,
        account -> Nullable<Text>,
        created_at -> BigInt,
        updated_at -> BigInt,
        last_used_at -> Nullable<BigInt>,
        revoked_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// The sealed tokens of an active grant, with a compare-and-set version.
    credentials (grant_id) {
        grant_id -> Text,
        access_token -> Binary,
        refresh_token -> Nullable<Binary>,
        token_type -> Text,
        expires_at -> Nullable<BigInt>,
        version -> BigInt,
    }
}

diesel::table! {
    /// Pending connect flows, keyed by the hash of their state value.
    connect_states (state_hash) {
        state_hash -> Text,
        app_id -> Text,
        user_id -> Text,
        provider -> Text,
        return_url -> Text,
        scopes_json -> Text,
        pkce_verifier -> Binary,
        created_at -> BigInt,
        expires_at -> BigInt,
        /// SHA-256 (hex) of the cookie binding the flow to the browser that opened it.
        browser_hash -> Nullable<Text>,
    }
}

diesel::table! {
    /// Tokens of revoked grants waiting to be revoked at their provider.
    revocation_outbox (id) {
        id -> Text,
        app_id -> Text,
        grant_id -> Text,
        provider -> Text,
        token_kind -> Text,
        token -> Binary,
        revocation_url -> Text,
        client_id -> Text,
        client_secret -> Binary,
        attempts -> Integer,
        next_attempt_at -> BigInt,
        created_at -> BigInt,
    }
}

diesel::table! {
    /// Lifecycle webhook event ids already processed, per app.
    webhook_events (app_id, event_id) {
        app_id -> Text,
        event_id -> Text,
        received_at -> BigInt,
    }
}

diesel::table! {
    /// Lifecycle webhook settings of an app's identity provider: a keyed hash of a generated
    /// secret or a sealed provided one.
    idp_webhooks (app_id) {
        app_id -> Text,
        idp_id -> Text,
        enabled -> Bool,
        secret_source -> Text,
        secret_hash -> Nullable<Binary>,
        sealed_secret -> Nullable<Binary>,
        rotated_at -> Nullable<BigInt>,
        updated_at -> BigInt,
    }
}

diesel::joinable!(api_keys -> apps (app_id));
diesel::joinable!(idp_configs -> apps (app_id));
diesel::joinable!(users -> apps (app_id));
diesel::joinable!(audit_log -> apps (app_id));
diesel::joinable!(membership_removals -> users (user_id));
diesel::joinable!(credentials -> grants (grant_id));

diesel::allow_tables_to_appear_in_same_query!(
    apps,
    api_keys,
    idp_configs,
    users,
    membership_removals,
    audit_log,
    instance_secrets,
    providers,
    policies,
    grants,
    credentials,
    connect_states,
    revocation_outbox,
    webhook_events,
    idp_webhooks,
);

// Sign-in (migration 000004_sign_in): the app's OIDC client, pending sign-in states, SDK
// sign-in sessions and Wallet sessions. Queried on their own, never joined.

diesel::table! {
    /// The app's OIDC client for sign-in; the secret is sealed. Goes with the IdP configuration.
    oidc_clients (app_id) {
        app_id -> Text,
        idp_id -> Text,
        client_id -> Text,
        client_secret -> Binary,
        token_auth_method -> Text,
        created_at -> BigInt,
        updated_at -> BigInt,
    }
}

diesel::table! {
    /// SDK sign-in sessions; the ID token is sealed until it is handed out.
    sdk_sessions (id) {
        id -> Text,
        app_id -> Text,
        status -> Text,
        error -> Nullable<Text>,
        user_id -> Nullable<Text>,
        user_token -> Nullable<Binary>,
        created_at -> BigInt,
        expires_at -> BigInt,
        completed_at -> Nullable<BigInt>,
        token_delivered_at -> Nullable<BigInt>,
    }
}

diesel::table! {
    /// Pending sign-ins, keyed by the hash of their state value.
    sign_in_states (state_hash) {
        state_hash -> Text,
        app_id -> Text,
        purpose -> Text,
        sdk_session_id -> Nullable<Text>,
        nonce_hash -> Text,
        pkce_verifier -> Binary,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// Wallet sessions, keyed by the hash of the cookie's value.
    wallet_sessions (id_hash) {
        id_hash -> Text,
        app_id -> Text,
        idp_id -> Text,
        user_id -> Text,
        id_token -> Nullable<Binary>,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}

diesel::table! {
    /// Developer Portal sessions, keyed by the keyed hash of the cookie's value.
    portal_sessions (id_hash) {
        id_hash -> Text,
        created_at -> BigInt,
        expires_at -> BigInt,
    }
}
