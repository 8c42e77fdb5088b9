//! The commands, flags and settings of `custody`, as clap derive definitions.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Custody: a credential vault for apps and their users.
#[derive(Debug, Parser)]
#[command(
    name = "custody",
    version = super::VERSION,
    about = "Custody: run the credential vault and manage it",
    long_about = "Custody: run the credential vault (`custody serve`, the default), manage its database \
(`migrate`, `reseal`), and manage a running server as its operator (every other command).\n\n\
Local commands read the same CUSTODY_* settings as the server (environment, or the TOML file named by \
CUSTODY_CONFIG). Operator commands talk to --url with the admin token.\n\n\
Exit codes: 0 ok, 1 other error, 2 usage, 3 unauthorized (401), 4 not found (404), 5 conflict (409), \
6 unavailable (503 or no connection), 7 refused (400, 403, 410, 422)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Settings of the operator commands.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// The server's base URL.
    #[arg(long, global = true, env = "CUSTODY_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The admin token.
    #[arg(long, global = true, env = "CUSTODY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// A file holding the admin token [default: ./custody-data/admin-token when it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// The app the command acts on.
    #[arg(long, global = true, env = "CUSTODY_APP_ID", value_name = "APP_ID")]
    pub app: Option<String>,
    /// Output format [default: table on a terminal, json otherwise].
    #[arg(long, short = 'o', global = true, value_enum)]
    pub output: Option<Output>,
    /// Do not ask before a destructive command (required without a terminal).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
}

/// `--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns that fit the terminal.
    Table,
    /// The API's JSON, one document per command (a list is one array).
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply, revert or list the database migrations (CUSTODY_DATABASE_URL).
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
    },
    /// Re-seal every stored secret under the first key of CUSTODY_MASTER_KEYS, in batches, while
    /// servers keep running.
    Reseal,
    /// Apps.
    #[command(subcommand)]
    Apps(AppsCommand),
    /// API keys of the app.
    #[command(subcommand, name = "api-keys")]
    ApiKeys(ApiKeysCommand),
    /// The app's identity provider, its OIDC sign-in client and its lifecycle webhooks.
    #[command(subcommand)]
    Idp(IdpCommand),
    /// OAuth providers of the app.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Who may use each provider.
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Users of the app.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Grants of the app's users.
    #[command(subcommand)]
    Grants(GrantsCommand),
    /// The app's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Print a shell completion script.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages (custody.1 and one per subcommand) into DIR (used when packaging).
    #[command(hide = true, name = "generate-man")]
    GenerateMan { dir: PathBuf },
}

/// Shells with completion scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum MigrateAction {
    /// Apply every pending migration.
    Up,
    /// Revert the last applied migration.
    Down,
    /// List the migrations and whether each is applied (never creates the database).
    Status,
}

#[derive(Debug, Subcommand)]
pub enum AppsCommand {
    /// List apps.
    List,
    /// Create an app; its first API key is shown once.
    Create { name: String },
    /// Show an app (APP_ID or --app).
    Show { app_id: Option<String> },
    /// Delete an app and everything of it, credentials included.
    Delete { app_id: Option<String> },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysCommand {
    /// List the app's API keys (prefixes only).
    List,
    /// Create an API key; it is shown once.
    Create,
    /// Delete an API key; it stops working at once.
    Delete { key_id: String },
}

/// Claim-mapping flags of `idp create` and `idp update`.
#[derive(Debug, Clone, Args)]
pub struct ClaimFlags {
    /// The claim holding the user id (default `sub`).
    #[arg(long, value_name = "CLAIM")]
    pub user_id_claim: Option<String>,
    /// The claim holding the groups.
    #[arg(long, value_name = "CLAIM")]
    pub group_claim: Option<String>,
    /// The claim holding the roles.
    #[arg(long, value_name = "CLAIM")]
    pub role_claim: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum IdpCommand {
    /// Read an issuer's discovery document and show what Custody would configure (stores nothing).
    Discover {
        issuer_url: String,
        /// auth0, clerk or custom_oidc (detected from the URL by default).
        #[arg(long)]
        kind: Option<String>,
    },
    /// Configure the app's identity provider.
    Create {
        issuer_url: String,
        /// The audience user tokens must carry.
        #[arg(long)]
        audience: Option<String>,
        /// auth0, clerk or custom_oidc (detected from the URL by default).
        #[arg(long)]
        kind: Option<String>,
        #[command(flatten)]
        claims: ClaimFlags,
    },
    /// Show the identity provider.
    Show,
    /// Change the audience or the claim mappings.
    Update {
        /// The audience user tokens must carry.
        #[arg(long, conflicts_with = "clear_audience")]
        audience: Option<String>,
        /// Accept tokens of any audience.
        #[arg(long)]
        clear_audience: bool,
        #[command(flatten)]
        claims: ClaimFlags,
        /// Stop reading groups.
        #[arg(long, conflicts_with = "group_claim")]
        clear_group_claim: bool,
        /// Stop reading roles.
        #[arg(long, conflicts_with = "role_claim")]
        clear_role_claim: bool,
    },
    /// Remove the identity provider (users, grants and tokens stay).
    Delete,
    /// Fetch the identity provider's signing keys now.
    RefreshKeys,
    /// The OIDC sign-in client.
    #[command(subcommand)]
    Oidc(OidcCommand),
    /// Lifecycle webhooks from the identity provider.
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

#[derive(Debug, Subcommand)]
pub enum OidcCommand {
    /// Set the OIDC client Custody signs users in with.
    Set {
        #[arg(long)]
        client_id: String,
        /// The client secret; `-` reads it from stdin.
        #[arg(long)]
        client_secret: String,
        /// client_secret_basic (default) or client_secret_post.
        #[arg(long)]
        auth_method: Option<String>,
    },
    /// Remove the OIDC client.
    Delete,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Show the webhook URL and whether webhooks are enabled.
    Status,
    /// Enable webhooks; a generated secret is shown once.
    Enable {
        /// The IdP's signing secret (Clerk's `whsec_…`); `-` reads it from stdin.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Replace the signing secret.
    Rotate {
        /// The IdP's new signing secret; `-` reads it from stdin.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Disable webhooks and forget the secret.
    Disable,
}

#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// List the app's providers.
    List,
    /// Create or update a provider.
    Set {
        name: String,
        /// google, github, slack or microsoft: fills the endpoints and default scopes.
        #[arg(long)]
        preset: Option<String>,
        #[arg(long)]
        client_id: String,
        /// The client secret (required for a new provider); `-` reads it from stdin.
        #[arg(long)]
        client_secret: Option<String>,
        #[arg(long)]
        authorization_url: Option<String>,
        #[arg(long)]
        token_url: Option<String>,
        #[arg(long)]
        revocation_url: Option<String>,
        /// A scope to request (repeat the flag, or separate with commas).
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
    },
    /// Show a provider.
    Show { name: String },
    /// Delete a provider; its grants are revoked and its policy removed.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// List the app's policies.
    List,
    /// Let only users holding one of these groups or roles use the provider.
    Set {
        provider: String,
        /// A group allowed (repeat, or separate with commas).
        #[arg(long = "allow-group", value_delimiter = ',')]
        allow_groups: Vec<String>,
        /// A role allowed (repeat, or separate with commas).
        #[arg(long = "allow-role", value_delimiter = ',')]
        allow_roles: Vec<String>,
    },
    /// Show a policy.
    Show { provider: String },
    /// Delete a policy: every active user may use the provider again.
    Delete { provider: String },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// List users.
    List {
        /// active, suspended or deprovisioned.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show a user.
    Show { user_id: String },
    /// Deprovision a user: every grant revoked, every stored token deleted.
    Deprovision { user_id: String },
}

#[derive(Debug, Subcommand)]
pub enum GrantsCommand {
    /// List grants, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
    },
    /// Import a grant from tokens obtained elsewhere.
    Import {
        #[arg(long)]
        provider: String,
        /// The user's subject at the identity provider (creates the user when needed).
        #[arg(long, required_unless_present = "user_id", conflicts_with = "user_id")]
        subject: Option<String>,
        /// The user's Custody id.
        #[arg(long)]
        user_id: Option<String>,
        /// The access token; `-` reads it from stdin.
        #[arg(long)]
        access_token: String,
        /// The refresh token; `-` reads it from stdin (only one of the two may be `-`).
        #[arg(long)]
        refresh_token: Option<String>,
        /// Seconds until the access token expires.
        #[arg(long)]
        expires_in: Option<i64>,
        #[arg(long = "scope", value_delimiter = ',')]
        scopes: Vec<String>,
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        token_type: Option<String>,
    },
    /// Revoke a grant.
    Revoke {
        grant_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit rows, newest first.
    List {
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        user_id: Option<String>,
    },
}
