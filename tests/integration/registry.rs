//! The plugin registry: upload, activate, roll back, audit; swaps under load; replicas.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{assert_error, plugin_dir, Gateway, GatewayOptions, TestDb};

fn wasm(file: &str) -> Vec<u8> {
    std::fs::read(plugin_dir().join(file)).unwrap()
}

async fn upload(gw: &Gateway, name: &str, bytes: Vec<u8>, activate: bool) -> crate::harness::Resp {
    let q = if activate { "?activate=true" } else { "" };
    gw.req("PUT", &format!("/v1/admin/plugins/{name}{q}"))
        .token(&gw.super_token)
        .header("content-type", "application/wasm")
        .body(bytes)
        .send()
        .await
}

async fn activate(gw: &Gateway, name: &str, version: i64) -> crate::harness::Resp {
    gw.req("POST", &format!("/v1/admin/plugins/{name}/activate"))
        .token(&gw.super_token)
        .json(&json!({ "version": version }))
        .send()
        .await
}

async fn echo_version(gw: &Gateway, token: &str) -> String {
    let r = gw.req("POST", "/v1/echo").token(token).json(&json!({})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    registry_number(r.header("x-plugin-version").unwrap())
}

/// The registry number of a served version: `0.1.0+r2` (a version whose component carries a
/// manifest, as echo's does) and `2` (one without) are both version 2; a policy file's
/// version (`0.1.0`) stays as it is.
fn registry_number(served: &str) -> String {
    served.rsplit_once("+r").map_or(served, |(_, n)| n).to_string()
}

#[tokio::test]
async fn upload_activate_rollback_list_and_audit() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "admin", "a@acme.test").await;
    assert_eq!(echo_version(&gw, &t).await, "0.1.0");

    // Refused uploads change nothing.
    assert_error(&upload(&gw, "echo", b"not wasm".to_vec(), false).await, 422, "PLUGIN_REJECTED");
    assert_error(&upload(&gw, "echo", b"\0asm\x01\0\0\0".to_vec(), false).await, 422, "PLUGIN_REJECTED");
    assert_error(&upload(&gw, "Bad_Name", wasm("echo.wasm"), false).await, 400, "VALIDATION_FAILED");
    let r = gw.req("PUT", "/v1/admin/plugins/echo").token(&t).body(wasm("echo.wasm")).send().await;
    assert_error(&r, 403, "FORBIDDEN");

    let r = upload(&gw, "echo", wasm("echo.wasm"), false).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["sha256"].as_str().unwrap().len(), 64);
    // Uploading does not activate.
    assert_eq!(echo_version(&gw, &t).await, "0.1.0");
    let r = activate(&gw, "echo", 1).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(echo_version(&gw, &t).await, "1");

    // Version 2 is another component (the probe) under the same name.
    let r = upload(&gw, "echo", wasm("contract_probe.wasm"), true).await;
    assert_eq!(r.json["version"], 2, "{}", r.text);
    let r = gw.req("POST", "/v1/echo").token(&t).json(&json!({})).send().await;
    assert_eq!(r.header("x-plugin-version").map(registry_number).as_deref(), Some("2"));
    assert_eq!(r.json, json!({"results": []}));

    let r = gw.req("POST", "/v1/admin/plugins/echo/rollback").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((r.json["from"].as_i64(), r.json["to"].as_i64()), (Some(2), Some(1)));
    assert_eq!(echo_version(&gw, &t).await, "1");

    assert_error(&activate(&gw, "echo", 9).await, 404, "NOT_FOUND");
    let r = gw.req("POST", "/v1/admin/plugins/nothing/rollback").token(&gw.super_token).send().await;
    assert_error(&r, 404, "NOT_FOUND");

    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    let list = r.json["plugins"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["active"], true);
    assert_eq!(list[1]["active"], false);
    assert!(list[0]["uploaded_by"].is_string() && list[0]["uploaded_at"].is_string());

    let pool = db.owner_pool().await;
    let audit: Vec<(String, Option<i32>, Option<i32>)> =
        sqlx::query_as("SELECT action, from_version, to_version FROM plugin_audit ORDER BY id").fetch_all(&pool).await.unwrap();
    let expected: Vec<(String, Option<i32>, Option<i32>)> = vec![
        ("upload".into(), None, Some(1)),
        ("activate".into(), None, Some(1)),
        ("upload".into(), None, Some(2)),
        ("activate".into(), Some(1), Some(2)),
        ("rollback".into(), Some(2), Some(1)),
    ];
    assert_eq!(audit, expected);
    // This replica swapped three times: version 1, version 2, back to version 1.
    let swaps = |t: &str| crate::metrics::value(t, "gateway_plugin_activations_total", &[("plugin", "echo"), ("outcome", "swapped")]);
    let text = crate::metrics::scrape_until(&gw, "three swaps", |t| swaps(t) == Some(3.0)).await;
    assert_eq!(crate::metrics::value(&text, "gateway_plugin_activations_total", &[("outcome", "failed")]), None, "{text}");
}

#[tokio::test]
async fn shipped_contract_fixtures_must_pass_before_an_upload_is_stored() {
    use gateway::registry::fixtures;
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    // echo.wasm ships passing fixtures (embedded by `cargo xtask plugins`).
    assert!(fixtures::extract(&wasm("echo.wasm")).unwrap().is_some_and(|f| f.len() >= 3));
    let r = upload(&gw, "echo", wasm("echo.wasm"), false).await;
    assert_eq!(r.status, 201, "{}", r.text);

    // The same component with one fixture that cannot hold is refused, naming the fixture.
    let failing = br#"[{"name": "status is wrong on purpose", "request": {"body": {"a": 1}}, "expect": {"status": 201}}]"#;
    let r = upload(&gw, "echo", fixtures::embed(&wasm("echo.wasm"), failing).unwrap(), true).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    assert!(r.text.contains("status is wrong on purpose") && r.text.contains("expected status 201, got 200"), "{}", r.text);
    // Fixtures run with no grants: a database call is refused before it touches anything.
    let probe = br#"[{"name": "no grants in fixtures",
                      "request": {"body": {"steps": [{"select": {"table": "probe_items", "columns": ["name"]}}]}},
                      "expect": {"status": 200, "body": {"results": [{"err": "not-granted"}]}}}]"#;
    let r = upload(&gw, "crm-track", fixtures::embed(&wasm("contract_probe.wasm"), probe).unwrap(), false).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Unreadable fixtures are a refusal, not an absence.
    let mut broken = fixtures::embed(&wasm("echo.wasm"), b"[]").unwrap();
    *broken.last_mut().unwrap() = b'{';
    assert_error(&upload(&gw, "echo", broken, false).await, 422, "PLUGIN_REJECTED");

    // Nothing was stored by the refusals.
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(r.json["plugins"].as_array().unwrap().len(), 2, "{}", r.text);
}

#[tokio::test]
async fn twenty_swaps_under_constant_load_lose_nothing() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    assert_eq!(upload(&gw, "echo", wasm("echo.wasm"), true).await.status, 201);
    assert_eq!(upload(&gw, "echo", wasm("contract_probe.wasm"), false).await.status, 201);

    let stop = AtomicBool::new(false);
    let served = std::sync::atomic::AtomicU32::new(0);
    let (gw, t, stop, served) = (&gw, &t, &stop, &served);
    let load = futures::future::join_all((0..32).map(|_| async move {
        let (mut ok, mut bad) = (0u32, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let r = gw.req("POST", "/v1/echo").token(t).json(&json!({"n": 1})).send().await;
            served.fetch_add(1, Ordering::Relaxed);
            if r.status == 200 {
                ok += 1;
            } else {
                bad.push(r.text);
            }
        }
        (ok, bad)
    }));
    let swaps = async move {
        for i in 0..20 {
            // Every swap happens under load: wait until the load has moved on since the last
            // one (on a busy machine the swaps could otherwise outrun it).
            let seen = served.load(Ordering::Relaxed);
            while served.load(Ordering::Relaxed) < seen + 8 {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            let (want, r) = if i % 2 == 0 {
                ("2", activate(gw, "echo", 2).await)
            } else {
                ("1", gw.req("POST", "/v1/admin/plugins/echo/rollback").token(&gw.super_token).send().await)
            };
            assert_eq!(r.status, 200, "{}", r.text);
            // The very next request sees the new version.
            let r = gw.req("POST", "/v1/echo").token(t).json(&json!({})).send().await;
            assert_eq!(r.header("x-plugin-version").map(registry_number).as_deref(), Some(want), "swap {i}");
        }
        stop.store(true, Ordering::Relaxed);
    };
    let (results, ()) = tokio::join!(load, swaps);
    let ok: u32 = results.iter().map(|r| r.0).sum();
    let bad: Vec<&String> = results.iter().flat_map(|r| &r.1).collect();
    assert!(bad.is_empty(), "{} non-2xx during swaps, e.g. {}", bad.len(), bad[0]);
    assert!(ok > 100, "load barely ran: {ok}");
}

#[tokio::test]
async fn replicas_follow_an_activation_within_a_second_and_late_starters_load_it() {
    let db = TestDb::new().await;
    let a = Gateway::start(&db).await;
    let mut opts = GatewayOptions::new(&db);
    opts.bootstrap_token = Some(a.super_token.clone());
    let b = Gateway::start_with(opts).await;
    let org = a.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = a.create_token(&org, "member", "m@acme.test").await;
    assert_eq!(echo_version(&b, &t).await, "0.1.0");

    assert_eq!(upload(&a, "echo", wasm("echo.wasm"), false).await.status, 201);
    let r = activate(&a, "echo", 1).await;
    assert_eq!(r.status, 200);
    let activated = Instant::now();
    loop {
        if echo_version(&b, &t).await == "1" {
            break;
        }
        assert!(activated.elapsed() < Duration::from_secs(1), "replica b still on the old version after 1 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut opts = GatewayOptions::new(&db);
    opts.bootstrap_token = Some(a.super_token.clone());
    let c = Gateway::start_with(opts).await;
    assert_eq!(echo_version(&c, &t).await, "1");
}

#[tokio::test]
async fn the_cli_ships_and_takes_back_versions_through_the_api() {
    let db = TestDb::new().await;
    let opts = GatewayOptions::new(&db);
    let cli_opts = GatewayOptions { data_dir: opts.data_dir.clone(), ..GatewayOptions::new(&db) };
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    let url = format!("http://{}", gw.addr);
    let cli = |args: &[&str]| {
        let mut cmd = crate::harness::gateway_command(&cli_opts);
        cmd.arg("plugin").args(args).args(["--url", &url, "--token", &gw.super_token, "--json"]);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let echo = plugin_dir().join("echo.wasm");
    let probe = plugin_dir().join("contract_probe.wasm");
    assert_eq!(cli(&["push", echo.to_str().unwrap(), "--name", "echo", "--activate"])["version"], 1);
    assert_eq!(cli(&["push", probe.to_str().unwrap(), "--name", "echo"])["version"], 2);
    assert_eq!(echo_version(&gw, &t).await, "1");
    assert_eq!(cli(&["activate", "echo", "2"])["to"], 2);
    assert_eq!(echo_version(&gw, &t).await, "2");
    assert_eq!(cli(&["rollback", "echo"])["to"], 1);
    assert_eq!(echo_version(&gw, &t).await, "1");
    assert_eq!(cli(&["list"])["plugins"].as_array().unwrap().len(), 2);
    // Errors come back with the API's code and a non-zero exit.
    let out = crate::harness::gateway_command(&cli_opts)
        .args(["plugin", "activate", "echo", "7", "--url", &url, "--token", &gw.super_token])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_FOUND"));
}

#[tokio::test]
async fn compiled_code_is_cached_on_disk_across_restarts() {
    let db = TestDb::new().await;
    let opts = GatewayOptions::new(&db);
    let dir = opts.data_dir.clone();
    let mut gw = Gateway::start_with(opts).await;
    gw.terminate().await;
    assert!(gw.stderr().contains("\"from_cache\":false"));
    let cached = std::fs::read_dir(dir.join("compiled")).unwrap().filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm")).count();
    assert!(cached >= 2, "{cached} cached components");
    let mut again = Gateway::start_with(GatewayOptions { data_dir: dir, ..GatewayOptions::new(&db) }).await;
    again.terminate().await;
    let log = again.stderr();
    assert!(log.contains("\"from_cache\":true") && !log.contains("\"from_cache\":false"), "{log}");
}

#[tokio::test]
async fn watch_mode_reloads_changed_policies_and_refuses_invalid_ones() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    let dir = crate::harness::policies_with("zz-extra.toml", "");
    opts.policies = dir.clone();
    opts.extra_args.push("--watch".into());
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    assert_error(&gw.req("POST", "/v1/echo-again").token(&t).json(&json!({})).send().await, 404, "NOT_FOUND");

    std::fs::write(
        dir.join("zz-extra.toml"),
        "[[route]]\nid = \"echo.again\"\nmethod = \"POST\"\npath = \"/v1/echo-again\"\ntarget = \"plugin:echo\"\nroles = [\"member\"]\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.req("POST", "/v1/echo-again").token(&t).json(&json!({})).send().await;
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "new route never appeared: {}", r.text);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An invalid change is refused and the running set stays.
    std::fs::write(dir.join("zz-extra.toml"), "[[route]]\nid = \"broken\"\nmethod = \"NOPE NOPE\"\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.stderr().contains("reload refused") {
        assert!(Instant::now() < deadline, "invalid policy not reported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.req("POST", "/v1/echo-again").token(&t).json(&json!({})).send().await.status, 200);
}

#[test]
fn plugin_check_runs_a_component_locally_and_rejects_non_components() {
    let bin = env!("CARGO_BIN_EXE_gateway");
    // echo ships contract fixtures (plugins/echo/fixtures.json): check runs them.
    let out = std::process::Command::new(bin).args(["plugin", "check"]).arg(plugin_dir().join("echo.wasm")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["fixtures_passed"], true, "{v}");
    assert!(v["fixtures"].as_u64().unwrap() >= 3, "{v}");
    // A component without fixtures answers one request.
    let out = std::process::Command::new(bin)
        .args(["plugin", "check"])
        .arg(plugin_dir().join("contract_probe.wasm"))
        .args(["--body", r#"{"steps":[]}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], 200, "{v}");
    // The probe asked to loop is stopped at the default CPU deadline.
    let out = std::process::Command::new(bin)
        .args(["plugin", "check"])
        .arg(plugin_dir().join("contract_probe.wasm"))
        .args(["--body", r#"{"steps":[],"then":"loop"}"#])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["body"]["error_code"], "PLUGIN_TIMEOUT", "{v}");
    let dir = crate::harness::tempdir("gwk");
    std::fs::write(dir.join("x.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = std::process::Command::new(bin).args(["plugin", "check"]).arg(dir.join("x.wasm")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("rejected"));
}

/// The compiled-code cache's files.
fn cached_files(gw: &Gateway) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(gw.data_dir.join("compiled"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

async fn versions(gw: &Gateway) -> usize {
    let r = gw.req("GET", "/v1/admin/plugins").token(&gw.super_token).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.json["plugins"].as_array().unwrap().len()
}

/// Top-level sections of a component: `(id, contents)`.
fn sections(bytes: &[u8]) -> Vec<(u8, &[u8])> {
    let (mut rest, mut out) = (&bytes[8..], Vec::new());
    while let Some((&id, tail)) = rest.split_first() {
        let (size, tail) = leb(tail);
        out.push((id, &tail[..size]));
        rest = &tail[size..];
    }
    out
}

fn leb(bytes: &[u8]) -> (usize, &[u8]) {
    let mut v = 0usize;
    for (i, &b) in bytes.iter().enumerate() {
        v |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (v, &bytes[i + 1..]);
        }
    }
    panic!("bad LEB128")
}

fn push_leb(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            return out.push(b);
        }
        out.push(b | 0x80);
    }
}

fn push_section(out: &mut Vec<u8>, id: u8, contents: &[u8]) {
    out.push(id);
    push_leb(out, contents.len());
    out.extend_from_slice(contents);
}

/// `component` with more core modules (each given in text), each instantiated `times` times
/// when the component is. The additions are appended, so no existing index moves; nothing
/// uses them, but an instance of the component has them.
pub fn with_core_modules(component: &[u8], modules: &[&str], times: usize) -> Vec<u8> {
    let first = sections(component).iter().filter(|(id, _)| *id == 1).count();
    let mut out = component.to_vec();
    let mut instances = Vec::new();
    push_leb(&mut instances, modules.len() * times);
    for (i, text) in modules.iter().enumerate() {
        push_section(&mut out, 1, &wat::parse_str(text).unwrap());
        for _ in 0..times {
            // instantiate module `first + i`, no arguments
            instances.push(0x00);
            push_leb(&mut instances, first + i);
            instances.push(0);
        }
    }
    push_section(&mut out, 2, &instances);
    out
}

#[test]
fn every_shipped_plugin_fits_the_resource_budget() {
    use gateway::plugin::budget::{Usage, BUDGET};
    for file in ["echo.wasm", "crm_track.wasm", "contract_probe.wasm", "hostile.wasm", "hostile_sockets.wasm", "smartlead.wasm", "heyreach.wasm"] {
        let u = Usage::of(&wasm(file)).unwrap().unwrap();
        println!("{file}: {u:?}");
        assert_eq!(u.exceeds(&BUDGET), None, "{file}");
        // Room to spare: twice what a plugin uses still fits.
        assert!(u.core_instances * 2 <= BUDGET.core_instances && u.memories * 2 <= BUDGET.memories && u.tables * 2 <= BUDGET.tables, "{file}: {u:?}");
    }
}

#[tokio::test]
async fn uploads_over_the_resource_budget_are_refused_and_leave_nothing_behind() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let before = cached_files(&gw);
    let echo = wasm("echo.wasm");
    let cases = [
        // echo has 3 core instances, 1 memory and 2 tables.
        (with_core_modules(&echo, &["(module)"], 6), "9 core module instances (at most 8)"),
        (with_core_modules(&echo, &["(module (memory 1))", "(module (memory 1))"], 1), "3 linear memories (at most 2)"),
        (with_core_modules(&echo, &["(module (table 1 funcref))"], 3), "5 tables (at most 4)"),
        // The shape of the component that once filled the shared table pool: 31 tables.
        (with_core_modules(&echo, &["(module (table 1 funcref))"], 29), "31 tables (at most 4)"),
        (with_core_modules(&echo, &["(module (table 1 funcref) (table 1 funcref))"], 1), "2 tables in one core module (at most 1)"),
    ];
    for (bytes, what) in cases {
        let r = upload(&gw, "echo", bytes, true).await;
        assert_error(&r, 422, "PLUGIN_REJECTED");
        assert!(r.text.contains("over the resource budget") && r.text.contains(what), "{what}: {}", r.text);
    }
    // Within the budget, the same kind of addition is accepted (and its compiled code kept).
    let r = upload(&gw, "echo", with_core_modules(&echo, &["(module (table 1 funcref))"], 2), false).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(versions(&gw).await, 1);
    let added: Vec<String> = cached_files(&gw).difference(&before).cloned().collect();
    assert!(added.len() == 1 && added[0].starts_with(r.json["sha256"].as_str().unwrap()), "{added:?}");
}

#[tokio::test]
async fn components_importing_wasi_sockets_are_refused_at_upload_check_and_start_up() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let before = cached_files(&gw);
    let r = upload(&gw, "echo", wasm("hostile_sockets.wasm"), true).await;
    assert_error(&r, 422, "PLUGIN_REJECTED");
    for import in ["wasi:sockets/tcp@0.2.6", "wasi:sockets/udp@0.2.6", "wasi:sockets/ip-name-lookup@0.2.6", "wasi:filesystem/types@0.2.6"] {
        assert!(r.text.contains(import), "{import} not named: {}", r.text);
    }
    assert!(r.text.contains("which plugins may not use"), "{}", r.text);
    assert!(!r.text.contains("wasi:io/") && !r.text.contains("wasi:cli/environment@"), "allowed imports named: {}", r.text);
    assert_eq!(versions(&gw).await, 0);
    assert_eq!(cached_files(&gw), before, "a refused upload left compiled code behind");
    // Its sibling with only allowed imports is accepted.
    assert_eq!(upload(&gw, "echo", wasm("hostile.wasm"), false).await.status, 201);

    // `gateway plugin check` refuses it the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["plugin", "check"])
        .arg(plugin_dir().join("hostile_sockets.wasm"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("wasi:sockets/tcp@0.2.6") && e.contains("which plugins may not use"), "{e}");

    // And so does start-up, for a plugin file a policy declares.
    let mut opts = GatewayOptions::new(&db);
    opts.policies = crate::harness::policies_with("zz-sockets.toml", "[plugins.sockets]\nfile = \"hostile_sockets.wasm\"\n");
    let out = crate::harness::gateway_command(&opts).arg("serve").output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && e.contains("zz-sockets.toml") && e.contains("wasi:sockets/tcp@0.2.6"), "{e}");
}

#[tokio::test]
async fn the_memory_cap_is_on_the_sum_of_an_instances_memories() {
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    let echo = wasm("echo.wasm");
    // `/v1/echo` caps memory at 16 MiB. echo's own memory starts at about 1 MiB; a second
    // memory of 4 MiB fits beside it, one of 15 MiB (under the cap by itself) does not.
    let r = upload(&gw, "echo", with_core_modules(&echo, &["(module (memory 64))"], 1), true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw.req("POST", "/v1/echo").token(&t).json(&json!({"n": 1})).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-plugin-version").map(registry_number).as_deref(), Some("1"));
    let r = upload(&gw, "echo", with_core_modules(&echo, &["(module (memory 240))"], 1), true).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = gw.req("POST", "/v1/echo").token(&t).json(&json!({"n": 1})).send().await;
    assert_error(&r, 502, "PLUGIN_RESOURCE_EXHAUSTED");
    // The failure is that request's only.
    assert_eq!(gw.req("GET", "/v1/whoami").token(&t).send().await.status, 200);
}

#[tokio::test]
async fn fixtures_that_spin_or_sleep_fail_their_upload_within_the_budget_and_slow_no_one() {
    use gateway::registry::fixtures;
    let db = TestDb::new().await;
    let gw = Gateway::start(&db).await;
    let other = gw.create_org("Other", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&other, "member", "m@other.test").await;
    let before = cached_files(&gw);
    let hostile = wasm("hostile.wasm");
    // 100 fixtures that each pass, spinning 150 ms: 15 s of guest CPU in all.
    let spin: Vec<serde_json::Value> = (0..100)
        .map(|i| json!({"name": format!("spin {i}"), "request": {"query": "mode=spin&ms=150"}, "expect": {"status": 200}}))
        .collect();
    let spinning = fixtures::embed(&hostile, serde_json::to_string(&spin).unwrap().as_bytes()).unwrap();
    let sleep = br#"[{"name": "sleeps a minute", "request": {"query": "mode=sleep&ms=60000"}, "expect": {"status": 200}}]"#;
    let sleeping = fixtures::embed(&hostile, sleep).unwrap();

    for (bytes, fixture) in [(spinning, "spin "), (sleeping, "sleeps a minute")] {
        let done = AtomicBool::new(false);
        let (gw, t, done) = (&gw, &t, &done);
        let started = Instant::now();
        let refused = async move {
            let r = upload(gw, "echo", bytes, false).await;
            done.store(true, Ordering::Relaxed);
            r
        };
        // Another org's requests, native and plugin, all through the upload.
        let others = async move {
            let mut took = Vec::new();
            while !done.load(Ordering::Relaxed) {
                for path in ["/v1/whoami", "/v1/echo"] {
                    let t0 = Instant::now();
                    let r = match path {
                        "/v1/echo" => gw.req("POST", path).token(t).json(&json!({"n": 1})).send().await,
                        _ => gw.req("GET", path).token(t).send().await,
                    };
                    assert_eq!(r.status, 200, "{path}: {}", r.text);
                    took.push(t0.elapsed());
                }
            }
            took
        };
        let (r, mut took) = tokio::join!(refused, others);
        let elapsed = started.elapsed();
        assert_error(&r, 422, "PLUGIN_REJECTED");
        assert!(r.text.contains(&format!("fixture `{fixture}")) && r.text.contains("time budget of 5 s"), "{}", r.text);
        // The budget ended the run (not the fixture's own 10 s sandbox timeout): the gateway
        // logs how long the fixtures ran (its log writer may lag a little behind the answer).
        let deadline = Instant::now() + Duration::from_secs(10);
        let ran = loop {
            let log = gw.stderr();
            let line = log
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["message"] == "plugin_rejected" && v["reason"].as_str().is_some_and(|m| m.contains(fixture)))
                .find_map(|v| v["elapsed_ms"].as_u64());
            if let Some(ms) = line {
                break ms;
            }
            assert!(Instant::now() < deadline, "no plugin_rejected line for {fixture}: {log}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!((5000..7000).contains(&ran), "fixtures ran {ran} ms");
        took.sort();
        let p99 = took[(took.len() * 99 / 100).min(took.len() - 1)];
        println!("{fixture}: upload refused after {elapsed:?} (fixtures {ran} ms); other org: {} requests, p50 {:?}, p99 {p99:?}, max {:?}",
            took.len(), took[took.len() / 2], took[took.len() - 1]);
        assert!(took.len() >= 20, "only {} requests during the upload", took.len());
        assert!(p99 < Duration::from_millis(500), "p99 {p99:?}");
    }
    assert_eq!(versions(&gw).await, 0);
    assert_eq!(cached_files(&gw), before, "a refused upload left compiled code behind");
}
