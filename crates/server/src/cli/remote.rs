//! The operator commands: each is one (or, for lists, one per page) call of the admin API through
//! `custody-client`, printed as the API's JSON or as a table. Destructive commands confirm first.

use super::args::*;
use super::{exit, output, Io};
use custody_client::{paths, query, Client, Error, Method};
use serde::Serialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The admin token file read when no token is given.
const DEFAULT_TOKEN_FILE: &str = "./custody-data/admin-token";

/// A failed command: its exit code, with the message already printed.
struct Failed(u8);

type Step<T> = Result<T, Failed>;

/// Runs one operator command and answers its exit code.
pub async fn run(global: &Global, command: Command, io: &mut Io<'_>) -> u8 {
    match dispatch(global, command, io).await {
        Ok(()) => exit::OK,
        Err(Failed(code)) => code,
    }
}

/// Prints a usage error naming what is missing and fails with exit code 2.
fn usage(io: &mut Io<'_>, message: &str) -> Failed {
    io.error_line(&format!("error: {message}"));
    Failed(exit::USAGE)
}

/// Prints an API or connection error with its code and detail, and maps it to the exit code.
fn api_failure(io: &mut Io<'_>, error: Error) -> Failed {
    let code = match &error {
        Error::Api { status, .. } => match status {
            401 => exit::UNAUTHORIZED,
            404 => exit::NOT_FOUND,
            409 => exit::CONFLICT,
            503 => exit::UNAVAILABLE,
            400 | 403 | 410 | 422 => exit::REFUSED,
            _ => exit::OTHER,
        },
        Error::Connect(_) => exit::UNAVAILABLE,
        Error::InvalidUrl(_) => exit::USAGE,
        Error::Decode { .. } => exit::OTHER,
    };
    match &error {
        Error::Api { status, code, detail, request_id } => {
            io.error_line(&format!("error: {code}: {detail}"));
            let id = request_id.as_deref().map(|id| format!(", request id {id}")).unwrap_or_default();
            io.error_line(&format!("(HTTP {status}{id})"));
        }
        other => io.error_line(&format!("error: {other}")),
    }
    Failed(code)
}

/// The admin token: `--admin-token` / `CUSTODY_ADMIN_TOKEN`, else `--admin-token-file`, else
/// `./custody-data/admin-token` when it exists.
fn admin_token(global: &Global, io: &mut Io<'_>) -> Step<String> {
    if let Some(token) = global.admin_token.as_deref().filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    let (path, explicit) = match &global.admin_token_file {
        Some(path) => (path.clone(), true),
        None => (PathBuf::from(DEFAULT_TOKEN_FILE), false),
    };
    if !explicit && !Path::new(&path).exists() {
        return Err(usage(
            io,
            &format!(
                "no admin token: pass --admin-token, set CUSTODY_ADMIN_TOKEN, or pass --admin-token-file \
                 ({DEFAULT_TOKEN_FILE} does not exist)"
            ),
        ));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => Err(usage(io, &format!("--admin-token-file {}: the file is empty", path.display()))),
        Err(e) => Err(usage(io, &format!("--admin-token-file {}: {e}", path.display()))),
    }
}

fn client(global: &Global, io: &mut Io<'_>) -> Step<Client> {
    let token = admin_token(global, io)?;
    Client::new(&global.url, &token).map_err(|e| usage(io, &format!("--url / CUSTODY_URL: {e}")))
}

/// The app: `--app` / `CUSTODY_APP_ID`.
fn app(global: &Global, io: &mut Io<'_>) -> Step<String> {
    match global.app.as_deref().filter(|a| !a.is_empty()) {
        Some(app) => Ok(app.to_owned()),
        None => Err(usage(io, "this command needs an app: pass --app APP_ID or set CUSTODY_APP_ID")),
    }
}

/// A secret flag's value, reading stdin for `-`.
fn secret(io: &mut Io<'_>, flag: &str, value: String) -> Step<String> {
    if value == "-" {
        io.read_secret(flag).map_err(|m| usage(io, &m))
    } else {
        Ok(value)
    }
}

/// Everything a command needs to call the API and print.
struct Ctx<'g> {
    global: &'g Global,
    client: Client,
    format: Output,
}

impl Ctx<'_> {
    async fn send(&self, io: &mut Io<'_>, method: Method, path: &str, body: Option<&impl Serialize>) -> Step<Value> {
        self.client.send::<Value>(method, path, body).await.map_err(|e| api_failure(io, e))
    }

    async fn show(&self, io: &mut Io<'_>, method: Method, path: &str, body: Option<&impl Serialize>) -> Step<()> {
        let value = self.send(io, method, path, body).await?;
        output::object(io, self.format, &value);
        Ok(())
    }

    async fn list(&self, io: &mut Io<'_>, path: &str, columns: &[&str]) -> Step<()> {
        let items: Vec<Value> = self.client.list_all(path).await.map_err(|e| api_failure(io, e))?;
        output::list(io, self.format, &items, columns);
        Ok(())
    }

    /// Confirms, then sends a request answered by 204 and prints `message`.
    async fn delete(&self, io: &mut Io<'_>, question: &str, path: &str, message: &str) -> Step<()> {
        io.confirm(self.global.yes, question).map_err(Failed)?;
        self.send(io, Method::DELETE, path, NO_BODY).await?;
        output::done(io, self.format, message);
        Ok(())
    }
}

const NO_BODY: Option<&()> = None;

async fn dispatch(global: &Global, command: Command, io: &mut Io<'_>) -> Step<()> {
    let client = client(global, io)?;
    let ctx = Ctx { global, client, format: output::format(global.output, io) };
    match command {
        Command::Apps(c) => apps(&ctx, c, io).await,
        Command::ApiKeys(c) => api_keys(&ctx, c, io).await,
        Command::Idp(c) => idp(&ctx, c, io).await,
        Command::Providers(c) => providers(&ctx, c, io).await,
        Command::Policies(c) => policies(&ctx, c, io).await,
        Command::Users(c) => users(&ctx, c, io).await,
        Command::Grants(c) => grants(&ctx, c, io).await,
        Command::Audit(AuditCommand::List { action, user_id }) => {
            let app = app(global, io)?;
            let q = query(&[("action", action.as_deref()), ("user_id", user_id.as_deref())]);
            ctx.list(
                io,
                &format!("{}{q}", paths::audit(&app)),
                &["at", "action", "actor", "outcome", "user_id", "provider"],
            )
            .await
        }
        Command::Serve
        | Command::Migrate { .. }
        | Command::Reseal
        | Command::Completions { .. }
        | Command::GenerateMan { .. } => Err(usage(io, "not an operator command")),
    }
}

async fn apps(ctx: &Ctx<'_>, command: AppsCommand, io: &mut Io<'_>) -> Step<()> {
    let app_arg = |io: &mut Io<'_>, given: Option<String>| -> Step<String> {
        match given {
            Some(id) => Ok(id),
            None => app(ctx.global, io),
        }
    };
    match command {
        AppsCommand::List => ctx.list(io, &paths::apps(), &["id", "name", "created_at"]).await,
        AppsCommand::Create { name } => {
            ctx.show(io, Method::POST, &paths::apps(), Some(&serde_json::json!({ "name": name }))).await
        }
        AppsCommand::Show { app_id } => {
            let id = app_arg(io, app_id)?;
            ctx.show(io, Method::GET, &paths::app(&id), NO_BODY).await
        }
        AppsCommand::Delete { app_id } => {
            let id = app_arg(io, app_id)?;
            let question = format!("Delete app {id} and everything of it, credentials included");
            ctx.delete(io, &question, &paths::app(&id), &format!("deleted app {id}")).await
        }
    }
}

async fn api_keys(ctx: &Ctx<'_>, command: ApiKeysCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    match command {
        ApiKeysCommand::List => {
            ctx.list(io, &paths::api_keys(&app), &["id", "prefix", "created_at", "last_used_at"]).await
        }
        ApiKeysCommand::Create => ctx.show(io, Method::POST, &paths::api_keys(&app), NO_BODY).await,
        ApiKeysCommand::Delete { key_id } => {
            let question = format!("Delete API key {key_id} (it stops working at once)");
            ctx.delete(io, &question, &paths::api_key(&app, &key_id), &format!("deleted API key {key_id}")).await
        }
    }
}

/// The `claims` object of `idp create` / `idp update`; `None` when no flag is given.
fn claims(flags: &ClaimFlags, clear_group: bool, clear_role: bool) -> Option<Value> {
    let mut map = serde_json::Map::new();
    if let Some(c) = &flags.user_id_claim {
        map.insert("user_id".into(), Value::String(c.clone()));
    }
    if let Some(c) = &flags.group_claim {
        map.insert("group".into(), Value::String(c.clone()));
    } else if clear_group {
        map.insert("group".into(), Value::Null);
    }
    if let Some(c) = &flags.role_claim {
        map.insert("role".into(), Value::String(c.clone()));
    } else if clear_role {
        map.insert("role".into(), Value::Null);
    }
    (!map.is_empty()).then_some(Value::Object(map))
}

async fn idp(ctx: &Ctx<'_>, command: IdpCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    let path = |suffix: &str| paths::idp(&app, suffix);
    match command {
        IdpCommand::Discover { issuer_url, kind } => {
            let body = custody_client::DiscoverRequest { issuer_url, kind };
            ctx.show(io, Method::POST, &path("/discover"), Some(&body)).await
        }
        IdpCommand::Create { issuer_url, audience, kind, claims: flags } => {
            let mut body = serde_json::json!({ "issuer_url": issuer_url });
            if let Some(a) = audience {
                body["audience"] = Value::String(a);
            }
            if let Some(k) = kind {
                body["kind"] = Value::String(k);
            }
            if let Some(c) = claims(&flags, false, false) {
                body["claims"] = c;
            }
            ctx.show(io, Method::POST, &path(""), Some(&body)).await
        }
        IdpCommand::Show => ctx.show(io, Method::GET, &path(""), NO_BODY).await,
        IdpCommand::Update { audience, clear_audience, claims: flags, clear_group_claim, clear_role_claim } => {
            let mut body = serde_json::Map::new();
            if let Some(a) = audience {
                body.insert("audience".into(), Value::String(a));
            } else if clear_audience {
                body.insert("audience".into(), Value::Null);
            }
            if let Some(c) = claims(&flags, clear_group_claim, clear_role_claim) {
                body.insert("claims".into(), c);
            }
            if body.is_empty() {
                return Err(usage(
                    io,
                    "idp update needs a change: --audience, --clear-audience, --user-id-claim, --group-claim, \
                     --clear-group-claim, --role-claim or --clear-role-claim",
                ));
            }
            ctx.show(io, Method::PATCH, &path(""), Some(&Value::Object(body))).await
        }
        IdpCommand::Delete => {
            let question = format!("Delete the identity provider of app {app} (its webhook and OIDC settings go too)");
            ctx.delete(io, &question, &path(""), "deleted the identity provider").await
        }
        IdpCommand::RefreshKeys => ctx.show(io, Method::POST, &path("/jwks/refresh"), NO_BODY).await,
        IdpCommand::Oidc(OidcCommand::Set { client_id, client_secret, auth_method }) => {
            let client_secret = secret(io, "--client-secret", client_secret)?;
            let body = custody_client::OidcClient { client_id, client_secret, token_endpoint_auth_method: auth_method };
            ctx.show(io, Method::PUT, &path("/oidc"), Some(&body)).await
        }
        IdpCommand::Oidc(OidcCommand::Delete) => {
            let question = format!("Delete the OIDC sign-in client of app {app} (pending sign-ins fail)");
            ctx.delete(io, &question, &path("/oidc"), "deleted the OIDC client").await
        }
        IdpCommand::Webhook(WebhookCommand::Status) => ctx.show(io, Method::GET, &path("/webhook"), NO_BODY).await,
        IdpCommand::Webhook(WebhookCommand::Enable { secret: given }) => {
            let signing_secret = given.map(|s| secret(io, "--secret", s)).transpose()?;
            let body = custody_client::WebhookSecret { signing_secret };
            ctx.show(io, Method::POST, &path("/webhook/enable"), Some(&body)).await
        }
        IdpCommand::Webhook(WebhookCommand::Rotate { secret: given }) => {
            let signing_secret = given.map(|s| secret(io, "--secret", s)).transpose()?;
            let body = custody_client::WebhookSecret { signing_secret };
            ctx.show(io, Method::POST, &path("/webhook/rotate"), Some(&body)).await
        }
        IdpCommand::Webhook(WebhookCommand::Disable) => {
            let question = format!("Disable webhooks of app {app} (the secret is forgotten)");
            io.confirm(ctx.global.yes, &question).map_err(Failed)?;
            ctx.show(io, Method::POST, &path("/webhook/disable"), NO_BODY).await
        }
    }
}

async fn providers(ctx: &Ctx<'_>, command: ProvidersCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    match command {
        ProvidersCommand::List => {
            ctx.list(io, &paths::providers(&app, None), &["provider", "client_id", "scopes", "updated_at"]).await
        }
        ProvidersCommand::Set {
            name,
            preset,
            client_id,
            client_secret,
            authorization_url,
            token_url,
            revocation_url,
            scopes,
        } => {
            let client_secret = client_secret.map(|s| secret(io, "--client-secret", s)).transpose()?;
            let body = custody_client::ProviderSettings {
                preset,
                authorization_url,
                token_url,
                revocation_url,
                client_id,
                client_secret,
                scopes: (!scopes.is_empty()).then_some(scopes),
            };
            ctx.show(io, Method::PUT, &paths::providers(&app, Some(&name)), Some(&body)).await
        }
        ProvidersCommand::Show { name } => {
            ctx.show(io, Method::GET, &paths::providers(&app, Some(&name)), NO_BODY).await
        }
        ProvidersCommand::Delete { name } => {
            let question = format!("Delete provider {name} (its grants are revoked and its policy removed)");
            ctx.delete(io, &question, &paths::providers(&app, Some(&name)), &format!("deleted provider {name}")).await
        }
    }
}

async fn policies(ctx: &Ctx<'_>, command: PoliciesCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    match command {
        PoliciesCommand::List => {
            ctx.list(io, &paths::policies(&app, None), &["provider", "allow_groups", "allow_roles", "updated_at"]).await
        }
        PoliciesCommand::Set { provider, allow_groups, allow_roles } => {
            let body = custody_client::PolicyRules { allow_groups, allow_roles };
            ctx.show(io, Method::PUT, &paths::policies(&app, Some(&provider)), Some(&body)).await
        }
        PoliciesCommand::Show { provider } => {
            ctx.show(io, Method::GET, &paths::policies(&app, Some(&provider)), NO_BODY).await
        }
        PoliciesCommand::Delete { provider } => {
            let question = format!("Delete the policy of {provider} (every active user may use it again)");
            let message = format!("deleted the policy of {provider}");
            ctx.delete(io, &question, &paths::policies(&app, Some(&provider)), &message).await
        }
    }
}

async fn users(ctx: &Ctx<'_>, command: UsersCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    match command {
        UsersCommand::List { status } => {
            let path = format!("{}{}", paths::users(&app, None), query(&[("status", status.as_deref())]));
            ctx.list(io, &path, &["user_id", "subject", "status", "email", "last_seen_at"]).await
        }
        UsersCommand::Show { user_id } => ctx.show(io, Method::GET, &paths::users(&app, Some(&user_id)), NO_BODY).await,
        UsersCommand::Deprovision { user_id } => {
            let question = format!("Deprovision user {user_id} (every grant revoked, every token deleted)");
            io.confirm(ctx.global.yes, &question).map_err(Failed)?;
            let path = format!("{}/deprovision", paths::users(&app, Some(&user_id)));
            ctx.show(io, Method::POST, &path, NO_BODY).await
        }
    }
}

async fn grants(ctx: &Ctx<'_>, command: GrantsCommand, io: &mut Io<'_>) -> Step<()> {
    let app = app(ctx.global, io)?;
    match command {
        GrantsCommand::List { status, provider, user_id } => {
            let q = query(&[
                ("status", status.as_deref()),
                ("provider", provider.as_deref()),
                ("user_id", user_id.as_deref()),
            ]);
            let path = format!("{}{q}", paths::grants(&app));
            ctx.list(io, &path, &["id", "provider", "status", "user_id", "account", "updated_at"]).await
        }
        GrantsCommand::Import {
            provider,
            subject,
            user_id,
            access_token,
            refresh_token,
            expires_in,
            scopes,
            account,
            token_type,
        } => {
            if access_token == "-" && refresh_token.as_deref() == Some("-") {
                return Err(usage(io, "only one of --access-token and --refresh-token may read stdin (`-`)"));
            }
            let access_token = secret(io, "--access-token", access_token)?;
            let refresh_token = refresh_token.map(|t| secret(io, "--refresh-token", t)).transpose()?;
            let body = custody_client::GrantImport {
                subject,
                user_id,
                provider,
                access_token,
                refresh_token,
                expires_in,
                scopes: (!scopes.is_empty()).then_some(scopes),
                account,
                token_type,
            };
            ctx.show(io, Method::POST, &paths::grants(&app), Some(&body)).await
        }
        GrantsCommand::Revoke { grant_id, reason } => {
            let question = format!("Revoke grant {grant_id}");
            io.confirm(ctx.global.yes, &question).map_err(Failed)?;
            let body = custody_client::RevokeRequest { reason };
            ctx.show(io, Method::POST, &paths::grant_revoke(&app, &grant_id), Some(&body)).await
        }
    }
}
