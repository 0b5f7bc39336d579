//! An author outside this repository, end to end (issue #18's "done when"): in a temporary
//! directory, `gateway plugin new`, `cargo build --release --target wasm32-wasip2`, `gateway
//! plugin check` with fixtures that read seeded rows from a throwaway database, push,
//! activate, call it through a gateway, push a version whose manifest needs a table its routes
//! do not grant (activation refused, naming the grant), and roll back.
//!
//! The crate's registry dependencies are the versions `plugins/Cargo.lock` pins (the template
//! carries that lock), so they come from the same local cache as the repository's plugins. The
//! target dir (`plugins/target/author-loop`) is kept between runs: only the new crate and its
//! SDK compile again.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{Gateway, GatewayOptions, TestDb};

fn gateway_cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
}

/// Runs `cmd`, failing the test with its stderr when it fails; its stdout as JSON when it is.
fn run_json(mut cmd: Command) -> Value {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// `cargo build --release --target wasm32-wasip2` in `dir`, as an author would.
fn build(dir: &Path) -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/author-loop");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir).args(["build", "--release", "--target", "wasm32-wasip2"]).env("CARGO_TARGET_DIR", &target);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "cargo build: {}", String::from_utf8_lossy(&out.stderr));
    target.join("wasm32-wasip2/release/notes.wasm")
}

const POLICY: &str = r#"
[plugins.notes]
file = "@FILE@"
version = "0.1.0"

[[route]]
id = "notes_contacts"
method = "GET"
path = "/v1/notes/contacts"
target = "plugin:notes"
roles = ["member", "admin"]

[route.grants]
tables = { crm_contacts = "read" }

[[route]]
id = "notes_contact"
method = "GET"
path = "/v1/notes/contacts/{id}"
target = "plugin:notes"
roles = ["member", "admin"]

[route.grants]
tables = { crm_contacts = "read" }
"#;

#[tokio::test]
async fn an_author_outside_the_repository_builds_checks_pushes_activates_and_rolls_back() {
    // 1. A new crate, outside the repository.
    let home = crate::harness::tempdir("gwa");
    let dir = home.join("notes");
    let out = gateway_cli().args(["plugin", "new", "notes", "--dir"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for f in ["Cargo.toml", "Cargo.lock", "plugin.toml", "fixtures.json", "README.md", "sdk/wit/plugin.wit", ".cargo/config.toml"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let wit = gateway_cli().args(["plugin", "wit"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&wit.stdout), std::fs::read_to_string(dir.join("sdk/wit/plugin.wit")).unwrap());

    // 2. It builds on its own.
    let wasm = build(&dir);
    let (manifest, fixtures) = (dir.join("plugin.toml"), dir.join("fixtures.json"));

    // 3. `check` runs every fixture; the database ones read rows seeded in a throwaway database.
    let mut check = gateway_cli();
    check.args(["plugin", "check"]).arg(&wasm).arg("--manifest").arg(&manifest).arg("--fixtures").arg(&fixtures);
    let report = run_json(check);
    assert_eq!(report["fixtures_passed"], true, "{report}");
    assert_eq!(report["manifest"], "0.1.0", "{report}");
    let results = report["results"].as_array().unwrap();
    let seeded = results.iter().find(|r| r["name"] == "lists the org's named contacts by name").unwrap();
    assert_eq!((&seeded["database"], &seeded["outcome"]), (&json!(true), &json!("passed")), "{report}");
    assert!(results.iter().all(|r| r["outcome"] == "passed"), "{report}");

    // A fixture that expects rows the seed does not hold fails, showing expected and actual.
    let mut broken: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&fixtures).unwrap()).unwrap();
    broken.retain(|f| f["name"] == "lists the org's named contacts by name");
    broken[0]["expect"]["body"]["contacts"][1]["name"] = json!("Zed");
    let broken_path = home.join("broken.json");
    std::fs::write(&broken_path, serde_json::to_vec(&broken).unwrap()).unwrap();
    let out = gateway_cli().args(["plugin", "check"]).arg(&wasm).arg("--manifest").arg(&manifest).arg("--fixtures").arg(&broken_path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("expected \"Zed\", got \"Bea\""), "{err}");

    // 4. A gateway whose policy serves it from the build output (an absolute path).
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = crate::harness::policies_with("zz-notes.toml", &POLICY.replace("@FILE@", wasm.to_str().unwrap()));
    let gw = Gateway::start_with(opts).await;
    let org = gw.create_org("Acme", Some("unmetered")).await;
    let (t, _, _) = gw.create_token(&org, "member", "m@acme.test").await;
    let other = gw.create_org("Other", Some("unmetered")).await;
    let pool = db.owner_pool().await;
    for (tenant, name) in [(&org, "Al"), (&org, "Bea"), (&other, "Olga")] {
        sqlx::query("INSERT INTO crm_contacts (tenant_id, name) VALUES ($1::uuid, $2)").bind(tenant).bind(name).execute(&pool).await.unwrap();
    }
    let url = format!("http://{}", gw.addr);
    let cli = |args: &[&str]| {
        let mut cmd = gateway_cli();
        cmd.args(["plugin"]).args(args).args(["--url", &url, "--token", &gw.super_token, "--json"]);
        cmd
    };
    let names = |v: &Value| v["contacts"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let active = |list: &Value| list["plugins"].as_array().unwrap().iter().find(|p| p["active"] == true).map(|p| p["version"].clone());

    // 5. Push (the upload runs the plain fixtures and skips the database ones), activate, call.
    let push = |manifest: &Path| {
        let mut c = cli(&["push", wasm.to_str().unwrap(), "--name", "notes"]);
        c.arg("--manifest").arg(manifest).arg("--fixtures").arg(&fixtures);
        run_json(c)["version"].as_i64().unwrap()
    };
    assert_eq!(push(&manifest), 1);
    run_json(cli(&["activate", "notes", "1"]));
    let r = gw.req("GET", "/v1/notes/contacts").token(&t).send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(names(&r.json), ["Al", "Bea"], "only the caller's org: {}", r.text);
    let id = r.json["contacts"][0]["id"].as_str().unwrap().to_string();
    let r = gw.req("GET", &format!("/v1/notes/contacts/{id}")).token(&t).send().await;
    assert_eq!((r.status, &r.json["name"]), (200, &json!("Al")), "{}", r.text);

    // 6. A second version that needs only what the routes grant activates.
    let v2 = home.join("v2.toml");
    std::fs::write(&v2, std::fs::read_to_string(&manifest).unwrap().replace("version = \"0.1.0\"", "version = \"0.2.0\"")).unwrap();
    assert_eq!(push(&v2), 2);
    run_json(cli(&["activate", "notes", "2"]));
    assert_eq!(active(&run_json(cli(&["list"]))), Some(json!(2)));

    // 7. A third that needs a table the routes do not grant uploads, but is not activated:
    //    422 PLUGIN_GRANTS_MISSING naming the grant, and version 2 stays.
    let v3 = home.join("v3.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("version = \"0.1.0\"", "version = \"0.3.0\"").replace(
        "tables = { crm_contacts = \"read\" }",
        "tables = { crm_contacts = \"read\", crm_events = \"write\" }",
    );
    std::fs::write(&v3, text).unwrap();
    assert_eq!(push(&v3), 3);
    let r = gw.req("POST", "/v1/admin/plugins/notes/activate").token(&gw.super_token).json(&json!({ "version": 3 })).send().await;
    crate::harness::assert_error(&r, 422, "PLUGIN_GRANTS_MISSING");
    let missing = r.json["missing"].as_array().unwrap_or_else(|| panic!("{}", r.text));
    assert!(
        missing.iter().any(|m| m["kind"] == "table" && m["name"] == "crm_events" && m["access"] == "write"),
        "{}",
        r.text
    );
    assert_eq!(active(&run_json(cli(&["list"]))), Some(json!(2)));
    assert_eq!(gw.req("GET", "/v1/notes/contacts").token(&t).send().await.status, 200);

    // 8. Roll back to version 1; it still answers.
    run_json(cli(&["rollback", "notes"]));
    assert_eq!(active(&run_json(cli(&["list"]))), Some(json!(1)));
    let r = gw.req("GET", "/v1/notes/contacts").token(&t).send().await;
    assert_eq!((r.status, names(&r.json)), (200, vec!["Al".to_string(), "Bea".to_string()]), "{}", r.text);
}
