//! The OpenAPI 3.1 document served at `GET /v1/openapi.json`: `paths` generated from the
//! loaded [`PolicySet`] (every route that is not internal: method, path parameters, roles,
//! body limit, idempotency), merged with the hand-written `openapi/components.json` (the
//! error envelope, every error code, request and response bodies).
//!
//! The components file's `x-routes` table maps a route id to its schemas. It is a table
//! rather than code next to each route so that a policy route nobody described still
//! appears, with a generic body, instead of vanishing from the document.

use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::policy::{Auth, BodyKind, Idempotency, PolicySet, Route, Scope, Target};
use crate::role::Role;

/// The hand-written half of the document.
pub const COMPONENTS: &str = include_str!("../../openapi/components.json");

/// The OpenAPI version the document declares.
pub const OPENAPI_VERSION: &str = "3.1.0";

/// `COMPONENTS`, parsed once. The file is part of the build: a unit test parses it, so a
/// broken file never ships.
fn components() -> &'static Map<String, Value> {
    static PARSED: OnceLock<Map<String, Value>> = OnceLock::new();
    PARSED.get_or_init(|| match serde_json::from_str(COMPONENTS) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    })
}

/// The document for `policies`.
pub fn document(policies: &PolicySet) -> Value {
    let base = components();
    let empty = Map::new();
    let table = base.get("x-routes").and_then(Value::as_object).unwrap_or(&empty);
    let mut paths = Map::new();
    // The console's pages are HTML for a browser session, not part of the JSON API.
    for r in policies.routes.iter().filter(|r| !r.internal && r.auth != Auth::Console) {
        let (path, params) = openapi_path(&r.path);
        let item = paths.entry(path).or_insert_with(|| json!({}));
        item[r.method.as_str().to_ascii_lowercase()] = operation(r, &params, table.get(&*r.id));
    }
    json!({
        "openapi": OPENAPI_VERSION,
        "info": base.get("info").cloned().unwrap_or_else(|| json!({ "title": "gateway", "version": "0" })),
        "paths": paths,
        "components": base.get("components").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The path as OpenAPI writes it and its parameter names: `{*rest}` (the rest of the path,
/// which OpenAPI cannot say) becomes `{rest}`, described as such.
pub fn openapi_path(path: &str) -> (String, Vec<(String, bool)>) {
    let mut params = Vec::new();
    let segments: Vec<String> = path
        .split('/')
        .map(|s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) => {
                let (name, tail) = match inner.strip_prefix('*') {
                    Some(n) => (n, true),
                    None => (inner, false),
                };
                params.push((name.to_string(), tail));
                format!("{{{name}}}")
            }
            None => s.to_string(),
        })
        .collect();
    (segments.join("/"), params)
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn operation(r: &Route, params: &[(String, bool)], described: Option<&Value>) -> Value {
    let mut op = Map::new();
    op.insert("operationId".into(), json!(&*r.id));
    op.insert("x-target".into(), json!(match &r.target {
        Target::Native(n) => format!("native:{}", n.name()),
        Target::Plugin(p) => format!("plugin:{p}"),
    }));
    op.insert("x-scope".into(), json!(match r.scope {
        Scope::Tenant => "tenant",
        Scope::Platform => "platform",
    }));
    op.insert("x-auth".into(), json!(match r.auth {
        Auth::Bearer => "bearer",
        Auth::Webhook => "webhook",
        Auth::Public => "public",
        Auth::Console => "console",
    }));
    // Super-admins may call every bearer route (Route::allows).
    let mut roles: Vec<&str> = r.roles.iter().map(|x| x.as_str()).collect();
    if r.auth == Auth::Bearer && !r.roles.contains(&Role::SuperAdmin) {
        roles.push(Role::SuperAdmin.as_str());
    }
    op.insert("x-roles".into(), json!(roles));
    op.insert("security".into(), match r.auth {
        Auth::Bearer => json!([{ "bearerAuth": [] }]),
        // The webhook's signature is its credential; a public route has none.
        Auth::Webhook | Auth::Public | Auth::Console => json!([]),
    });
    op.insert("x-body-limit".into(), json!(r.body_limit));

    let mut parameters: Vec<Value> = params
        .iter()
        .map(|(name, tail)| {
            let mut p = json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } });
            if *tail {
                p["description"] = json!("the rest of the path, slashes included");
            }
            p
        })
        .collect();
    if r.auth == Auth::Bearer && r.scope == Scope::Tenant {
        parameters.push(json!({
            "name": "X-Org-Id", "in": "header", "required": false, "schema": { "type": "string", "format": "uuid" },
            "description": "super-admins only: the org a tenant route acts in (required for them)",
        }));
    }
    if r.idempotency != Idempotency::None {
        let required = r.idempotency == Idempotency::Required;
        op.insert("x-idempotency".into(), json!(if required { "required" } else { "optional" }));
        parameters.push(json!({
            "name": "Idempotency-Key", "in": "header", "required": required, "schema": { "type": "string" },
            "description": "a retried request with the same key and body is answered once",
        }));
    }
    if !parameters.is_empty() {
        op.insert("parameters".into(), Value::Array(parameters));
    }

    let has_body = matches!(r.method, http::Method::POST | http::Method::PUT | http::Method::PATCH);
    let request = match described {
        Some(d) => d.get("request").and_then(Value::as_str).map(schema_ref),
        None => has_body.then(|| schema_ref("AnyJson")),
    };
    if r.body == BodyKind::Raw && has_body {
        op.insert("requestBody".into(), json!({
            "required": true,
            "content": { "application/octet-stream": { "schema": { "type": "string", "contentMediaType": "application/octet-stream" } } },
        }));
    } else if let Some(schema) = request {
        op.insert("requestBody".into(), json!({ "required": described.is_some(), "content": json_content(schema) }));
    }

    let mut responses = Map::new();
    match described.and_then(|d| d.get("responses")).and_then(Value::as_object) {
        Some(listed) => {
            for (status, schema) in listed {
                let mut resp = json!({ "description": "success" });
                if let Some(name) = schema.as_str() {
                    resp["content"] = json_content(schema_ref(name));
                }
                responses.insert(status.clone(), resp);
            }
        }
        None => {
            responses.insert("200".into(), json!({ "description": "the route's answer (no schema in openapi/components.json yet)" }));
        }
    }
    let error = json!({ "$ref": "#/components/responses/Error" });
    let mut errors: Vec<&str> = Vec::new();
    if r.auth != Auth::Public {
        errors.extend(["400", "401", "404", "503"]);
        if r.auth == Auth::Bearer {
            errors.push("403");
        }
        if has_body {
            errors.push("413");
        }
        if matches!(r.target, Target::Plugin(_)) {
            errors.extend(["409", "422", "502", "504"]);
        }
        responses.insert("429".into(), json!({ "$ref": "#/components/responses/RateLimited" }));
    }
    for status in errors {
        responses.entry(status.to_string()).or_insert_with(|| error.clone());
    }
    responses.insert("default".into(), error);
    op.insert("responses".into(), Value::Object(responses));
    Value::Object(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_components_file_is_json_with_components_and_a_route_table() {
        let v: Value = serde_json::from_str(COMPONENTS).expect("openapi/components.json is JSON");
        assert!(v["components"]["schemas"]["Error"].is_object());
        assert!(v["components"]["schemas"]["ErrorCode"]["enum"].is_array());
        assert!(v["x-routes"].is_object());
        // Every schema a route names exists.
        for (id, d) in v["x-routes"].as_object().unwrap() {
            let named = d["responses"].as_object().unwrap().values().chain([&d["request"]]);
            for name in named.filter_map(Value::as_str) {
                assert!(v["components"]["schemas"][name].is_object(), "{id}: no schema {name}");
            }
        }
    }

    #[test]
    fn paths_say_parameters_as_openapi_does() {
        assert_eq!(openapi_path("/v1/a/{org_id}/b"), ("/v1/a/{org_id}/b".to_string(), vec![("org_id".to_string(), false)]));
        assert_eq!(openapi_path("/p/{*rest}"), ("/p/{rest}".to_string(), vec![("rest".to_string(), true)]));
    }

    #[test]
    fn a_route_without_schemas_still_appears_with_a_generic_body() {
        let set = PolicySet::from_sources(&[
            ("plans.toml".into(), "[plans.standard]\ndefault = true\n".into()),
            (
                "r.toml".into(),
                "[plugins.p]\nfile = \"p.wasm\"\n[[route]]\nid = \"brand_new\"\nmethod = \"POST\"\npath = \"/v1/new/{thing}\"\ntarget = \"plugin:p\"\nroles = [\"admin\"]\nbody_limit = \"2KiB\"\nidempotency = \"required\"\n"
                    .into(),
            ),
        ])
        .unwrap();
        let doc = document(&set);
        let op = &doc["paths"]["/v1/new/{thing}"]["post"];
        assert_eq!(op["operationId"], "brand_new");
        assert_eq!(op["x-roles"], json!(["admin", "super_admin"]));
        assert_eq!(op["x-body-limit"], 2048);
        assert_eq!(op["x-idempotency"], "required");
        assert_eq!(op["security"], json!([{ "bearerAuth": [] }]));
        assert_eq!(op["parameters"][0]["name"], "thing");
        assert!(op["parameters"].as_array().unwrap().iter().any(|p| p["name"] == "Idempotency-Key" && p["required"] == true));
        assert_eq!(op["requestBody"]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/AnyJson");
        assert!(op["responses"]["200"].is_object());
        assert_eq!(op["responses"]["429"]["$ref"], "#/components/responses/RateLimited");
    }
}
