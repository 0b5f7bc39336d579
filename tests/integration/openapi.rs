//! `GET /v1/openapi.json`: every policy route and every error code is in the document, the
//! document is well-formed OpenAPI 3.1 whose references all resolve, and real answers of the
//! gateway (successes and errors across the route families) match the schemas it gives for
//! their route and status.

use std::path::Path;

use serde_json::{json, Value};

use gateway::error::Code;
use gateway::policy::PolicySet;

use crate::harness::{policies_with, repo_policies, Gateway, GatewayOptions, Resp, TestDb};

/// Plugins that exist only as test fixtures or samples (never in the shipped policies, like
/// `notes`, the plugin-owned storage sample): their codes are not part of the contract.
const FIXTURE_PLUGINS: &[&str] = &["contract-probe", "hostile", "hostile-sockets", "provider-stub", "notes"];

fn shipped_document() -> Value {
    let set = PolicySet::load(&repo_policies()).expect("shipped policies load");
    gateway::openapi::document(&set)
}

#[test]
fn every_shipped_route_is_in_the_document_with_its_method_and_path_parameters() {
    let set = PolicySet::load(&repo_policies()).unwrap();
    let doc = gateway::openapi::document(&set);
    let mut seen = 0;
    // Internal routes are job-invoked adapters; console routes are the operator's HTML pages.
    for r in set.routes.iter().filter(|r| !r.internal && r.auth != gateway::policy::routes::Auth::Console) {
        let (path, params) = gateway::openapi::openapi_path(&r.path);
        let op = &doc["paths"][&path][r.method.as_str().to_ascii_lowercase()];
        assert_eq!(op["operationId"], json!(&*r.id), "route {} ({} {}) is missing", r.id, r.method, r.path);
        let in_path: Vec<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        let expected: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(in_path, expected, "route {}: path parameters", r.id);
        assert_eq!(op["x-body-limit"], json!(r.body_limit), "route {}", r.id);
        assert!(op["x-roles"].is_array(), "route {}", r.id);
        seen += 1;
    }
    assert!(seen >= 45, "only {seen} routes: are the shipped policies read?");
    // Internal routes (job-invoked adapters) are not HTTP routes.
    let text = doc.to_string();
    assert!(!text.contains("/internal/"), "an internal route leaked into the document");
    assert!(!text.contains("\"/console"), "a console page leaked into the JSON API's document");
    // And nothing else: every operation is a policy route.
    let ops: usize = doc["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(ops, seen);
}

#[test]
fn roles_security_and_idempotency_are_stated() {
    let doc = shipped_document();
    let track = &doc["paths"]["/v1/crm/track"]["post"];
    assert_eq!(track["x-idempotency"], "optional");
    assert!(track["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key" && p["required"] == false));
    assert_eq!(track["security"], json!([{ "bearerAuth": [] }]));
    assert_eq!(track["x-roles"], json!(["member", "admin", "super_admin"]));
    assert_eq!(track["x-body-limit"], 64 * 1024);
    let ingress = &doc["paths"]["/v1/webhooks/{endpoint_id}"]["post"];
    assert_eq!(ingress["security"], json!([]));
    assert_eq!(ingress["x-roles"], json!([]));
    let campaigns = &doc["paths"]["/v1/campaigns"]["post"];
    assert_eq!(campaigns["x-roles"], json!(["admin", "super_admin"]));
    assert_eq!(campaigns["responses"]["429"]["$ref"], "#/components/responses/RateLimited");
    let headers = &doc["components"]["responses"]["RateLimited"]["headers"];
    for h in ["Retry-After", "RateLimit-Policy", "RateLimit"] {
        assert!(headers[h].is_object(), "{h}");
    }
    assert_eq!(doc["paths"]["/v1/openapi.json"]["get"]["security"], json!([]));
}

/// Every `needle "CODE"` literal (whitespace allowed between) in the `.rs` files under `dir`.
fn literals_after(dir: &Path, needles: &[&str], out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            literals_after(&p, needles, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).unwrap();
            for needle in needles {
                for (at, _) in text.match_indices(needle) {
                    // The literal may start on the next line.
                    let Some(rest) = text[at + needle.len()..].trim_start().strip_prefix('"') else { continue };
                    let code: String = rest.chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
                    if code.len() >= 3 && rest[code.len()..].starts_with('"') {
                        out.push((code, p.display().to_string()));
                    }
                }
            }
        }
    }
}

/// The codes a caller can get: the gateway's own (`Code::ALL`), the specific ones native
/// handlers set (`with_code("...")`) and those the shipped plugins answer (`sdk::conflict`,
/// `unprocessable`, `forbidden`, or a `Problem`'s `code`).
fn answerable_codes() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut codes: Vec<(String, String)> = Code::ALL.iter().map(|c| (c.as_str().to_string(), "gateway/src/error.rs".to_string())).collect();
    literals_after(&root.join("gateway/src"), &["with_code(", "with_code(String::from("], &mut codes);
    for e in std::fs::read_dir(root.join("plugins")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if p.join("src").is_dir() && !FIXTURE_PLUGINS.contains(&name.as_str()) {
            literals_after(&p.join("src"), &["conflict(", "unprocessable(", "forbidden(", "code: Some("], &mut codes);
        }
    }
    codes
}

#[test]
fn every_error_code_the_gateway_can_answer_is_in_the_error_code_enum() {
    let doc = shipped_document();
    let listed: Vec<&str> = doc["components"]["schemas"]["ErrorCode"]["enum"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let codes = answerable_codes();
    // The scan finds what it must (or this test would pass on nothing).
    for known in ["CAMPAIGN_STOPPED", "PROVIDER_NOT_CONFIGURED", "IDEMPOTENCY_KEY_REUSED", "IDEMPOTENCY_IN_FLIGHT", "UNAUTHENTICATED"] {
        assert!(codes.iter().any(|(c, _)| c == known), "the source scan no longer finds {known}");
    }
    let missing: Vec<String> = codes.iter().filter(|(c, _)| !listed.contains(&c.as_str())).map(|(c, f)| format!("{c} ({f})")).collect();
    assert!(missing.is_empty(), "error codes missing from openapi/components.json ErrorCode: {missing:?}");
}

/// Every `$ref` points at something in the document.
fn refs_resolve(doc: &Value, v: &Value, at: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("{at}: external $ref {r}"));
                assert!(doc.pointer(pointer).is_some(), "{at}: $ref {r} resolves to nothing");
            }
            for (k, x) in m {
                refs_resolve(doc, x, &format!("{at}/{k}"));
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| refs_resolve(doc, x, &format!("{at}/{i}"))),
        _ => {}
    }
}

/// The parts of OpenAPI 3.1 the document uses: version, info, paths of operations with
/// responses, path parameters named in their path, components; every schema compiles as JSON
/// Schema 2020-12 (OpenAPI 3.1's dialect).
fn assert_openapi_31(doc: &Value) {
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1.")), "{}", doc["openapi"]);
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
    assert!(doc.get("x-routes").is_none(), "the route table is the components file's, not the document's");
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "{path}");
        for (method, op) in item.as_object().unwrap() {
            assert!(["get", "put", "post", "delete", "options", "head", "patch", "trace"].contains(&method.as_str()), "{path}: {method}");
            assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{path} {method}: responses");
            for p in op["parameters"].as_array().into_iter().flatten() {
                assert!(["path", "query", "header", "cookie"].contains(&p["in"].as_str().unwrap()));
                if p["in"] == "path" {
                    assert_eq!(p["required"], true);
                    assert!(path.contains(&format!("{{{}}}", p["name"].as_str().unwrap())), "{path}: {p}");
                }
            }
        }
    }
    refs_resolve(doc, doc, "#");
    for (name, schema) in doc["components"]["schemas"].as_object().expect("components.schemas") {
        jsonschema::draft202012::new(&with_components(doc, schema)).unwrap_or_else(|e| panic!("schema {name}: {e}"));
    }
}

#[test]
fn the_document_is_openapi_3_1_and_every_reference_resolves() {
    assert_openapi_31(&shipped_document());
}

/// `schema`, made a root schema whose `#/components/...` references resolve.
fn with_components(doc: &Value, schema: &Value) -> Value {
    let mut root = match schema {
        Value::Object(m) => m.clone(),
        Value::Bool(true) => serde_json::Map::new(),
        other => panic!("not a schema: {other}"),
    };
    root.insert("components".into(), doc["components"].clone());
    Value::Object(root)
}

/// Checks a real answer against what the document says `method template` answers with that
/// status (the listed status, else `default`).
fn check(doc: &Value, method: &str, template: &str, r: &Resp) -> Result<(), String> {
    let op = doc["paths"][template].get(method.to_ascii_lowercase()).ok_or_else(|| format!("no operation {method} {template}"))?;
    let status = r.status.to_string();
    let mut resp = op["responses"].get(&status).or_else(|| op["responses"].get("default")).ok_or_else(|| format!("{method} {template}: status {status} not documented"))?;
    if let Some(Value::String(reference)) = resp.get("$ref") {
        resp = doc.pointer(reference.trim_start_matches('#')).ok_or("dangling response $ref")?;
    }
    match resp.pointer("/content/application~1json/schema") {
        None if r.text.is_empty() => Ok(()),
        None => Err(format!("{method} {template} {status}: a body where the document says none: {}", r.text)),
        Some(schema) => {
            let validator = jsonschema::draft202012::new(&with_components(doc, schema)).map_err(|e| e.to_string())?;
            let problems: Vec<String> = validator.iter_errors(&r.json).map(|e| format!("{} at {}", e, e.instance_path())).collect();
            if problems.is_empty() {
                Ok(())
            } else {
                Err(format!("{method} {template} {status}: {problems:?}\nbody: {}", r.text))
            }
        }
    }
}

/// The path template of the document that `path` falls under (literal segments first).
fn template_for<'d>(doc: &'d Value, method: &str, path: &str) -> Option<&'d str> {
    let segs: Vec<&str> = path.split('/').collect();
    let fits = |t: &str| {
        let ts: Vec<&str> = t.split('/').collect();
        ts.len() == segs.len() && ts.iter().zip(&segs).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
    };
    let literal = |t: &str| t.split('/').filter(|x| !x.starts_with('{')).count();
    doc["paths"]
        .as_object()?
        .iter()
        .filter(|(t, item)| fits(t) && item.get(method.to_ascii_lowercase()).is_some())
        .max_by_key(|(t, _)| literal(t))
        .map(|(t, _)| t.as_str())
}

/// The harness's optional check (`GATEWAY_TEST_OPENAPI=1`) of any answer: against its
/// route's documented response when the document has the route and a schema for it; an
/// error answer off any route (404, 405, built-in health routes' errors) against the envelope.
pub fn check_answer(doc: &Value, method: &str, path: &str, r: &Resp) -> Result<(), String> {
    match template_for(doc, method, path) {
        Some(t) => {
            let op = &doc["paths"][t][method.to_ascii_lowercase()];
            let status = r.status.to_string();
            let listed = op["responses"].get(&status).or_else(|| op["responses"].get("default"));
            let described = listed.is_some_and(|x| x.get("$ref").is_some() || x.get("content").is_some());
            if !described || r.json.is_null() {
                return Ok(()); // no schema for this route (a test's own plugin), or no JSON
            }
            check(doc, method, t, r)
        }
        None if r.status >= 400 && !r.json.is_null() => {
            let validator = jsonschema::draft202012::new(&with_components(doc, &json!({ "$ref": "#/components/schemas/Error" }))).map_err(|e| e.to_string())?;
            let problems: Vec<String> = validator.iter_errors(&r.json).map(|e| e.to_string()).collect();
            if problems.is_empty() { Ok(()) } else { Err(format!("{method} {path} {}: {problems:?}", r.status)) }
        }
        None => Ok(()),
    }
}

/// A stand-in provider (`provider-stub`) so the campaign and provider routes answer for real.
const STUB: &str = r#"
[plugins.provider-stub]
file = "provider_stub.wasm"

[providers.stub]
route = "provider_stub"
capability = "email_outreach"
base_url = "https://stub.invalid/ok"
verify = "url-token"

[[route]]
id = "provider_stub"
internal = true
target = "plugin:provider-stub"

[route.grants]
tables = { campaigns = "write" }
"#;

/// Records each answer with the route it came from, checking it as it goes.
struct Run<'a> {
    gw: &'a Gateway,
    doc: Value,
    checked: Vec<String>,
}

impl Run<'_> {
    async fn send(&mut self, method: &str, template: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Resp {
        let mut req = self.gw.req(method, path);
        if let Some(t) = token {
            req = req.token(t);
        }
        if let Some(b) = &body {
            req = req.json(b);
        }
        let r = req.send().await;
        if let Err(e) = check(&self.doc, method, template, &r) {
            panic!("{e}");
        }
        self.checked.push(format!("{method} {template} {}", r.status));
        r
    }
}

#[tokio::test]
async fn real_answers_match_the_document() {
    let db = TestDb::new().await;
    let mut opts = GatewayOptions::new(&db);
    opts.policies = policies_with("stub.toml", STUB);
    opts.extra_env.push(("GATEWAY_JOB_WORKERS".into(), "0".into()));
    opts.extra_env.push(("GATEWAY_ALLOW_PRIVATE_PROVIDER_URLS".into(), "1".into()));
    let policies = opts.policies.clone();
    let gw = Gateway::start_with(opts).await;

    // Public, and what the loaded policies make of it.
    let r = gw.req("GET", "/v1/openapi.json").send().await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let doc = r.json.clone();
    assert_eq!(doc, gateway::openapi::document(&PolicySet::load(&policies).unwrap()));
    assert_openapi_31(&doc);
    let mut run = Run { gw: &gw, doc, checked: Vec::new() };
    run.send("GET", "/v1/openapi.json", "/v1/openapi.json", None, None).await;
    let sup = gw.super_token.clone();

    // Orgs and tokens.
    let r = run.send("POST", "/v1/admin/orgs", "/v1/admin/orgs", Some(&sup), Some(json!({ "name": "Acme", "plan": "unmetered" }))).await;
    assert_eq!(r.status, 201);
    let org = r.json["org_id"].as_str().unwrap().to_string();
    let tokens = format!("/v1/admin/orgs/{org}/tokens");
    let r = run.send("POST", "/v1/admin/orgs/{org_id}/tokens", &tokens, Some(&sup), Some(json!({ "role": "admin", "email": "a@acme.test" }))).await;
    let admin = r.json["token"].as_str().unwrap().to_string();
    let r = run.send("POST", "/v1/admin/orgs/{org_id}/tokens", &tokens, Some(&sup), Some(json!({ "role": "member", "email": "m@acme.test" }))).await;
    let member = r.json["token"].as_str().unwrap().to_string();
    let r = run.send("POST", "/v1/admin/orgs/{org_id}/tokens", &tokens, Some(&sup), Some(json!({ "role": "root", "email": "x@acme.test" }))).await;
    assert_eq!(r.status, 400);
    let r = run.send("PATCH", "/v1/admin/orgs/{org_id}", &format!("/v1/admin/orgs/{org}"), Some(&sup), Some(json!({ "plan": "unmetered" }))).await;
    assert_eq!(r.status, 200);

    // Who, businesses, the error envelope.
    assert_eq!(run.send("GET", "/v1/whoami", "/v1/whoami", Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/whoami", "/v1/whoami", None, None).await.status, 401);
    assert_eq!(run.send("GET", "/v1/whoami", "/v1/whoami", Some("gw_unknown"), None).await.status, 401);
    let r = run.send("POST", "/v1/businesses", "/v1/businesses", Some(&admin), Some(json!({ "name": "Shop" }))).await;
    assert_eq!(r.status, 201);
    assert_eq!(run.send("POST", "/v1/businesses", "/v1/businesses", Some(&member), Some(json!({ "name": "Shop" }))).await.status, 403);
    assert_eq!(run.send("POST", "/v1/businesses", "/v1/businesses", Some(&admin), Some(json!({ "nam": "Shop" }))).await.status, 400);
    let r = gw.req("POST", "/v1/businesses").token(&admin).body("{").send().await;
    check(&run.doc, "POST", "/v1/businesses", &r).unwrap();
    assert_eq!(r.code(), "INVALID_JSON");

    // Plugins registry, echo and the CRM plugin.
    assert_eq!(run.send("GET", "/v1/admin/plugins", "/v1/admin/plugins", Some(&sup), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/admin/plugins", "/v1/admin/plugins", Some(&admin), None).await.status, 403);
    assert_eq!(run.send("POST", "/v1/echo", "/v1/echo", Some(&member), Some(json!({ "hello": [1, 2] }))).await.status, 200);
    let track = json!({ "type": "signup", "contact": { "email": "lead@example.com", "name": "Lead" }, "props": { "plan": "pro" } });
    let r = run.send("POST", "/v1/crm/track", "/v1/crm/track", Some(&member), Some(track)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let contact = r.json["contact_id"].as_str().unwrap().to_string();
    assert_eq!(run.send("POST", "/v1/crm/track", "/v1/crm/track", Some(&member), Some(json!({ "type": "" }))).await.status, 400);
    assert_eq!(run.send("GET", "/v1/crm/events", "/v1/crm/events", Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/crm/contacts/{contact_id}", &format!("/v1/crm/contacts/{contact}"), Some(&member), None).await.status, 200);

    // Webhook endpoints and events.
    let r = run.send("POST", "/v1/webhook-endpoints", "/v1/webhook-endpoints", Some(&admin), Some(json!({ "provider": "stub" }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let endpoint = r.json["endpoint_id"].as_str().unwrap().to_string();
    assert_eq!(run.send("POST", "/v1/webhook-endpoints", "/v1/webhook-endpoints", Some(&admin), Some(json!({ "provider": "nope" }))).await.status, 400);
    assert_eq!(run.send("GET", "/v1/webhook-endpoints", "/v1/webhook-endpoints", Some(&admin), None).await.status, 200);
    let rotate = format!("/v1/webhook-endpoints/{endpoint}/rotate");
    assert_eq!(run.send("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate", &rotate, Some(&admin), Some(json!({ "grace_seconds": 60 }))).await.status, 200);
    assert_eq!(run.send("GET", "/v1/webhook-events", "/v1/webhook-events", Some(&member), None).await.status, 200);
    let missing = uuid::Uuid::new_v4();
    assert_eq!(run.send("GET", "/v1/webhook-events/{event_id}", &format!("/v1/webhook-events/{missing}"), Some(&member), None).await.status, 404);
    assert_eq!(run.send("POST", "/v1/webhooks/{endpoint_id}", &format!("/v1/webhooks/{endpoint}"), None, Some(json!({ "x": 1 }))).await.status, 401);
    assert_eq!(run.send("DELETE", "/v1/webhook-endpoints/{endpoint_id}", &format!("/v1/webhook-endpoints/{endpoint}"), Some(&admin), None).await.status, 200);

    // Providers, capabilities, provisioning.
    let provider = format!("/v1/admin/orgs/{org}/providers/stub");
    let t = "/v1/admin/orgs/{org_id}/providers/{provider}";
    assert_eq!(run.send("GET", t, &provider, Some(&sup), None).await.status, 200);
    assert_eq!(run.send("DELETE", t, &provider, Some(&sup), None).await.status, 404);
    assert_eq!(run.send("PUT", t, &provider, Some(&sup), Some(json!({ "credentials": { "api_key": "short" } }))).await.status, 400);
    let r = run.send("PUT", t, &provider, Some(&sup), Some(json!({ "credentials": { "api_key": "k-0123456789" }, "base_url": "https://169.254.169.254/ok" }))).await;
    assert_eq!(r.code(), "PROVIDER_URL_NOT_ALLOWED", "{}", r.text);
    let r = run.send("PUT", t, &provider, Some(&sup), Some(json!({ "credentials": { "api_key": "k-0123456789" }, "base_url": "http://127.0.0.1:9/ok" }))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(run.send("GET", "/v1/admin/orgs/{org_id}/providers", &format!("/v1/admin/orgs/{org}/providers"), Some(&sup), None).await.status, 200);
    let r = run.send("POST", "/v1/campaigns", "/v1/campaigns", Some(&admin), Some(json!({ "name": "Q1", "channel": "email" }))).await;
    assert_eq!(r.code(), "CAPABILITY_NOT_ENABLED", "{}", r.text);
    let cap = format!("/v1/admin/orgs/{org}/capabilities/email_outreach");
    assert_eq!(run.send("PUT", "/v1/admin/orgs/{org_id}/capabilities/{capability}", &cap, Some(&sup), Some(json!({ "provider": "stub" }))).await.status, 200);
    assert_eq!(run.send("GET", "/v1/admin/orgs/{org_id}/capabilities", &format!("/v1/admin/orgs/{org}/capabilities"), Some(&sup), None).await.status, 200);
    let prov = format!("/v1/admin/orgs/{org}/provisioning/email_outreach");
    let pt = "/v1/admin/orgs/{org_id}/provisioning/{capability}";
    assert_eq!(run.send("GET", pt, &prov, Some(&sup), None).await.status, 404);
    assert_eq!(run.send("POST", pt, &prov, Some(&sup), Some(json!({}))).await.status, 202);
    assert_eq!(run.send("GET", pt, &prov, Some(&sup), None).await.status, 200);

    // Campaigns.
    let r = run.send("POST", "/v1/campaigns", "/v1/campaigns", Some(&admin), Some(json!({ "name": "Q1", "channel": "email" }))).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let c = r.json["campaign_id"].as_str().unwrap().to_string();
    assert_eq!(run.send("POST", "/v1/campaigns", "/v1/campaigns", Some(&admin), Some(json!({ "name": "Q1", "channel": "fax" }))).await.status, 400);
    assert_eq!(run.send("GET", "/v1/campaigns", "/v1/campaigns", Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}", &format!("/v1/campaigns/{c}"), Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}", &format!("/v1/campaigns/{missing}"), Some(&member), None).await.status, 404);
    let seq = format!("/v1/campaigns/{c}/sequence");
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}/sequence", &seq, Some(&member), None).await.status, 200);
    let steps = json!({ "steps": [{ "subject": "Hi", "body": "Hello" }, { "body": "Again", "delay_days": 3 }] });
    assert_eq!(run.send("POST", "/v1/campaigns/{campaign_id}/sequence", &seq, Some(&admin), Some(steps.clone())).await.status, 201);
    let leads = format!("/v1/campaigns/{c}/leads");
    let r = run
        .send("POST", "/v1/campaigns/{campaign_id}/leads", &leads, Some(&admin), Some(json!({ "leads": [{ "email": "x@example.com", "first_name": "X" }, { "email": "y@example.com" }] })))
        .await;
    assert_eq!(r.status, 202, "{}", r.text);
    let lead = r.json["leads"][0]["lead_id"].as_str().unwrap().to_string();
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}/leads", &leads, Some(&member), None).await.status, 200);
    let lt = "/v1/campaigns/{campaign_id}/leads/{lead_id}";
    assert_eq!(run.send("POST", &format!("{lt}/pause"), &format!("{leads}/{lead}/pause"), Some(&admin), None).await.status, 200);
    assert_eq!(run.send("POST", &format!("{lt}/unsubscribe"), &format!("{leads}/{lead}/unsubscribe"), Some(&admin), None).await.status, 200);
    let r = run.send("POST", &format!("{lt}/resume"), &format!("{leads}/{lead}/resume"), Some(&admin), None).await;
    assert_eq!(r.code(), "LEAD_UNSUBSCRIBED");
    assert_eq!(run.send("GET", &format!("{lt}/messages"), &format!("{leads}/{lead}/messages"), Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}/replies", &format!("/v1/campaigns/{c}/replies"), Some(&member), None).await.status, 200);
    assert_eq!(run.send("GET", "/v1/campaigns/{campaign_id}/analytics", &format!("/v1/campaigns/{c}/analytics"), Some(&member), None).await.status, 200);
    let status = format!("/v1/campaigns/{c}/status");
    assert_eq!(run.send("POST", "/v1/campaigns/{campaign_id}/status", &status, Some(&admin), Some(json!({ "status": "stopped" }))).await.status, 200);
    let r = run.send("POST", "/v1/campaigns/{campaign_id}/sequence", &seq, Some(&admin), Some(steps)).await;
    assert_eq!(r.code(), "CAMPAIGN_STOPPED");
    assert_eq!(run.send("GET", "/v1/inboxes", "/v1/inboxes", Some(&member), None).await.status, 200);

    // Tokens go last: revoking one is for good.
    let r = run.send("POST", "/v1/admin/orgs/{org_id}/tokens", &tokens, Some(&sup), Some(json!({ "role": "member", "email": "gone@acme.test" }))).await;
    let gone = r.json["token_id"].as_str().unwrap().to_string();
    assert_eq!(run.send("DELETE", "/v1/admin/tokens/{token_id}", &format!("/v1/admin/tokens/{gone}"), Some(&sup), None).await.status, 204);

    // Families covered, successes and errors alike.
    let statuses: std::collections::BTreeSet<&str> = run.checked.iter().filter_map(|c| c.rsplit(' ').next()).collect();
    for s in ["200", "201", "202", "204", "400", "401", "403", "404", "409"] {
        assert!(statuses.contains(s), "no {s} answer was checked: {statuses:?}");
    }

    // The check is not vacuous: a real answer with a field of the wrong type, or a missing one,
    // is refused.
    let mut r = gw.req("GET", &format!("/v1/campaigns/{c}")).token(&member).send().await;
    check(&run.doc, "GET", "/v1/campaigns/{campaign_id}", &r).unwrap();
    r.json["sequence_version"] = json!("1");
    assert!(check(&run.doc, "GET", "/v1/campaigns/{campaign_id}", &r).is_err());
    let mut r = gw.req("GET", "/v1/whoami").send().await;
    r.json.as_object_mut().unwrap().remove("request_id");
    assert!(check(&run.doc, "GET", "/v1/whoami", &r).is_err());
    r.json["request_id"] = json!("x");
    r.json["error_code"] = json!("NOT_A_CODE");
    assert!(check(&run.doc, "GET", "/v1/whoami", &r).is_err());
}
