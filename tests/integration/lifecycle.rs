//! Start, CLI, shutdown and database outages: the process-level promises.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{assert_error, gateway_command, tempdir, Gateway, GatewayOptions, TestDb};

/// Options for a gateway in embedded mode: no DATABASE_URL, no configured bootstrap token.
fn embedded_options() -> GatewayOptions {
    GatewayOptions {
        database_url: None,
        data_dir: tempdir("gwe"),
        policies: crate::harness::repo_policies(),
        bootstrap_token: None,
        extra_env: Vec::new(),
        extra_args: Vec::new(),
    }
}

fn cli(opts: &GatewayOptions, args: &[&str]) -> Value {
    let out = gateway_command(opts).args(args).stdin(Stdio::null()).output().unwrap();
    assert!(out.status.success(), "gateway {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test]
async fn embedded_mode_bootstraps_a_token_and_the_cli_shares_the_running_database() {
    let opts = embedded_options();
    let cli_opts = GatewayOptions { bootstrap_token: None, ..embedded_options() };
    let cli_opts = GatewayOptions { data_dir: opts.data_dir.clone(), ..cli_opts };
    let mut gw = Gateway::start_with(opts).await;

    // A random super-admin token, printed once and kept in a 0600 file.
    let file = gw.data_dir.join("bootstrap-token");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(gw.super_token.starts_with("gw_"));
    assert_eq!(gw.stdout().matches(&gw.super_token).count(), 1);
    assert!(!gw.stderr().contains(&gw.super_token), "token in the log");
    assert!(gw.data_dir.join("pg/PG_VERSION").exists());

    // The CLI attaches to the cluster the server runs, and the server sees its writes.
    let org = cli(&cli_opts, &["org", "create", "--name", "Cli Org", "--json"]);
    let org_id = org["org_id"].as_str().unwrap().to_string();
    assert_eq!(org["plan"], "standard");
    let tok = cli(&cli_opts, &["token", "create", "--org", &org_id, "--role", "admin", "--email", "cli@org.test", "--json"]);
    let r = gw.req("GET", "/v1/whoami").token(tok["token"].as_str().unwrap()).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["org_id"], org_id.as_str());
    let set = cli(&cli_opts, &["org", "set-plan", &org_id, "unmetered", "--json"]);
    assert_eq!(set["plan"], "unmetered");

    // Graceful stop takes the embedded cluster down with it.
    let status = gw.terminate().await;
    assert!(status.success(), "{status}");
    assert!(!gw.data_dir.join("pg/postmaster.pid").exists(), "cluster still running");

    // A restart reuses the cluster and does not mint another bootstrap token.
    let opts2 = GatewayOptions { data_dir: gw.data_dir.clone(), ..embedded_options() };
    let gw2 = Gateway::start_with(opts2).await;
    assert!(!gw2.stdout().contains("bootstrap super-admin token"));
    let r = gw2.req("GET", "/v1/whoami").token(tok["token"].as_str().unwrap()).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn database_down_is_503_unavailable_not_a_hang() {
    // A database of its own that the test can take away: the gateway's embedded cluster would
    // be restarted by the gateway (faults.rs tests that), an external one is not.
    let dir = tempdir("gwx");
    let cluster = gateway::embedded::Cluster::start(&dir, gateway::embedded::ClusterOptions { unsafe_no_fsync: true })
        .await
        .unwrap();
    let opts = GatewayOptions {
        database_url: Some(format!("postgres://postgres@localhost:5432/postgres?host={}", cluster.pgdata().display())),
        ..embedded_options()
    };
    let mut gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    cluster.stop().await;
    let started = Instant::now();
    let r = gw.req("POST", "/v1/businesses").token(&admin).json(&json!({"name": "x"})).send().await;
    assert_error(&r, 503, "UNAVAILABLE");
    // Driver text never reaches the client.
    assert_eq!(r.json["error"], "service temporarily unavailable");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Readiness follows within the prober's bound (a ping every 0.5 s).
    let probed = Instant::now();
    loop {
        let r = gw.req("GET", "/readyz").send().await;
        if r.status == 503 {
            assert_error(&r, 503, "UNAVAILABLE");
            break;
        }
        assert!(probed.elapsed() < Duration::from_secs(3), "still ready: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A token never seen before needs the database too.
    let r = gw.req("GET", "/v1/whoami").token("gw_never_seen_before").send().await;
    assert_error(&r, 503, "UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    // An external database that is down is not the gateway's own health.
    assert_eq!(gw.req("GET", "/healthz").send().await.status, 200);
    let status = gw.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn graceful_shutdown_finishes_every_in_flight_request() {
    let db = TestDb::new().await;
    let mut gw = Gateway::start_with(GatewayOptions::new(&db)).await;
    let org = gw.create_org("Acme", None).await;
    let (admin, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    let pool = db.owner_pool().await;

    // Hold the table so the requests are provably in flight inside the database.
    let mut lock = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE businesses IN ACCESS EXCLUSIVE MODE").execute(&mut *lock).await.unwrap();
    let gw_ref = &gw;
    let admin_ref = &admin;
    let requests = futures::future::join_all((0..5).map(|i| async move {
        gw_ref.req("POST", "/v1/businesses").token(admin_ref).json(&json!({"name": format!("b{i}")})).send().await
    }));
    let orchestrate = async {
        wait_until(|| async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'gateway' AND wait_event_type = 'Lock'",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            n == 5
        })
        .await;
        unsafe { libc::kill(gw_ref.pid(), libc::SIGTERM) };
        let stderr_path = gw_ref.data_dir.join("stderr.log");
        wait_until(|| async { std::fs::read_to_string(&stderr_path).unwrap_or_default().contains("draining") }).await;
        // New connections are refused once draining has begun.
        assert!(tokio::net::TcpStream::connect(&gw_ref.addr).await.is_err());
        lock.commit().await.unwrap();
    };
    let (responses, ()) = tokio::join!(requests, orchestrate);
    for r in &responses {
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let status = gw.terminate().await;
    assert!(status.success(), "{status}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM businesses").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 5);
}

#[tokio::test]
async fn an_invalid_policy_stops_start_up_naming_file_and_line() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    let dir = tempdir("gwp");
    std::fs::write(dir.join("plans.toml"), "[plans.standard]\ndefault = true\n").unwrap();
    std::fs::write(
        dir.join("bad.toml"),
        "[[route]]\nid = \"x\"\nmethod = \"GET\"\npath = \"/x\"\ntarget = \"native:whoami\"\nroles = [\"member\"]\nbody_limit = \"12 parsecs\"\n",
    )
    .unwrap();
    opts.policies = dir.clone();
    let out = gateway_command(&opts).arg("serve").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7") && err.contains("parsecs"), "{err}");
}

/// Polls `cond` until it holds (bounded): waiting on a condition, not a guess at a duration.
async fn wait_until<F, Fut>(mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "condition not reached in 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
