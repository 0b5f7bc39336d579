//! `log`: plugin log lines, tagged by the host and capped in size and number.

use wasmtime::component::HasData;

use crate::plugin::bindings::log::{Host, Level};
use crate::plugin::state::LogState;

pub struct Data;

impl HasData for Data {
    type Data<'a> = &'a mut LogState;
}

const MAX_LINES: u32 = 100;
const MAX_LEN: usize = 2048;

fn cap(s: &str) -> &str {
    if s.len() <= MAX_LEN {
        return s;
    }
    let mut end = MAX_LEN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Host for LogState {
    fn emit(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.lines += 1;
        if self.lines > MAX_LINES {
            return;
        }
        let fields: String = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{}={}", cap(k), cap(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let (rid, org, plugin, msg) = (&self.request_id, &self.org, &self.plugin, cap(&message));
        match level {
            Level::Debug => tracing::debug!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, fields = %fields, "{msg}"),
            Level::Info => tracing::info!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, fields = %fields, "{msg}"),
            Level::Warn => tracing::warn!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, fields = %fields, "{msg}"),
            Level::Error => tracing::error!(target: "gateway::plugin", request_id = %rid, org_id = %org, plugin = %plugin, fields = %fields, "{msg}"),
        }
    }
}
