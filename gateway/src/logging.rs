//! Where log lines go and what the text format escapes.
//!
//! Plugins write log text (`log.emit`, stdout, stderr) and are untrusted: the text format
//! escapes every character that could end a line, move the terminal's cursor or reorder what
//! a reader sees ([`EscapedFields`]), so a plugin cannot start a line of its own, let alone
//! one that looks like the gateway's. The JSON format needs no such help: every value is a
//! JSON string.
//!
//! Plugin lines (target [`PLUGIN_TARGET`]) go through a lossy writer of their own
//! ([`route`], [`plugin_sink`]): when the sink falls behind they are dropped and counted,
//! never waited for. Everything else (access lines, audit lines, the gateway's own) keeps the
//! lossless writer, where a full buffer makes the writer wait.

use std::fmt::Write as _;
use std::time::Duration;

use tracing::Metadata;
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::writer::MakeWriterExt;
use tracing_subscriber::fmt::{FormatFields, MakeWriter};

/// The target of every line whose text a plugin chose (`log.emit`, stdout, stderr).
pub const PLUGIN_TARGET: &str = "gateway::plugin";

/// Plugin lines the lossy writer holds before it drops new ones. A plugin line is at most
/// ~9 KiB (see `plugin::host::log`), so the buffer stays under ~40 MiB.
pub const PLUGIN_BUFFER_LINES: usize = 4_096;

/// Lines the lossless writer holds before writers wait.
pub const BUFFER_LINES: usize = 65_536;

/// How often the count of dropped plugin lines is logged (when it changed).
pub const DROP_REPORT_PERIOD: Duration = Duration::from_secs(10);

/// Whether `c` is escaped in text logs: C0 controls (newline, CR, tab, ESC, …), DEL, C1
/// controls (including NEL), the Unicode line and paragraph separators, and the bidirectional
/// controls that can make a line read differently from what it holds.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Appends `c` escaped: `\n`, `\r`, `\t`, `\xHH` for the rest of ASCII, `\u{…}` beyond.
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32).expect("writing to a String"),
        c => write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String"),
    }
}

/// Appends `s` with every character [`needs_escape`] says so escaped; the rest as is.
pub fn escape_control(s: &str, out: &mut String) {
    for c in s.chars() {
        if needs_escape(c) {
            push_escaped(out, c);
        } else {
            out.push(c);
        }
    }
}

/// The text format's fields (the message included), as `tracing_subscriber` formats them,
/// with control characters escaped: one event is one line, whatever its values hold.
#[derive(Debug, Default)]
pub struct EscapedFields(DefaultFields);

impl<'w> FormatFields<'w> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> std::fmt::Result {
        // Formatted without ANSI styling: styling is made of the very escapes removed below.
        let mut raw = String::new();
        self.0.format_fields(Writer::new(&mut raw), fields)?;
        if !raw.chars().any(needs_escape) {
            return writer.write_str(&raw);
        }
        let mut out = String::with_capacity(raw.len() + 16);
        escape_control(&raw, &mut out);
        writer.write_str(&out)
    }
}

/// Plugin lines to `plugin`, everything else to `main`.
pub fn route<P, M>(plugin: P, main: M) -> impl for<'a> MakeWriter<'a> + Send + Sync + 'static
where
    P: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    plugin.with_filter(|m: &Metadata<'_>| m.target() == PLUGIN_TARGET).or_else(main)
}

/// A lossy non-blocking writer: past `lines` buffered lines, a write is dropped and counted
/// (`error_counter`) instead of waiting for `to`.
pub fn plugin_sink<W: std::io::Write + Send + 'static>(to: W, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().lossy(true).buffered_lines_limit(lines).thread_name("plugin-log-writer").finish(to)
}

/// The lossless non-blocking writer: a request never waits on the terminal or the log
/// collector unless `lines` lines are already waiting.
pub fn main_sink<W: std::io::Write + Send + 'static>(to: W, lines: usize) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default().lossy(false).buffered_lines_limit(lines).thread_name("log-writer").finish(to)
}

/// Logs, every `period` in which one of them grew, how many plugin lines were dropped since
/// start: over an invocation's budget, over an org's rate, and by the lossy sink.
pub fn report_drops(sink: ErrorCounter, period: Duration) {
    let spawned = std::thread::Builder::new().name("log-drops".into()).spawn(move || {
        let mut last = (0, 0, 0);
        loop {
            std::thread::sleep(period);
            let (over_budget, over_rate) = crate::plugin::host::log::dropped_totals();
            let now = (over_budget, over_rate, sink.dropped_lines() as u64);
            if now != last {
                tracing::warn!(over_budget = now.0, over_rate = now.1, sink = now.2, "plugin_log_lines_dropped_total");
                last = now;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the dropped plugin log line reporter");
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        escape_control(s, &mut out);
        out
    }

    #[test]
    fn escapes_line_breaks_terminal_escapes_and_other_controls() {
        assert_eq!(escaped("a\nb\r\nc\td"), "a\\nb\\r\\nc\\td");
        assert_eq!(escaped("\x1b[2K\r\x1b[1A"), "\\x1b[2K\\r\\x1b[1A");
        assert_eq!(escaped("\0\x07\x08\x0b\x0c\x7f"), "\\x00\\x07\\x08\\x0b\\x0c\\x7f");
        // C1 (NEL, CSI), Unicode line/paragraph separators, bidi overrides and isolates.
        assert_eq!(escaped("a\u{85}b\u{9b}c"), "a\\u{85}b\\u{9b}c");
        assert_eq!(escaped("x\u{2028}y\u{2029}z"), "x\\u{2028}y\\u{2029}z");
        assert_eq!(escaped("\u{202e}evil\u{202c}\u{2066}\u{2069}\u{200f}"), "\\u{202e}evil\\u{202c}\\u{2066}\\u{2069}\\u{200f}");
    }

    #[test]
    fn leaves_printable_text_alone() {
        for s in ["", "plain text", "org_id=1 \"quoted\" \\ back", "é ü 日本 🙂", "tab-less = fine", "\u{a0}nbsp"] {
            assert_eq!(escaped(s), s);
        }
    }

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn text_format_keeps_a_forged_line_on_one_escaped_line() {
        let out = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(EscapedFields::default())
            .with_writer(out.clone())
            .with_ansi(false)
            .without_time()
            .finish();
        let forged = "innocent\n2026-11-23T00:00:00Z  INFO gateway::access: request org_id=victim\r\n\x1b[1A";
        tracing::subscriber::with_default(subscriber, || {
            let value = "v\nINFO gateway::access: request org_id=victim";
            tracing::info!(target: "gateway::plugin", org_id = "real", display = %value, debug = value, "{forged}");
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(text.contains(r"innocent\n2026-11-23T00:00:00Z  INFO gateway::access: request org_id=victim\r\n\x1b[1A"), "{text}");
        assert!(text.contains(r"display=v\nINFO gateway::access"), "{text}");
        assert!(text.contains(r#"debug="v\nINFO gateway::access"#), "{text}");
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    }

    #[test]
    fn plugin_lines_and_the_rest_go_to_their_own_writers() {
        let (plugin, main) = (Buf::default(), Buf::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(route(plugin.clone(), main.clone()))
            .with_ansi(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "gateway::plugin", "from a plugin");
            tracing::info!(target: "gateway::access", "request");
            tracing::info!(target: "gateway::plugin_log", "summary");
            tracing::warn!("host");
        });
        assert_eq!(plugin.text().lines().count(), 1);
        assert!(plugin.text().contains("from a plugin"));
        let main = main.text();
        assert_eq!(main.lines().count(), 3, "{main}");
        assert!(!main.contains("from a plugin"));
    }

    /// A sink that never returns from a write: the log collector is stuck.
    struct Stuck(std::sync::mpsc::Receiver<()>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.recv();
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_plugin_sink_drops_and_counts_instead_of_waiting() {
        let (release, stuck) = std::sync::mpsc::channel();
        let (sink, guard) = plugin_sink(Stuck(stuck), 8);
        let dropped = sink.error_counter();
        let started = Instant::now();
        for _ in 0..1_000 {
            sink.make_writer().write_all(b"a plugin line\n").unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(2), "writes waited: {:?}", started.elapsed());
        // At most the buffer plus the line the worker holds got through.
        assert!(dropped.dropped_lines() >= 1_000 - 9, "{}", dropped.dropped_lines());
        drop(release);
        drop(guard);
    }
}
