//! Prometheus metrics: one [`Metrics`] per process, held by the app state (no global
//! registry, so every test gateway counts only its own traffic), served in the Prometheus text
//! format at `GET /metrics` on a listener of its own (`GATEWAY_METRICS_LISTEN`), never on the
//! tenant port.
//!
//! Names follow the OpenTelemetry HTTP semantic conventions where one exists
//! (`http_server_request_duration_seconds`, `http_server_active_requests`); the rest are the
//! gateway's own (`gateway_*`). Labels are bounded sets: the policy's route id (never the raw
//! path), methods outside the standard ones as `_OTHER`, plugin names and versions, fixed
//! outcome words. Orgs appear only on `gateway_org_requests_total`, and only when
//! `GATEWAY_METRICS_PER_ORG` asks for it.
//!
//! Recording is cheap on the request path: label sets are small structs of `&'static str`,
//! `Arc<str>` (the route id, shared with the policy) and integers, so a request allocates
//! nothing once its series exists.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use sqlx::PgPool;
use tokio::net::TcpListener;
use uuid::Uuid;

/// The OpenTelemetry semantic conventions' advised buckets for `http.server.request.duration`,
/// used for plugin durations too.
pub const DURATION_BUCKETS: [f64; 14] = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];

/// The `http_route` of a request no policy route matched (404, 405, `/healthz`, refusals
/// before routing): the raw path would make a series per URL.
pub const UNMATCHED_ROUTE: &str = "-";

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    http_request_method: &'static str,
    http_route: Arc<str>,
    http_response_status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: String,
    version: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    kind: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    provider: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActivationLabels {
    plugin: String,
    outcome: &'static str,
}

/// An org id as a label value, written without allocating a string per request.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Org(Uuid);

impl EncodeLabelValue for Org {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}", self.0.hyphenated())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org: Org,
    status_class: &'static str,
}

pub struct Metrics {
    registry: Registry,
    requests: Histograms<RequestLabels>,
    active: Gauge,
    ratelimited: Family<ScopeLabels, Counter>,
    plugin_invocations: Family<PluginLabels, Counter>,
    plugin_duration: Histograms<PluginLabels>,
    jobs: Family<StatusLabels, Gauge>,
    job_attempts: Family<AttemptLabels, Counter>,
    webhook_deliveries: Family<DeliveryLabels, Counter>,
    pool_connections: Family<PoolLabels, Gauge>,
    plugin_activations: Family<ActivationLabels, Counter>,
    org_requests: Option<Family<OrgLabels, Counter>>,
    ratelimit_store_up: Gauge,
    ratelimit_store_errors: Counter,
    live_replicas: Gauge,
    /// Read at scrape time: sqlx keeps the numbers, nothing needs updating in between.
    pools: Mutex<Vec<(&'static str, PgPool)>>,
    unmatched: Arc<str>,
}

impl Metrics {
    /// `per_org`: also keep `gateway_org_requests_total` (one series per org and status class).
    pub fn new(per_org: bool) -> Metrics {
        let mut registry = Registry::default();
        let requests: Histograms<RequestLabels> = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "http_server_request_duration",
            "Duration of HTTP server requests, by method, policy route id and status code",
            Unit::Seconds,
            requests.clone(),
        );
        let active = Gauge::default();
        registry.register("http_server_active_requests", "HTTP server requests being served", active.clone());
        let ratelimited = Family::default();
        registry.register(
            "gateway_ratelimited",
            "Requests refused 429 by scope: org, user, plugin_concurrency, plugin_cpu, unknown_credential",
            ratelimited.clone(),
        );
        let plugin_invocations = Family::default();
        registry.register(
            "gateway_plugin_invocations",
            "Plugin invocations by plugin, version and outcome",
            plugin_invocations.clone(),
        );
        let plugin_duration: Histograms<PluginLabels> = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "gateway_plugin_duration",
            "Wall time of plugin invocations by plugin, version and outcome",
            Unit::Seconds,
            plugin_duration.clone(),
        );
        let jobs = Family::default();
        registry.register("gateway_jobs", "Jobs waiting, running or dead, by status (all orgs; read every 10 s by the job workers)", jobs.clone());
        let job_attempts = Family::default();
        registry.register("gateway_job_attempts", "Job attempts this replica finished, by kind and outcome", job_attempts.clone());
        let webhook_deliveries = Family::default();
        registry.register(
            "gateway_webhook_deliveries",
            "Webhook deliveries to a known endpoint, by provider and outcome",
            webhook_deliveries.clone(),
        );
        let pool_connections = Family::default();
        registry.register(
            "gateway_db_pool_connections",
            "Database connections by pool (main, plugin, jobs) and state (in_use, idle)",
            pool_connections.clone(),
        );
        let plugin_activations = Family::default();
        registry.register(
            "gateway_plugin_activations",
            "Registry versions this replica swapped in (activations, rollbacks, at start-up), by plugin and outcome",
            plugin_activations.clone(),
        );
        let org_requests = per_org.then(|| {
            let f = Family::default();
            registry.register("gateway_org_requests", "Requests by org and status class (GATEWAY_METRICS_PER_ORG)", f.clone());
            f
        });
        let ratelimit_store_up = Gauge::default();
        registry.register(
            "gateway_ratelimit_store_up",
            "1 while rate limits are counted in the store replicas share; 0 while it is unreachable (each replica admits limit / live replicas) or when limits are per process (GATEWAY_RATELIMIT_STORE=local)",
            ratelimit_store_up.clone(),
        );
        let ratelimit_store_errors = Counter::default();
        registry.register("gateway_ratelimit_store_errors", "Leases from the shared rate-limit store that failed or timed out", ratelimit_store_errors.clone());
        let live_replicas = Gauge::default();
        live_replicas.set(1);
        registry.register("gateway_replicas_live", "Replicas with a fresh heartbeat, this one included", live_replicas.clone());
        Metrics {
            ratelimit_store_up,
            ratelimit_store_errors,
            live_replicas,
            registry,
            requests,
            active,
            ratelimited,
            plugin_invocations,
            plugin_duration,
            jobs,
            job_attempts,
            webhook_deliveries,
            pool_connections,
            plugin_activations,
            org_requests,
            pools: Mutex::new(Vec::new()),
            unmatched: Arc::from(UNMATCHED_ROUTE),
        }
    }

    /// A request being served, until the guard is dropped (however the request ends).
    pub fn active_request(&self) -> ActiveRequest<'_> {
        self.active.inc();
        ActiveRequest(&self.active)
    }

    /// One served request: its duration, and its org's count when per-org counting is on.
    pub fn request(&self, method: &Method, route: Option<&Arc<str>>, status: u16, org: Option<Uuid>, elapsed: Duration) {
        let labels = RequestLabels {
            http_request_method: method_label(method),
            http_route: route.unwrap_or(&self.unmatched).clone(),
            http_response_status_code: status,
        };
        self.requests.get_or_create(&labels).observe(elapsed.as_secs_f64());
        if let (Some(family), Some(org)) = (&self.org_requests, org) {
            family.get_or_create(&OrgLabels { org: Org(org), status_class: status_class(status) }).inc();
        }
    }

    /// A request refused 429; `scope` says which limit.
    pub fn ratelimited(&self, scope: &'static str) {
        self.ratelimited.get_or_create(&ScopeLabels { scope }).inc();
    }

    /// Whether the shared rate-limit store is in use and answering.
    pub fn ratelimit_store_up(&self, up: bool) {
        self.ratelimit_store_up.set(i64::from(up));
    }

    /// A lease from the shared rate-limit store failed.
    pub fn ratelimit_store_error(&self) {
        self.ratelimit_store_errors.inc();
    }

    /// Live replicas, from the heartbeat.
    pub fn live_replicas(&self, n: u32) {
        self.live_replicas.set(i64::from(n));
    }

    /// One plugin invocation; `outcome` is [`crate::plugin::Outcome::kind`].
    pub fn plugin_invocation(&self, plugin: &str, version: &str, outcome: &'static str, elapsed: Duration) {
        let labels = PluginLabels { plugin: plugin.to_string(), version: version.to_string(), outcome };
        self.plugin_invocations.get_or_create(&labels).inc();
        self.plugin_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The queue's depth by status, summed over orgs; statuses seen before and absent now
    /// drop to 0 rather than keep their last value.
    pub fn job_depth(&self, rows: impl IntoIterator<Item = (String, i64)>) {
        let mut seen = std::collections::HashMap::<String, i64>::new();
        for (status, count) in rows {
            *seen.entry(status).or_default() += count;
        }
        for status in ["pending", "processing", "dead"] {
            seen.entry(status.to_string()).or_default();
        }
        for (status, count) in seen {
            self.jobs.get_or_create(&StatusLabels { status }).set(count);
        }
    }

    /// A finished job attempt: `done`, `retry`, `dead` or `lease_lost`.
    pub fn job_attempt(&self, kind: &str, outcome: &'static str) {
        self.job_attempts.get_or_create(&AttemptLabels { kind: kind.to_string(), outcome }).inc();
    }

    /// A webhook delivery to a known endpoint: `accepted`, `duplicate`, `invalid_signature`,
    /// `stale`, or `invalid` (a body that does not identify the event).
    pub fn webhook_delivery(&self, provider: &str, outcome: &'static str) {
        self.webhook_deliveries.get_or_create(&DeliveryLabels { provider: provider.to_string(), outcome }).inc();
    }

    /// A registry version swapped in on this replica (`swapped`), or one that failed to load
    /// (`failed`; the running version stays).
    pub fn plugin_activation(&self, plugin: &str, outcome: &'static str) {
        self.plugin_activations.get_or_create(&ActivationLabels { plugin: plugin.to_string(), outcome }).inc();
    }

    /// A pool whose connections are reported as `gateway_db_pool_connections{pool=name}`.
    pub fn watch_pool(&self, name: &'static str, pool: PgPool) {
        let mut pools = self.pools.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|(n, _)| *n != name);
        pools.push((name, pool));
    }

    /// The text exposition of every metric, pools read now.
    pub fn render(&self) -> String {
        for (pool, p) in self.pools.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let (size, idle) = (i64::from(p.size()), p.num_idle() as i64);
            self.pool_connections.get_or_create(&PoolLabels { pool, state: "idle" }).set(idle);
            self.pool_connections.get_or_create(&PoolLabels { pool, state: "in_use" }).set((size - idle).max(0));
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Decrements `http_server_active_requests` when the request ends, even if its future is
/// dropped (the client went away).
pub struct ActiveRequest<'a>(&'a Gauge);

impl Drop for ActiveRequest<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Semconv: the standard methods by name, anything else as `_OTHER` (a client choosing
/// methods must not choose series).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// Scrapes at once at most; more wait in the listen backlog.
const MAX_SCRAPES: usize = 8;
/// A scrape connection's whole life: a stuck client cannot hold a slot.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `GET /metrics` (anything else 404) until the task is aborted.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else { return };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&metrics, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

fn answer(metrics: &Metrics, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut resp = if req.uri().path() == "/metrics" && (req.method() == Method::GET || req.method() == Method::HEAD) {
        let mut r = Response::new(Full::new(Bytes::from(metrics.render())));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(prometheus_client::encoding::prometheus_text::CONTENT_TYPE),
        );
        r
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    };
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines().find(|l| l.starts_with(prefix))
    }

    #[test]
    fn request_series_use_the_route_id_and_semconv_buckets() {
        let m = Metrics::new(false);
        let route: Arc<str> = Arc::from("echo");
        m.request(&Method::POST, Some(&route), 200, Some(Uuid::nil()), Duration::from_millis(3));
        m.request(&Method::from_bytes(b"BREW").unwrap(), None, 404, None, Duration::from_millis(30));
        let text = m.render();
        let count = r#"http_server_request_duration_seconds_count{http_request_method="POST",http_route="echo",http_response_status_code="200"} 1"#;
        assert!(text.contains(count), "{text}");
        let labels = r#"http_request_method="POST",http_route="echo",http_response_status_code="200""#;
        let buckets: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with(&format!("http_server_request_duration_seconds_bucket{{{labels},le=")))
            .map(|l| l.split("le=\"").nth(1).and_then(|v| v.split('"').next()).unwrap())
            .collect();
        let want = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10", "+Inf"];
        assert_eq!(buckets, want, "{text}");
        let other = r#"http_server_request_duration_seconds_count{http_request_method="_OTHER",http_route="-",http_response_status_code="404"} 1"#;
        assert!(text.contains(other), "{text}");
        assert!(!text.contains("gateway_org_requests"), "per-org counting is off by default: {text}");
    }

    #[test]
    fn per_org_counts_only_when_asked() {
        let m = Metrics::new(true);
        let org = Uuid::new_v4();
        m.request(&Method::GET, None, 429, Some(org), Duration::ZERO);
        m.request(&Method::GET, None, 200, None, Duration::ZERO);
        let text = m.render();
        let want = format!(r#"gateway_org_requests_total{{org="{org}",status_class="4xx"}} 1"#);
        assert!(text.contains(&want), "{text}");
        assert_eq!(text.matches("gateway_org_requests_total{").count(), 1, "{text}");
    }

    #[test]
    fn the_active_gauge_follows_guards() {
        let m = Metrics::new(false);
        let a = m.active_request();
        let b = m.active_request();
        assert_eq!(line(&m.render(), "http_server_active_requests "), Some("http_server_active_requests 2"));
        drop((a, b));
        assert_eq!(line(&m.render(), "http_server_active_requests "), Some("http_server_active_requests 0"));
    }

    #[test]
    fn job_depth_sums_orgs_and_zeroes_statuses_that_emptied() {
        let m = Metrics::new(false);
        m.job_depth([("pending".to_string(), 2), ("pending".to_string(), 3), ("dead".to_string(), 1)]);
        let text = m.render();
        assert!(text.contains(r#"gateway_jobs{status="pending"} 5"#), "{text}");
        assert!(text.contains(r#"gateway_jobs{status="dead"} 1"#), "{text}");
        m.job_depth([]);
        let text = m.render();
        assert!(text.contains(r#"gateway_jobs{status="pending"} 0"#), "{text}");
        assert!(text.contains(r#"gateway_jobs{status="dead"} 0"#), "{text}");
    }

    #[test]
    fn counters_carry_their_labels_and_total_suffix() {
        let m = Metrics::new(false);
        m.ratelimited("org");
        m.plugin_invocation("echo", "3", "cpu_deadline", Duration::from_millis(12));
        m.job_attempt("webhook", "retry");
        m.webhook_delivery("smartlead", "invalid_signature");
        m.plugin_activation("echo", "swapped");
        let text = m.render();
        for want in [
            r#"gateway_ratelimited_total{scope="org"} 1"#,
            r#"gateway_plugin_invocations_total{plugin="echo",version="3",outcome="cpu_deadline"} 1"#,
            r#"gateway_plugin_duration_seconds_count{plugin="echo",version="3",outcome="cpu_deadline"} 1"#,
            r#"gateway_job_attempts_total{kind="webhook",outcome="retry"} 1"#,
            r#"gateway_webhook_deliveries_total{provider="smartlead",outcome="invalid_signature"} 1"#,
            r#"gateway_plugin_activations_total{plugin="echo",outcome="swapped"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want}: {text}");
        }
    }
}
