//! `notes`: the smallest plugin that owns a table (plugin-owned storage,
//! docs/plugin-manifest.md). `POST {"title", "body"?}` stores a note for the caller's org;
//! `GET` lists the org's notes. It names its table `notes`; the gateway maps that to the
//! tenant table it created from `plugin.toml`, and adds the org to every statement.

use gateway_plugin_sdk::db::{self, Row, Value};
use gateway_plugin_sdk::{self as sdk, serde_json::json, HandlerError, Request, Response};

struct Notes;

impl sdk::Guest for Notes {
    fn handle(req: Request) -> Result<Response, HandlerError> {
        if req.method == "GET" {
            let rows = db::select("notes").columns(&["title", "body"]).order_by("title", false).limit(100).fetch()?;
            let notes: Vec<_> = Row::all(rows).iter().map(Row::to_json).collect();
            return sdk::json(200, &json!({ "notes": notes }));
        }
        let body = req.json_value()?;
        let title = body
            .get("title")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty() && t.len() <= 200)
            .ok_or_else(|| sdk::invalid("title: 1 to 200 bytes of text"))?;
        let text = body.get("body").and_then(|b| b.as_str());
        let rows = db::insert("notes")
            .columns(&["title", "body"])
            .row(vec![Value::text(title), Value::opt_text(text)])
            .on_conflict_do_nothing(&["title"])
            .returning(&["title", "body"])
            .execute()?;
        match Row::first(rows) {
            Some(row) => sdk::json(201, &row.to_json()),
            None => Err(sdk::conflict("NOTE_EXISTS", "a note with this title exists")),
        }
    }
}

sdk::export_plugin!(Notes);
