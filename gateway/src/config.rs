//! Start-up configuration: environment variables, optionally completed by a TOML file.
//!
//! Precedence: environment > config file (`GATEWAY_CONFIG`, or `./gateway.toml` when present)
//! > defaults. Nothing here touches the network or the database.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Config {
    /// `GATEWAY_LISTEN`, default `127.0.0.1:8080`. Port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// `DATABASE_URL`; `None` means the embedded cluster in `data_dir/pg`.
    pub database_url: Option<String>,
    /// `GATEWAY_DATA_DIR`, default `./.gateway`.
    pub data_dir: PathBuf,
    /// `GATEWAY_POLICIES`, default `./policies`.
    pub policies: PathBuf,
    /// `GATEWAY_PLUGIN_DIR`, default `./plugins/target/wasm32-wasip2/release`: where the
    /// plugin files named by policies are.
    pub plugin_dir: PathBuf,
    /// `GATEWAY_BOOTSTRAP_TOKEN`: the super-admin token to create when none exists.
    pub bootstrap_token: Option<String>,
    /// `GATEWAY_LOG_FORMAT`: `json` or `text` (default).
    pub log_json: bool,
    /// `GATEWAY_DB_MAX_CONNECTIONS`, default 16.
    pub db_max_connections: u32,
    /// `GATEWAY_EXTRA_CA_FILE`: PEM certificates trusted for plugins' outbound HTTPS in
    /// addition to the web PKI roots (private CAs, tests).
    pub extra_ca_file: Option<PathBuf>,
    /// `serve --watch` (development): reload changed policy and plugin files.
    pub watch: bool,
    /// `GATEWAY_SECRET_KEY`: the key ring sealing secrets at rest: base64 keys of 32 bytes,
    /// comma-separated, the first seals, all open (`webhooks::seal`). Replicas must hold each
    /// other's sealing key. Unset: `data_dir/secret-key`, created on first start.
    pub secret_key: Option<String>,
    /// `GATEWAY_REPLICA_ID`: this replica's lasting name (letters, digits, `-`, `_`, `.`; at
    /// most 64). Unset: `data_dir/replica-id`, created on first start. A replica that comes
    /// back under the same name releases the jobs its previous run left `processing` at once.
    pub replica_id: Option<String>,
    /// `GATEWAY_REQUEST_TIMEOUT_MS`, default 10000 (100 to 300000): the most a native route's
    /// request may take once its body is read, database time included; past it the client
    /// gets 503 `UNAVAILABLE`. Plugin routes use their sandbox's `timeout_ms` instead.
    pub request_timeout_ms: u64,
    /// `GATEWAY_JOB_WORKERS`, default 16: jobs this replica runs at once (0: run none).
    pub job_workers: usize,
    /// `GATEWAY_SCHEDULER`, `on` (default) or `off`: whether this replica runs the schedules'
    /// scheduler (every replica may; a slot runs once across them).
    pub scheduler: bool,
    /// `GATEWAY_JOB_ORG_CONCURRENCY`, default 8: jobs of one org running at once, across
    /// replicas (checked at claim time).
    pub job_org_concurrency: u32,
    /// `GATEWAY_JOB_LEASE_SECS`, default 60: how long a claimed job is a worker's before
    /// another may take it (a worker that died).
    pub job_lease_secs: u32,
    /// `GATEWAY_JOB_DB_CONNECTIONS`, default 8: the job workers' own pool, apart from the
    /// requests' (`GATEWAY_DB_MAX_CONNECTIONS`).
    pub job_db_connections: u32,
    /// `GATEWAY_RETENTION_DAYS`, default 30 (1–3650): days of history kept (`webhook_events`,
    /// finished `jobs`, `agent_runs`, `crm_outbox`, `schedule_runs`); older days are dropped.
    pub retention_days: u32,
    /// `GATEWAY_IDEMPOTENCY_DAYS`, default 45 (at least 7 and at least the retention): days a
    /// webhook event key is remembered, so a provider's late retry is still a duplicate.
    pub idempotency_days: u32,
    /// `GATEWAY_PLUGIN_DB_CONNECTIONS`, default 16: plugin invocations' own pool, apart from
    /// the one authentication and native routes use.
    pub plugin_db_connections: u32,
    /// `GATEWAY_PLUGIN_DB_CONNECTIONS_PER_ORG`, default 4: plugin-pool connections one org's
    /// invocations may hold at once.
    pub plugin_db_connections_per_org: u32,
    /// `GATEWAY_PLUGIN_INSTANCES_PER_ORG`, default 128, at most half the instance pool
    /// ([`crate::plugin::MAX_LIVE_INSTANCES`]): live plugin instances one org may have at once,
    /// whatever its plan allows (plans without `plugin_concurrency` included).
    pub plugin_instances_per_org: u32,
    /// `GATEWAY_OUTBOUND_ALLOW_LOOPBACK=1` (tests and development only): plugins' outbound
    /// HTTP may reach loopback through an IP-literal pattern with `allow_private`. Environment
    /// only, never the config file, so that it cannot ride along with a deployed configuration.
    pub outbound_allow_loopback: bool,
    /// `GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS=1` (local development and tests only): an org's
    /// provider `base_url` may be on loopback or a private network (fake providers on
    /// `127.0.0.1`), and calls carrying its credential may connect there. Environment only.
    pub allow_private_provider_urls: bool,
    /// `GATEWAY_BODY_IDLE_TIMEOUT_SECS`, default 10 (1–300): the longest a request body may
    /// pause between two reads before the request is answered 408.
    pub body_idle_timeout: Duration,
    /// `GATEWAY_BODY_TIMEOUT_SECS`, default 60 (1–3600, not below the idle timeout): the longest
    /// a request body may take in all, however steadily it trickles.
    pub body_timeout: Duration,
    /// `GATEWAY_MAX_CONNECTIONS`: client connections open at once. Unset: what the
    /// file-descriptor limit leaves after a reserve for everything else; a larger value is
    /// lowered to that at start-up.
    pub max_connections: Option<usize>,
    /// `GATEWAY_MAX_CONNECTIONS_PER_ADDRESS`, default 256 (≥ 1): client connections open at
    /// once from one address (one IPv6 /64).
    pub max_connections_per_address: usize,
    /// `GATEWAY_METRICS_LISTEN`, default `127.0.0.1:9464`; `off` (`None`): no metrics
    /// listener. Port 0 picks a free port, written to `data_dir/metrics.addr` (tests).
    pub metrics_listen: Option<SocketAddr>,
    /// `GATEWAY_METRICS_PER_ORG=1`: also count requests per org (`gateway_org_requests_total`);
    /// off by default, since every org adds series.
    pub metrics_per_org: bool,
    /// `GATEWAY_PUBLIC_URL`: the gateway's base URL as providers reach it (`http(s)://host[:port]
    /// [/prefix]`, no query): provisioning registers `<it>/v1/webhooks/{endpoint_id}`. Unset:
    /// `http://<the bound listen address>`.
    pub public_url: Option<String>,
    /// `GATEWAY_RATELIMIT_STORE`: `auto` (default: the shared store in the database while more
    /// than one replica is live, per process when alone), `postgres` (always shared) or
    /// `local` (per process, as before: N replicas admit N × each limit).
    pub ratelimit_store: crate::ratelimit::fleet::StoreSetting,
    /// `GATEWAY_RATELIMIT_URL`: `redis://[user:password@]host:port/db` (or `rediss://`,
    /// `redis+unix://`): the shared store is this Redis instead of the database.
    pub ratelimit_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    policies: Option<PathBuf>,
    plugin_dir: Option<PathBuf>,
    bootstrap_token: Option<String>,
    log_format: Option<String>,
    db_max_connections: Option<u32>,
    extra_ca_file: Option<PathBuf>,
    secret_key: Option<String>,
    replica_id: Option<String>,
    request_timeout_ms: Option<u64>,
    job_workers: Option<usize>,
    scheduler: Option<String>,
    job_org_concurrency: Option<u32>,
    job_lease_secs: Option<u32>,
    job_db_connections: Option<u32>,
    retention_days: Option<u32>,
    idempotency_days: Option<u32>,
    plugin_db_connections: Option<u32>,
    plugin_db_connections_per_org: Option<u32>,
    plugin_instances_per_org: Option<u32>,
    body_idle_timeout_secs: Option<u64>,
    body_timeout_secs: Option<u64>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    metrics_listen: Option<String>,
    metrics_per_org: Option<bool>,
    public_url: Option<String>,
    ratelimit_store: Option<String>,
    ratelimit_url: Option<String>,
}

fn number<T: std::str::FromStr>(env: &impl Fn(&str) -> Option<String>, key: &str, file: Option<T>, default: T) -> Result<T> {
    match env(key) {
        Some(v) => v.parse().map_err(|_| Error::Config(format!("{key} {v:?} is not a number"))),
        None => Ok(file.unwrap_or(default)),
    }
}

/// A number that must lie in `range`; outside it start-up stops rather than guess.
fn bounded<T>(env: &impl Fn(&str) -> Option<String>, key: &str, file: Option<T>, default: T, range: std::ops::RangeInclusive<T>) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let n = number(env, key, file, default)?;
    if !range.contains(&n) {
        return Err(Error::Config(format!("{key} {n}: must be between {} and {}", range.start(), range.end())));
    }
    Ok(n)
}

/// An on/off environment variable: `1`/`true` or `0`/`false`; anything else is an error
/// rather than a guess.
fn switch(env: &impl Fn(&str) -> Option<String>, key: &str) -> Result<bool> {
    match env(key).as_deref() {
        None | Some("0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(v) => Err(Error::Config(format!("{key} {v:?}: use 1 or 0"))),
    }
}

/// Replica ids go into worker ids and log lines: keep them short and plain.
pub fn valid_replica_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Config {
    /// Reads the process environment (and the config file it may point to).
    pub fn from_env() -> Result<Config> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    pub fn from_lookup(env: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let file = match env("GATEWAY_CONFIG") {
            Some(path) => read_file(Path::new(&path))?,
            None if Path::new("gateway.toml").exists() => read_file(Path::new("gateway.toml"))?,
            None => FileConfig::default(),
        };
        let listen_text = env("GATEWAY_LISTEN")
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8080".to_string());
        let listen = listen_text
            .parse()
            .map_err(|_| Error::Config(format!("GATEWAY_LISTEN {listen_text:?} is not host:port")))?;
        let log_format = env("GATEWAY_LOG_FORMAT").or(file.log_format).unwrap_or_default();
        let log_json = match log_format.as_str() {
            "json" => true,
            "" | "text" => false,
            other => {
                return Err(Error::Config(format!("GATEWAY_LOG_FORMAT {other:?}: use json or text")))
            }
        };
        let db_max_connections = match env("GATEWAY_DB_MAX_CONNECTIONS") {
            Some(v) => v.parse().map_err(|_| {
                Error::Config(format!("GATEWAY_DB_MAX_CONNECTIONS {v:?} is not a number"))
            })?,
            None => file.db_max_connections.unwrap_or(16),
        };
        let body_idle_timeout = bounded(&env, "GATEWAY_BODY_IDLE_TIMEOUT_SECS", file.body_idle_timeout_secs, 10, 1..=300)?;
        let body_timeout = bounded(&env, "GATEWAY_BODY_TIMEOUT_SECS", file.body_timeout_secs, 60, 1..=3600)?;
        if body_timeout < body_idle_timeout {
            return Err(Error::Config(format!(
                "GATEWAY_BODY_TIMEOUT_SECS {body_timeout} is below GATEWAY_BODY_IDLE_TIMEOUT_SECS {body_idle_timeout}"
            )));
        }
        let max_connections = match env("GATEWAY_MAX_CONNECTIONS") {
            Some(v) => Some(v.parse().map_err(|_| Error::Config(format!("GATEWAY_MAX_CONNECTIONS {v:?} is not a number")))?),
            None => file.max_connections,
        };
        if max_connections == Some(0) {
            return Err(Error::Config("GATEWAY_MAX_CONNECTIONS 0: must be at least 1".into()));
        }
        let metrics_text = env("GATEWAY_METRICS_LISTEN").or(file.metrics_listen).unwrap_or_else(|| "127.0.0.1:9464".to_string());
        let metrics_listen = match metrics_text.as_str() {
            "off" => None,
            text => Some(text.parse().map_err(|_| {
                Error::Config(format!("GATEWAY_METRICS_LISTEN {text:?} is not host:port (or off)"))
            })?),
        };
        let metrics_per_org = match env("GATEWAY_METRICS_PER_ORG") {
            Some(_) => switch(&env, "GATEWAY_METRICS_PER_ORG")?,
            None => file.metrics_per_org.unwrap_or(false),
        };
        let public_url = match env("GATEWAY_PUBLIC_URL").or(file.public_url) {
            Some(u) => Some(public_url(&u)?),
            None => None,
        };
        let ratelimit_url = env("GATEWAY_RATELIMIT_URL").or(file.ratelimit_url);
        if ratelimit_url.as_deref().is_some_and(|u| !crate::ratelimit::fleet::valid_redis_url(u)) {
            // Not quoted: the URL may carry a password.
            return Err(Error::Config("GATEWAY_RATELIMIT_URL: not a redis://, rediss:// or redis+unix:// URL".into()));
        }
        let ratelimit_store =
            crate::ratelimit::fleet::StoreSetting::parse(env("GATEWAY_RATELIMIT_STORE").or(file.ratelimit_store).as_deref(), ratelimit_url.is_some())
                .map_err(Error::Config)?;
        Ok(Config {
            ratelimit_store,
            ratelimit_url,
            public_url,
            listen,
            metrics_listen,
            metrics_per_org,
            database_url: env("DATABASE_URL").or(file.database_url),
            data_dir: env("GATEWAY_DATA_DIR").map(PathBuf::from).or(file.data_dir).unwrap_or_else(|| ".gateway".into()),
            policies: env("GATEWAY_POLICIES").map(PathBuf::from).or(file.policies).unwrap_or_else(|| "policies".into()),
            plugin_dir: env("GATEWAY_PLUGIN_DIR")
                .map(PathBuf::from)
                .or(file.plugin_dir)
                .unwrap_or_else(|| "plugins/target/wasm32-wasip2/release".into()),
            bootstrap_token: env("GATEWAY_BOOTSTRAP_TOKEN").or(file.bootstrap_token),
            log_json,
            db_max_connections,
            extra_ca_file: env("GATEWAY_EXTRA_CA_FILE").map(PathBuf::from).or(file.extra_ca_file),
            watch: false,
            secret_key: env("GATEWAY_SECRET_KEY").or(file.secret_key),
            replica_id: match env("GATEWAY_REPLICA_ID").or(file.replica_id) {
                Some(id) if valid_replica_id(&id) => Some(id),
                Some(id) => {
                    return Err(Error::Config(format!(
                        "GATEWAY_REPLICA_ID {id:?}: use 1 to 64 letters, digits, '-', '_' or '.'"
                    )))
                }
                None => None,
            },
            request_timeout_ms: {
                let ms = number(&env, "GATEWAY_REQUEST_TIMEOUT_MS", file.request_timeout_ms, 10_000)?;
                if !(100..=300_000).contains(&ms) {
                    return Err(Error::Config(format!("GATEWAY_REQUEST_TIMEOUT_MS {ms}: must be between 100 and 300000")));
                }
                ms
            },
            job_workers: number(&env, "GATEWAY_JOB_WORKERS", file.job_workers, 16)?,
            scheduler: match env("GATEWAY_SCHEDULER").or(file.scheduler.clone()).as_deref() {
                None | Some("on") => true,
                Some("off") => false,
                Some(v) => return Err(Error::Config(format!("GATEWAY_SCHEDULER {v:?}: use on or off"))),
            },
            job_org_concurrency: number(&env, "GATEWAY_JOB_ORG_CONCURRENCY", file.job_org_concurrency, 8)?.max(1),
            job_lease_secs: number(&env, "GATEWAY_JOB_LEASE_SECS", file.job_lease_secs, 60)?.max(1),
            job_db_connections: number(&env, "GATEWAY_JOB_DB_CONNECTIONS", file.job_db_connections, 8)?.max(1),
            retention_days: bounded(&env, "GATEWAY_RETENTION_DAYS", file.retention_days, 30, 1..=3650)?,
            idempotency_days: {
                let retention = bounded(&env, "GATEWAY_RETENTION_DAYS", file.retention_days, 30, 1..=3650)?;
                let days = bounded(&env, "GATEWAY_IDEMPOTENCY_DAYS", file.idempotency_days, 45.max(retention), 7..=3650)?;
                if days < retention {
                    return Err(Error::Config(format!(
                        "GATEWAY_IDEMPOTENCY_DAYS {days}: must be at least GATEWAY_RETENTION_DAYS ({retention})"
                    )));
                }
                days
            },
            plugin_db_connections: number(&env, "GATEWAY_PLUGIN_DB_CONNECTIONS", file.plugin_db_connections, 16)?.max(1),
            plugin_db_connections_per_org: number(
                &env,
                "GATEWAY_PLUGIN_DB_CONNECTIONS_PER_ORG",
                file.plugin_db_connections_per_org,
                4,
            )?
            .max(1),
            plugin_instances_per_org: {
                let n = number(&env, "GATEWAY_PLUGIN_INSTANCES_PER_ORG", file.plugin_instances_per_org, 128)?;
                let most = crate::plugin::MAX_LIVE_INSTANCES / 2;
                if !(1..=most).contains(&n) {
                    return Err(Error::Config(format!("GATEWAY_PLUGIN_INSTANCES_PER_ORG {n}: must be between 1 and {most}")));
                }
                n
            },
            outbound_allow_loopback: switch(&env, "GATEWAY_OUTBOUND_ALLOW_LOOPBACK")?,
            allow_private_provider_urls: switch(&env, "GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS")?,
            body_idle_timeout: Duration::from_secs(body_idle_timeout),
            body_timeout: Duration::from_secs(body_timeout),
            max_connections,
            max_connections_per_address: bounded(
                &env,
                "GATEWAY_MAX_CONNECTIONS_PER_ADDRESS",
                file.max_connections_per_address,
                256,
                1..=usize::MAX,
            )?,
        })
    }
}

/// A base URL providers can call: absolute http(s), a host, no credentials, query or fragment;
/// kept without a trailing `/`.
fn public_url(text: &str) -> Result<String> {
    let bad = || Error::Config(format!("GATEWAY_PUBLIC_URL {text:?}: use http(s)://host[:port][/path], without query or credentials"));
    let uri: http::Uri = text.parse().map_err(|_| bad())?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|h| !h.is_empty())
        && uri.query().is_none()
        && !uri.authority().is_some_and(|a| a.as_str().contains('@'))
        && !text.contains('#');
    if !ok {
        return Err(bad());
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading config {}", path.display()), e))?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_wins_over_file_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\npolicies = \"/p\"\n").unwrap();
        let env: HashMap<&str, String> = [
            ("GATEWAY_CONFIG", file.display().to_string()),
            ("GATEWAY_LISTEN", "127.0.0.1:9100".to_string()),
        ]
        .into();
        let c = Config::from_lookup(|k| env.get(k).cloned()).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.policies, PathBuf::from("/p"));
        assert_eq!(c.data_dir, PathBuf::from(".gateway"));
        assert!(c.database_url.is_none());
    }

    #[test]
    fn idempotency_outlives_the_history_and_provider_retries() {
        let c = |pairs: &[(&str, &str)]| {
            let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::from_lookup(|k| env.get(k).cloned())
        };
        let d = c(&[]).unwrap();
        assert_eq!((d.retention_days, d.idempotency_days), (30, 45));
        // A longer retention lengthens the default window with it.
        let d = c(&[("GATEWAY_RETENTION_DAYS", "90")]).unwrap();
        assert_eq!((d.retention_days, d.idempotency_days), (90, 90));
        let d = c(&[("GATEWAY_RETENTION_DAYS", "3"), ("GATEWAY_IDEMPOTENCY_DAYS", "7")]).unwrap();
        assert_eq!((d.retention_days, d.idempotency_days), (3, 7));
        for bad in [
            vec![("GATEWAY_IDEMPOTENCY_DAYS", "6")],
            vec![("GATEWAY_RETENTION_DAYS", "30"), ("GATEWAY_IDEMPOTENCY_DAYS", "20")],
            vec![("GATEWAY_RETENTION_DAYS", "0")],
            vec![("GATEWAY_RETENTION_DAYS", "x")],
        ] {
            assert!(matches!(c(&bad), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn outbound_loopback_switch_is_off_unless_set_exactly() {
        let c = |v: Option<&str>| {
            Config::from_lookup(|k| (k == "GATEWAY_OUTBOUND_ALLOW_LOOPBACK").then(|| v.map(str::to_string)).flatten())
        };
        assert!(!c(None).unwrap().outbound_allow_loopback);
        assert!(!c(Some("0")).unwrap().outbound_allow_loopback);
        assert!(c(Some("1")).unwrap().outbound_allow_loopback);
        assert!(c(Some("true")).unwrap().outbound_allow_loopback);
        let e = c(Some("yes")).unwrap_err().to_string();
        assert!(e.contains("GATEWAY_OUTBOUND_ALLOW_LOOPBACK"), "{e}");
    }

    #[test]
    fn public_url_is_an_http_base_without_query_or_credentials() {
        let c = |v: &'static str| Config::from_lookup(move |k| (k == "GATEWAY_PUBLIC_URL").then(|| v.to_string()));
        assert_eq!(Config::from_lookup(|_| None).unwrap().public_url, None);
        assert_eq!(c("https://gw.example.com/").unwrap().public_url.as_deref(), Some("https://gw.example.com"));
        assert_eq!(c("http://10.0.0.5:8080/gw").unwrap().public_url.as_deref(), Some("http://10.0.0.5:8080/gw"));
        for bad in ["gw.example.com", "ftp://gw.example.com", "https://u:p@gw.example.com", "https://gw.example.com/?a=1", "https://gw.example.com/#x"] {
            let e = c(bad).unwrap_err().to_string();
            assert!(e.contains("GATEWAY_PUBLIC_URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_listen_is_a_clear_error() {
        let e = Config::from_lookup(|k| (k == "GATEWAY_LISTEN").then(|| "nope".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("GATEWAY_LISTEN"), "{e}");
    }

    #[test]
    fn body_timeouts_and_connection_caps_have_defaults_and_bounds() {
        let d = Config::from_lookup(|_| None).unwrap();
        assert_eq!(d.body_idle_timeout, Duration::from_secs(10));
        assert_eq!(d.body_timeout, Duration::from_secs(60));
        assert_eq!(d.max_connections, None);
        assert_eq!(d.max_connections_per_address, 256);
        let c = |pairs: &[(&str, &str)]| {
            let env: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Config::from_lookup(move |k| env.get(k).cloned())
        };
        let set = c(&[
            ("GATEWAY_BODY_IDLE_TIMEOUT_SECS", "2"),
            ("GATEWAY_BODY_TIMEOUT_SECS", "5"),
            ("GATEWAY_MAX_CONNECTIONS", "100"),
            ("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "50"),
        ])
        .unwrap();
        assert_eq!((set.body_idle_timeout.as_secs(), set.body_timeout.as_secs()), (2, 5));
        assert_eq!((set.max_connections, set.max_connections_per_address), (Some(100), 50));
        for (k, v) in [
            ("GATEWAY_BODY_IDLE_TIMEOUT_SECS", "0"),
            ("GATEWAY_BODY_IDLE_TIMEOUT_SECS", "301"),
            ("GATEWAY_BODY_TIMEOUT_SECS", "3601"),
            ("GATEWAY_BODY_TIMEOUT_SECS", "5"),
            ("GATEWAY_MAX_CONNECTIONS", "0"),
            ("GATEWAY_MAX_CONNECTIONS_PER_ADDRESS", "0"),
        ] {
            let e = c(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn metrics_listen_defaults_to_loopback_and_can_be_turned_off() {
        let c = |k: &'static str, v: &'static str| Config::from_lookup(move |key| (key == k).then(|| v.to_string()));
        let d = Config::from_lookup(|_| None).unwrap();
        assert_eq!(d.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(!d.metrics_per_org);
        assert_eq!(c("GATEWAY_METRICS_LISTEN", "off").unwrap().metrics_listen, None);
        assert_eq!(c("GATEWAY_METRICS_LISTEN", "127.0.0.1:0").unwrap().metrics_listen.unwrap().port(), 0);
        assert!(c("GATEWAY_METRICS_PER_ORG", "1").unwrap().metrics_per_org);
        for (k, v) in [("GATEWAY_METRICS_LISTEN", "9464"), ("GATEWAY_METRICS_PER_ORG", "yes")] {
            let e = c(k, v).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
        }
    }

    #[test]
    fn an_orgs_instance_share_is_bounded_by_half_the_pool() {
        let c = |v: &str| Config::from_lookup(|k| (k == "GATEWAY_PLUGIN_INSTANCES_PER_ORG").then(|| v.to_string()));
        assert_eq!(Config::from_lookup(|_| None).unwrap().plugin_instances_per_org, 128);
        assert_eq!(c("256").unwrap().plugin_instances_per_org, 256);
        for bad in ["0", "257"] {
            let e = c(bad).unwrap_err().to_string();
            assert!(e.contains("GATEWAY_PLUGIN_INSTANCES_PER_ORG"), "{e}");
        }
    }
}
