//! Logging through the host: lines are tagged with request id, org and plugin.

use crate::bindings::gateway::plugin::log::{emit, Level};

pub fn debug(message: &str, fields: &[(&str, &str)]) {
    line(Level::Debug, message, fields)
}
pub fn info(message: &str, fields: &[(&str, &str)]) {
    line(Level::Info, message, fields)
}
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    line(Level::Warn, message, fields)
}
pub fn error(message: &str, fields: &[(&str, &str)]) {
    line(Level::Error, message, fields)
}

fn line(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    emit(level, message, &fields);
}
