//! The `gateway` binary: `serve`, and the administrative CLI (`org`, `token`, `secrets`), which works
//! against the same database as a running server.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gateway::{ops, policy::PolicySet, Config, Database};
use serde_json::json;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "gateway", version, about = "Multi-tenant WebAssembly policy-plugin gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant (`plugin check`'s options) costs
// nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the gateway (configured by GATEWAY_* and DATABASE_URL).
    Serve {
        /// Development mode: reload changed policy and plugin files; an invalid change is
        /// refused (logged) and the running set stays.
        #[arg(long)]
        watch: bool,
    },
    /// Manage orgs.
    #[command(subcommand)]
    Org(OrgCmd),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Sealed secrets and the key ring (GATEWAY_SECRET_KEY).
    #[command(subcommand)]
    Secrets(SecretsCmd),
    /// Ship and manage plugin versions through a running gateway's admin API.
    Plugin {
        #[command(subcommand)]
        cmd: PluginCmd,
        /// Gateway base URL (default: the address in $GATEWAY_DATA_DIR/gateway.addr, else
        /// GATEWAY_LISTEN).
        #[arg(long, global = true)]
        url: Option<String>,
        /// Super-admin token (default: $GATEWAY_TOKEN, else $GATEWAY_DATA_DIR/bootstrap-token).
        #[arg(long, global = true, env = "GATEWAY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Print the API's JSON answer.
        #[arg(long, global = true)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Upload a component as the next version of NAME.
    Push {
        file: std::path::PathBuf,
        #[arg(long)]
        name: String,
        /// Activate it at once.
        #[arg(long)]
        activate: bool,
        /// Embed these contract fixtures (JSON) in the component before uploading it; the
        /// gateway runs them and refuses the upload if one fails. Default: `fixtures.json`
        /// beside the `plugin.toml` found for the component, when the component has none.
        #[arg(long)]
        fixtures: Option<std::path::PathBuf>,
        /// Embed this manifest (`plugin.toml`) as the `gateway:manifest` section. Default: the
        /// first `plugin.toml` in the component's directory or one of its four parents.
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
    },
    /// List every version, which is active, the WIT contract it was built against
    /// (`gateway:plugin@0.1.0`), who uploaded it and when.
    List,
    /// Make VERSION the active version of NAME.
    Activate { name: String, version: i32 },
    /// Undo NAME's newest activation: back to the version active before it (repeated, it
    /// walks the activation history back), or to the policy's file.
    Rollback { name: String },
    /// Serve NAME from its policy's file again (no registry version active).
    Deactivate { name: String },
    /// Recent failures of NAME (502s and deadlines: why, with the request id) on the replica
    /// the CLI talks to (each replica keeps its own).
    Logs { name: String },
    /// Check a component locally, without a gateway: it must be a component of the handler
    /// world that imports nothing else and compiles. Then its contract fixtures run (those it
    /// ships, `--fixtures`, or `fixtures.json` beside its `plugin.toml`): plain ones in the
    /// no-grant sandbox exactly as an upload runs them, database ones (with `seed`) against a
    /// throwaway embedded PostgreSQL with the grants the manifest declares. Without fixtures
    /// (or with `--no-fixtures`), the one request the options describe is run and printed.
    Check {
        file: std::path::PathBuf,
        #[arg(long)]
        fixtures: Option<std::path::PathBuf>,
        /// The manifest to embed and take grants from (default: as for `push`).
        #[arg(long)]
        manifest: Option<std::path::PathBuf>,
        /// Run the request below even when there are fixtures.
        #[arg(long)]
        no_fixtures: bool,
        #[arg(long, default_value = "POST")]
        method: String,
        #[arg(long, default_value = "/")]
        path: String,
        /// The route's path pattern (`/v1/notes/{id}`): path parameters are taken from --path.
        #[arg(long)]
        route: Option<String>,
        /// A path parameter, NAME=VALUE (repeatable; over what --route takes).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// The query string, without `?`.
        #[arg(long, default_value = "")]
        query: String,
        /// A request header, NAME: VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The caller's role: member, admin or super_admin.
        #[arg(long, default_value = "member")]
        role: String,
        /// The caller's org: a UUID or a label (as in fixtures).
        #[arg(long)]
        org: Option<String>,
        /// Request body (JSON).
        #[arg(long, default_value = "{}")]
        body: String,
    },
    /// Write a new plugin crate (SDK, contract, manifest, fixtures, README) that builds out of
    /// this repository with `cargo build --release --target wasm32-wasip2`.
    New {
        name: String,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
    /// Print the current WIT contract (the one `plugin new` writes; older served versions
    /// are in the repository's `wit/<version>/`).
    Wit,
}

#[derive(Subcommand)]
enum SecretsCmd {
    /// Re-seal every sealed secret (webhook secrets, provider credentials, notify secrets)
    /// with the ring's newest key. Idempotent; safe while replicas serve, once every replica
    /// holds the newest key. Fails when a value does not open with this ring.
    Reseal {
        /// Rewrites per transaction.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum OrgCmd {
    /// Create an org.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        plan: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change an org's plan (takes effect live).
    SetPlan {
        org: Uuid,
        plan: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a token for a user (by email) of an org; the token is shown once.
    Create {
        #[arg(long)]
        org: Uuid,
        #[arg(long)]
        role: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id.
    Revoke {
        token_id: Uuid,
        #[arg(long)]
        json: bool,
    },
}

/// Logs go to stderr through writer threads, so a request never waits on the terminal or the
/// log collector. Access, audit and the gateway's own lines go through a bounded, lossless
/// buffer (when it is full, writers wait: none of them may be lost). Plugin lines go through
/// their own bounded, lossy buffer: when it is full they are dropped and counted, never waited
/// for, and the count is logged every 10 s while it grows. The text format escapes control
/// characters in every field, the message included (`gateway::logging`).
fn init_tracing(config: &Config, default_level: &str, report_drops: bool) -> [tracing_appender::non_blocking::WorkerGuard; 2] {
    use gateway::logging;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GATEWAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (main, main_guard) = logging::main_sink(std::io::stderr(), logging::BUFFER_LINES);
    let (plugin, plugin_guard) = logging::plugin_sink(std::io::stderr(), logging::PLUGIN_BUFFER_LINES);
    if report_drops {
        logging::report_drops(plugin.error_counter(), logging::DROP_REPORT_PERIOD);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logging::route(plugin, main))
        .with_ansi(ansi);
    if config.log_json {
        builder.json().flatten_event(true).init();
    } else {
        builder.fmt_fields(logging::EscapedFields::default()).init();
    }
    [main_guard, plugin_guard]
}

fn main() -> ExitCode {
    // Error values must not capture backtraces on the hot path (wasmtime builds one whenever a
    // store is dropped, for instance); panics still honour RUST_BACKTRACE. Set before any
    // thread exists.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("gateway: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gateway: {e}");
            return ExitCode::from(2);
        }
    };
    let is_serve = matches!(cli.command, Command::Serve { .. });
    // Flushes buffered log lines when main returns.
    let _log_guards = init_tracing(&config, if is_serve { "info" } else { "warn" }, is_serve);
    let result = match cli.command {
        Command::Serve { watch } => gateway::serve(Config { watch, ..config }).await.map_err(anyhow::Error::from),
        Command::Org(cmd) => admin(config, |db, policies| Box::pin(org(cmd, db, policies))).await,
        Command::Token(cmd) => admin(config, |db, _| Box::pin(token(cmd, db))).await,
        Command::Secrets(cmd) => secrets(config, cmd).await,
        Command::Plugin { cmd: PluginCmd::Check { file, fixtures, manifest, no_fixtures, method, path, route, params, query, headers, role, org, body }, .. } => {
            let one = OneRequest { method, path, route, params, query, headers, role, org, body };
            check(file, fixtures, manifest, no_fixtures, one).await
        }
        Command::Plugin { cmd: PluginCmd::New { name, dir }, .. } => new_plugin(&name, dir),
        Command::Plugin { cmd: PluginCmd::Wit, .. } => {
            print!("{}", gateway::template::WIT);
            Ok(())
        }
        Command::Plugin { cmd, url, token, json } => plugin(&config, cmd, url, token, json).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

type BoxFut<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// Opens the database (attaching to the embedded cluster a server may be running), runs `f`,
/// and closes it again.
async fn admin<F>(config: Config, f: F) -> anyhow::Result<()>
where
    F: for<'a> FnOnce(&'a Database, &'a PolicySet) -> BoxFut<'a>,
{
    let policies = PolicySet::load(&config.policies)?;
    let db = Database::open(&config).await.context("opening the database")?;
    let r = f(&db, &policies).await;
    db.close().await;
    r
}

fn api(e: gateway::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{} ({})", e.message, e.code.as_str())
}

async fn org(cmd: OrgCmd, db: &Database, policies: &PolicySet) -> anyhow::Result<()> {
    match cmd {
        OrgCmd::Create { name, plan, json } => {
            let id = ops::create_org(&db.pool, policies, &name, plan.as_deref()).await.map_err(api)?;
            let plan = plan.unwrap_or_else(|| policies.default_plan.clone());
            print(json, json!({"org_id": id, "plan": plan}), format!("org {id} created (plan {plan})"));
        }
        OrgCmd::SetPlan { org, plan, json } => {
            ops::set_plan(&db.pool, policies, org, &plan).await.map_err(api)?;
            print(json, json!({"org_id": org, "plan": plan}), format!("org {org} is now on plan {plan}"));
        }
    }
    Ok(())
}

async fn token(cmd: TokenCmd, db: &Database) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { org, role, email, json } => {
            let t = ops::create_token(&db.pool, org, &role, &email).await.map_err(api)?;
            print(
                json,
                json!({"token": t.token, "token_id": t.token_id, "user_id": t.user_id, "org_id": org, "role": role}),
                format!("token (shown once): {}\ntoken_id: {}\nuser_id: {}", t.token, t.token_id, t.user_id),
            );
        }
        TokenCmd::Revoke { token_id, json } => {
            ops::revoke_token(&db.pool, token_id).await.map_err(api)?;
            print(json, json!({"token_id": token_id, "revoked": true}), format!("token {token_id} revoked"));
        }
    }
    Ok(())
}

async fn secrets(config: Config, cmd: SecretsCmd) -> anyhow::Result<()> {
    let SecretsCmd::Reseal { batch, json } = cmd;
    let ring = gateway::webhooks::seal::SecretKey::load_existing(config.secret_key.as_deref(), &config.data_dir)?
        .context("no key ring: set GATEWAY_SECRET_KEY (newest key first), or GATEWAY_DATA_DIR to the data directory holding secret-key")?;
    let db = Database::open(&config).await.context("opening the database")?;
    let r = gateway::ops::reseal(&db.pool, &ring, batch).await.map_err(api);
    db.close().await;
    let r = r?;
    print(
        json,
        serde_json::to_value(&r)?,
        format!(
            "newest key {}: {} resealed, {} already current, {} changed meanwhile, {} unreadable ({} orgs)",
            r.newest_key_id, r.resealed, r.current, r.changed_meanwhile, r.unreadable.len(), r.orgs
        ),
    );
    for u in &r.unreadable {
        eprintln!("unreadable: {u}");
    }
    if !r.unreadable.is_empty() {
        anyhow::bail!("{} sealed values do not open with this key ring (ids {})", r.unreadable.len(), ring.ids_text());
    }
    if r.changed_meanwhile > 0 {
        anyhow::bail!("{} values changed while resealing; run it again", r.changed_meanwhile);
    }
    Ok(())
}

fn print(as_json: bool, v: serde_json::Value, text: String) {
    if as_json {
        println!("{v}");
    } else {
        println!("{text}");
    }
}

/// The plugin commands speak to the admin API of a running gateway, like any operator tool.
async fn plugin(config: &Config, cmd: PluginCmd, url: Option<String>, token: Option<String>, json: bool) -> anyhow::Result<()> {
    use http_body_util::{BodyExt, Full};
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match std::fs::read_to_string(config.data_dir.join("gateway.addr")) {
            Ok(a) => format!("http://{}", a.trim()),
            Err(_) => format!("http://{}", config.listen),
        },
    };
    let token = match token {
        Some(t) => t,
        None => std::fs::read_to_string(config.data_dir.join("bootstrap-token"))
            .context("no --token, GATEWAY_TOKEN or bootstrap-token file")?
            .trim()
            .to_string(),
    };
    let (method, path, body, ctype) = match &cmd {
        PluginCmd::Push { file, name, activate, fixtures, manifest } => {
            let bytes = read_component(file, fixtures.as_deref(), manifest.as_deref())?.bytes;
            let q = if *activate { "?activate=true" } else { "" };
            ("PUT", format!("/v1/admin/plugins/{name}{q}"), bytes, "application/wasm")
        }
        PluginCmd::List => ("GET", "/v1/admin/plugins".to_string(), Vec::new(), "application/json"),
        PluginCmd::Activate { name, version } => (
            "POST",
            format!("/v1/admin/plugins/{name}/activate"),
            serde_json::to_vec(&json!({ "version": version }))?,
            "application/json",
        ),
        PluginCmd::Rollback { name } => ("POST", format!("/v1/admin/plugins/{name}/rollback"), Vec::new(), "application/json"),
        PluginCmd::Deactivate { name } => ("POST", format!("/v1/admin/plugins/{name}/deactivate"), Vec::new(), "application/json"),
        PluginCmd::Logs { name } => ("GET", format!("/v1/admin/plugins/{name}/failures"), Vec::new(), "application/json"),
        PluginCmd::Check { .. } | PluginCmd::New { .. } | PluginCmd::Wit => unreachable!("handled locally"),
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let req = http::Request::builder()
        .method(method)
        .uri(format!("{base}{path}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", ctype)
        .body(Full::new(bytes::Bytes::from(body)))?;
    let resp = client.request(req).await.with_context(|| format!("cannot reach the gateway at {base}"))?;
    let status = resp.status();
    let body: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await?.to_bytes()).unwrap_or(serde_json::Value::Null);
    if !status.is_success() {
        // An activation refused for missing grants names each one (docs/plugin-manifest.md).
        for m in body["missing"].as_array().into_iter().flatten() {
            eprintln!("missing: {m}");
        }
        anyhow::bail!("{} ({}, HTTP {})", body["error"].as_str().unwrap_or("request failed"), body["error_code"].as_str().unwrap_or("-"), status.as_u16());
    }
    if json {
        println!("{body}");
        return Ok(());
    }
    match cmd {
        PluginCmd::Push { .. } => println!(
            "{} version {} uploaded (sha256 {}){}",
            body["name"].as_str().unwrap_or(""), body["version"], body["sha256"].as_str().unwrap_or(""),
            if body["active"] == true { ", active" } else { "" }
        ),
        PluginCmd::List => {
            for p in body["plugins"].as_array().into_iter().flatten() {
                println!(
                    "{:<20} v{:<4} {:<16} {:<20} {} {} {}",
                    p["name"].as_str().unwrap_or(""), p["version"], p["served_as"].as_str().unwrap_or(""),
                    p["wit"].as_str().unwrap_or(""),
                    if p["active"] == true { "ACTIVE" } else { "      " },
                    &p["sha256"].as_str().unwrap_or("")[..12.min(p["sha256"].as_str().unwrap_or("").len())],
                    p["uploaded_at"].as_str().unwrap_or("")
                );
            }
        }
        PluginCmd::Activate { .. } | PluginCmd::Rollback { .. } | PluginCmd::Deactivate { .. } => {
            let v = |x: &serde_json::Value| if x.is_null() { "file".to_string() } else { x.to_string() };
            println!("{}: {} -> {}", body["name"].as_str().unwrap_or(""), v(&body["from"]), v(&body["to"]))
        }
        PluginCmd::Logs { name } => {
            let list = body["failures"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("{name}: no recent failures on this replica");
            }
            for f in list {
                let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
                let mut line = format!(
                    "{} {} v{} {} route={} org={} request_id={}",
                    s("at"), name, s("version"), s("outcome"), s("route"), s("org_id"), s("request_id")
                );
                if let Some(g) = f["not_granted"].as_str() {
                    line.push_str(&format!(" not_granted=\"{g}\""));
                }
                if !s("detail").is_empty() {
                    line.push_str(&format!(" detail={:?}", s("detail")));
                }
                println!("{line}");
            }
        }
        PluginCmd::Check { .. } | PluginCmd::New { .. } | PluginCmd::Wit => {}
    }
    Ok(())
}


/// A component as it will be uploaded or checked, with what was embedded and from where.
struct Component {
    bytes: Vec<u8>,
    manifest: Option<gateway::registry::manifest::Manifest>,
    /// Files embedded, for the report.
    embedded: Vec<String>,
}

/// The first `plugin.toml` in `file`'s directory or one of its four parents (a crate's
/// `target/wasm32-wasip2/release/x.wasm` finds the crate's).
fn find_manifest(file: &std::path::Path) -> Option<std::path::PathBuf> {
    let dir = std::fs::canonicalize(file).ok()?.parent()?.to_path_buf();
    dir.ancestors().take(5).map(|d| d.join("plugin.toml")).find(|p| p.is_file())
}

/// Reads a component and embeds what goes with it: the manifest (`--manifest`, else the
/// `plugin.toml` found for it) and the fixtures (`--fixtures`, else, when the component
/// ships none, `fixtures.json` beside that manifest).
fn read_component(file: &std::path::Path, fixtures: Option<&std::path::Path>, manifest: Option<&std::path::Path>) -> anyhow::Result<Component> {
    use gateway::registry::{fixtures as fx, manifest as mf};
    let mut bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let mut embedded = Vec::new();
    let manifest_path = manifest.map(std::path::Path::to_path_buf).or_else(|| find_manifest(file));
    let fixtures_path = match fixtures {
        Some(f) => Some(f.to_path_buf()),
        None => match (&manifest_path, fx::extract(&bytes)) {
            (Some(m), Ok(None)) => Some(m.with_file_name("fixtures.json")).filter(|p| p.is_file()),
            _ => None,
        },
    };
    if let Some(f) = &fixtures_path {
        let json = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        bytes = fx::embed(&bytes, &json).with_context(|| format!("embedding {}", f.display()))?;
        embedded.push(f.display().to_string());
    }
    let manifest = match &manifest_path {
        Some(m) => {
            let text = std::fs::read_to_string(m).with_context(|| format!("reading {}", m.display()))?;
            let parsed = mf::Manifest::parse(&text).with_context(|| format!("{}", m.display()))?;
            bytes = fixture_section::embed_named(&bytes, mf::SECTION, text.as_bytes())
                .map_err(|e| anyhow::anyhow!("embedding {}: {e}", m.display()))?;
            embedded.push(m.display().to_string());
            Some(parsed)
        }
        None => mf::Manifest::from_component(&bytes).ok().flatten(),
    };
    Ok(Component { bytes, manifest, embedded })
}

/// The request `gateway plugin check` runs when there are no fixtures to run.
struct OneRequest {
    method: String,
    path: String,
    route: Option<String>,
    params: Vec<String>,
    query: String,
    headers: Vec<String>,
    role: String,
    org: Option<String>,
    body: String,
}

impl OneRequest {
    /// As a fixture's request, so both take the same path through `registry::fixtures`.
    fn fixture_request(self) -> anyhow::Result<gateway::registry::fixtures::FixtureRequest> {
        let params = self
            .params
            .iter()
            .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).with_context(|| format!("--param {p}: expected NAME=VALUE")))
            .collect::<anyhow::Result<_>>()?;
        let mut headers: std::collections::BTreeMap<String, String> = self
            .headers
            .iter()
            .map(|h| h.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).with_context(|| format!("--header {h}: expected NAME: VALUE")))
            .collect::<anyhow::Result<_>>()?;
        headers.entry("content-type".into()).or_insert_with(|| "application/json".into());
        Ok(gateway::registry::fixtures::FixtureRequest {
            method: self.method,
            path: self.path,
            route: self.route,
            params,
            query: self.query,
            headers,
            role: Some(self.role),
            org: self.org,
            body: None,
            raw_body: Some(self.body),
        })
    }
}

/// A throwaway embedded PostgreSQL for database fixtures: fsync off, the gateway's
/// migrations applied, removed (directory and all) by [`Throwaway::remove`].
struct Throwaway {
    cluster: gateway::embedded::Cluster,
    dir: std::path::PathBuf,
    pool: sqlx::PgPool,
}

impl Throwaway {
    async fn start() -> anyhow::Result<Throwaway> {
        // Short: the server's unix socket lives inside.
        let dir = std::env::temp_dir().join(format!("gwcheck-{}-{}", std::process::id(), &Uuid::new_v4().simple().to_string()[..8]));
        let cluster = gateway::embedded::Cluster::start(&dir, gateway::embedded::ClusterOptions { unsafe_no_fsync: true })
            .await
            .context("starting a throwaway PostgreSQL for the database fixtures")?;
        let pool = gateway::db::connect(cluster.connect_options(), 4).await?;
        if let Err(e) = gateway::db::migrate(&pool).await {
            let t = Throwaway { cluster, dir, pool };
            t.remove().await;
            return Err(e).context("migrating the throwaway database");
        }
        Ok(Throwaway { cluster, dir, pool })
    }

    async fn remove(self) {
        self.pool.close().await;
        self.cluster.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `gateway plugin check`: the host-side contract for a plugin author's own component.
async fn check(
    file: std::path::PathBuf,
    fixtures: Option<std::path::PathBuf>,
    manifest: Option<std::path::PathBuf>,
    no_fixtures: bool,
    one: OneRequest,
) -> anyhow::Result<()> {
    use gateway::registry::fixtures as fx;
    let component = read_component(&file, fixtures.as_deref(), manifest.as_deref())?;
    let bytes = &component.bytes;
    let addresses = gateway::plugin::host::addr::AddressPolicy::from_host()?;
    let runtime = gateway::plugin::Runtime::new(None, gateway::plugin::tls_config(None)?, addresses)?;
    let loaded = std::sync::Arc::new(runtime.load("check", "check", bytes).map_err(|e| anyhow::anyhow!("rejected: {e}"))?);
    // Plain fixtures have no grants: tenant-db and outbound-http calls are refused before
    // touching anything, so this pool is never connected.
    let nowhere = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://check@127.0.0.1:1/none")?;
    let label = component.manifest.as_ref().map(|m| m.plugin.version.clone());
    let list = if no_fixtures { None } else { fx::extract(bytes).map_err(|e| anyhow::anyhow!("rejected: {e}"))? };
    if let Some(list) = list {
        let needs_db = list.iter().any(fx::Fixture::needs_database);
        let grants = match &component.manifest {
            Some(m) => fx::grants_from(&m.needs).map_err(|e| anyhow::anyhow!("plugin.toml: {e}"))?,
            None => Default::default(),
        };
        let throwaway = if needs_db { Some(Throwaway::start().await?) } else { None };
        let db = match &throwaway {
            Some(t) => Some(fx::FixtureDb {
                pool: t.pool.clone(),
                schema: std::sync::Arc::new(gateway::db::structured::Schema::load(&t.pool).await?),
                grants: std::sync::Arc::new(grants),
            }),
            None => None,
        };
        let ran = fx::run_all(&runtime, &loaded, &nowhere, &list, db.as_ref()).await;
        drop(db);
        if let Some(t) = throwaway {
            t.remove().await;
        }
        let failed = ran.iter().filter(|r| r.outcome == "failed").count();
        for r in &ran {
            let mark = match r.outcome { "passed" => "ok  ", "failed" => "FAIL", _ => "skip" };
            eprintln!("{mark} {}{}", r.name, if r.database { " (database)" } else { "" });
            if let Some(e) = &r.error {
                eprintln!("     {e}");
            }
        }
        let report = json!({ "component": "ok", "sha256": loaded.sha256, "manifest": label, "embedded": component.embedded,
            "fixtures": ran.len(), "fixtures_passed": failed == 0, "results": ran });
        println!("{report}");
        if failed > 0 {
            anyhow::bail!("{failed} of {} contract fixtures failed", ran.len());
        }
        return Ok(());
    }
    let request = one.fixture_request()?;
    let (org, role) = fx::caller(&request).map_err(|e| anyhow::anyhow!(e))?;
    let request = fx::request_of(&request).map_err(|e| anyhow::anyhow!(e))?;
    let started = std::time::Instant::now();
    let caller = fx::Caller { org, role, ..fx::Caller::sandboxed() };
    let seen = fx::run_as(&runtime, &loaded, &nowhere, request, caller).await;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", json!({ "component": "ok", "sha256": loaded.sha256, "manifest": label, "status": seen.status, "body": seen.body, "ms": ms }));
    Ok(())
}

/// `gateway plugin new`.
fn new_plugin(name: &str, dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| std::path::PathBuf::from(name));
    let files = gateway::template::write(name, &dir)?;
    println!("wrote {} ({} files): a plugin crate for {}", dir.display(), files.len(), gateway::template::CONTRACT);
    println!("next: cd {} && rustup target add wasm32-wasip2 && cargo build --release --target wasm32-wasip2", dir.display());
    println!("then: gateway plugin check target/wasm32-wasip2/release/{}.wasm (README.md has the whole loop)", name.replace('-', "_"));
    Ok(())
}
