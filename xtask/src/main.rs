//! Project tasks, so that nobody runs a build step by hand:
//!
//! - `cargo xtask plugins`: build every plugin in `plugins/` for `wasm32-wasip2` (installing
//!   the target with rustup when it is missing) and embed each plugin's `fixtures.json` and
//!   `plugin.toml` (its manifest, `docs/plugin-manifest.md`).
//! - `cargo xtask sdk-docs [--check]`: write `docs/sdk.md`, the SDK reference, from the
//!   SDK's doc comments (`--check`: fail when the checked-in file is not current).
//! - `cargo xtask run [ARGS]`: plugins, then `cargo run --release -p gateway -- serve ARGS`.
//! - `cargo xtask test [ARGS]`: plugins, the plugins' native unit tests (without ARGS), then
//!   the whole test suite (`cargo test --workspace ARGS`).
//! - `cargo xtask fake-providers [ARGS]`: the fake Smartlead, HeyReach and chat-completions
//!   APIs on 127.0.0.1:9801, :9802 and :9803 until Ctrl-C (`docs/providers.md`, "Try it
//!   against the fakes"; `docs/optimizer.md`).

use std::path::{Path, PathBuf};
use std::process::{exit, Command};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(mut cmd: Command) {
    let shown = format!("{cmd:?}");
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("xtask: {shown} failed ({s})");
            exit(s.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("xtask: cannot run {shown}: {e}");
            exit(1);
        }
    }
}

/// Runs the test commands one after the other, passing their output through, and closes with
/// one line that totals every test binary's result (`N passed, N failed`), so that the last
/// word is the whole run. A failing command does not stop the next: the total tells all.
fn test_with_summary(cmds: Vec<Command>) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut first_failure: Option<i32> = None;
    for mut cmd in cmds {
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap_or_else(|e| {
            eprintln!("xtask: cannot run cargo test: {e}");
            exit(1)
        });
        for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
            println!("{line}");
            if let Some(rest) = line.strip_prefix("test result: ") {
                let count = |word: &str| {
                    rest.split(';')
                        .find_map(|part| part.trim().strip_suffix(word).and_then(|n| n.trim().rsplit(' ').next()?.parse::<u64>().ok()))
                        .unwrap_or(0)
                };
                passed += count(" passed");
                failed += count(" failed");
            }
        }
        let status = child.wait().expect("waiting for cargo test");
        if !status.success() && first_failure.is_none() {
            first_failure = Some(status.code().unwrap_or(1));
        }
    }
    println!("{passed} passed, {failed} failed");
    if let Some(code) = first_failure {
        exit(code);
    }
}

/// The plugins whose pure logic (normalisation, batching, rules) has native unit tests: they
/// build for the host from the plugins' workspace, into `plugins/target`.
const PLUGIN_UNIT_TESTS: &[&str] = &["outreach", "smartlead", "heyreach", "optimizer"];

fn ensure_wasm_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2"))
        .unwrap_or(false);
    if !installed {
        let mut c = Command::new("rustup");
        c.args(["target", "add", "wasm32-wasip2"]);
        run(c);
    }
}

fn plugins() {
    ensure_wasm_target();
    let mut c = cargo();
    c.current_dir(root().join("plugins"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        // Always into plugins/target (where the gateway and the fixtures step look), even when
        // CARGO_TARGET_DIR points the host build elsewhere.
        .arg("--target-dir")
        .arg(root().join("plugins/target"));
    run(c);
    embed_fixtures();
}

/// Puts each plugin's `fixtures.json` into its component as the `gateway:fixtures` custom
/// section and its `plugin.toml` as `gateway:manifest` (replacing what a previous run added),
/// so both ship with the bytes: the gateway runs the fixtures on upload and reads the
/// manifest on upload and activation. The fixtures' format is in `docs/plugins.md`, the
/// manifest's in `docs/plugin-manifest.md`; sections are read and written by the
/// `fixture-section` crate, which the gateway uses too.
fn embed_fixtures() {
    let out_dir = root().join("plugins/target/wasm32-wasip2/release");
    let Ok(dirs) = std::fs::read_dir(root().join("plugins")) else { return };
    for dir in dirs.flatten() {
        let fixtures = std::fs::read(dir.path().join("fixtures.json")).ok();
        let manifest = std::fs::read(dir.path().join("plugin.toml")).ok();
        if fixtures.is_none() && manifest.is_none() {
            continue;
        }
        let wasm = out_dir.join(format!("{}.wasm", dir.file_name().to_string_lossy().replace('-', "_")));
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| {
            eprintln!("xtask: {}: {e}", wasm.display());
            exit(1)
        });
        let mut out = bytes.clone();
        for (section, payload) in [(fixture_section::SECTION, fixtures), ("gateway:manifest", manifest)] {
            let Some(payload) = payload else { continue };
            out = fixture_section::embed_named(&out, section, &payload).unwrap_or_else(|e| {
                eprintln!("xtask: {}: {e}", wasm.display());
                exit(1)
            });
        }
        if out != bytes {
            // A new file, renamed over: cargo hard-links its output to `deps/`, which stays as built.
            let tmp = wasm.with_extension("wasm.tmp");
            std::fs::write(&tmp, out).and_then(|_| std::fs::rename(&tmp, &wasm)).expect("writing the component");
        }
    }
}

/// The SDK reference, `docs/sdk.md`, from the doc comments of `plugins/sdk/src`: each
/// module's `//!` text, then every public item (functions, types, traits and their methods,
/// re-exports, exported macros) with its signature and `///` text. Hidden items
/// (`#[doc(hidden)]`) and undocumented private code are left out.
fn sdk_docs() -> String {
    let src = root().join("plugins/sdk/src");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&src).expect("plugins/sdk/src").flatten().map(|e| e.path()).collect();
    files.sort_by_key(|p| (p.file_name().unwrap() != "lib.rs", p.clone()));
    let mut out = String::from(
        "# Plugin SDK reference (`gateway-plugin-sdk`)\n\n\
         Generated from the doc comments of `plugins/sdk/src` by `cargo xtask sdk-docs`; do not edit\n\
         (`cargo xtask test` fails when it is not current). `gateway plugin new` writes this SDK into\n\
         every new plugin crate (`sdk/`); `docs/plugins.md` is the guide.\n",
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let stem = file.file_stem().unwrap().to_string_lossy().to_string();
        let module = if stem == "lib" { "gateway_plugin_sdk".to_string() } else { format!("gateway_plugin_sdk::{stem}") };
        out.push_str(&format!("\n## `{module}`\n\n"));
        let mut lines = text.lines().peekable();
        let mut module_doc = Vec::new();
        while let Some(l) = lines.peek() {
            match l.trim_start().strip_prefix("//!") {
                Some(d) => module_doc.push(d.strip_prefix(' ').unwrap_or(d).to_string()),
                None => break,
            }
            lines.next();
        }
        push_doc(&mut out, &module_doc);
        let mut doc: Vec<String> = Vec::new();
        let mut hidden = false;
        let mut exported_macro = false;
        let mut block: Option<(String, bool)> = None; // (header, inherent impl)
        let mut block_shown = false;
        let mut skip_depth: Option<usize> = None;
        let all: Vec<&str> = lines.collect();
        let mut i = 0;
        while i < all.len() {
            let line = all[i];
            let indent = line.len() - line.trim_start().len();
            let t = line.trim();
            i += 1;
            if let Some(d) = skip_depth {
                // Inside a hidden module or a test module: skip to its closing brace.
                if indent == d && t == "}" {
                    skip_depth = None;
                }
                continue;
            }
            if let Some(d) = t.strip_prefix("///") {
                doc.push(d.strip_prefix(' ').unwrap_or(d).to_string());
                continue;
            }
            if t.starts_with("#[") {
                hidden |= t.starts_with("#[doc(hidden)]") || t.starts_with("#[cfg(test)]");
                exported_macro |= t.starts_with("#[macro_export]");
                continue;
            }
            if t.is_empty() || t.starts_with("//") {
                doc.clear();
                continue;
            }
            if indent == 0 {
                block = None;
            }
            let mut sig = t.to_string();
            let item_start = i - 1;
            let is_use = sig.starts_with("pub use");
            let opens_block = |s: &str| if is_use { s.ends_with(';') } else { s.ends_with('{') || s.ends_with(';') || s.ends_with('}') || s.ends_with(',') };
            while !opens_block(&sig) && i < all.len() {
                sig.push(' ');
                sig.push_str(all[i].trim());
                i += 1;
            }
            let sig = sig.trim_end_matches('{').trim().to_string();
            let taken = std::mem::take(&mut doc);
            let was_hidden = std::mem::replace(&mut hidden, false);
            let was_macro = std::mem::replace(&mut exported_macro, false);
            if was_hidden {
                if all[item_start].trim_end().ends_with('{') {
                    skip_depth = Some(indent);
                }
                continue;
            }
            if indent == 0 && (sig.starts_with("impl") || sig.starts_with("pub trait")) {
                let inherent = sig.starts_with("impl") && !sig.contains(" for ");
                block = Some((sig.clone(), inherent));
                block_shown = false;
                if sig.starts_with("pub trait") {
                    out.push_str(&format!("### `{sig}`\n\n"));
                    push_doc(&mut out, &taken);
                    block_shown = true;
                }
                continue;
            }
            let public = sig.starts_with("pub ") && !sig.starts_with("pub(");
            let show = match &block {
                None if indent == 0 => public || was_macro,
                Some((_, true)) if indent == 4 => public,
                Some((_, false)) if indent == 4 => sig.starts_with("fn ") && !taken.is_empty(),
                _ => false,
            };
            if !show {
                continue;
            }
            if let Some((header, _)) = &block {
                if !block_shown {
                    out.push_str(&format!("### `{header}`\n\n"));
                    block_shown = true;
                }
            }
            let shown = if was_macro { format!("{}!", sig.trim_start_matches("macro_rules! ")) } else { sig };
            out.push_str(&format!("{} `{shown}`\n\n", if block.is_some() { "####" } else { "###" }));
            push_doc(&mut out, &taken);
        }
    }
    out
}

fn push_doc(out: &mut String, doc: &[String]) {
    if doc.is_empty() {
        return;
    }
    let mut fenced = false;
    for d in doc {
        if d.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if d.trim_start().starts_with("```ignore") {
            out.push_str("```rust");
        } else if !fenced && d.starts_with('#') {
            // A heading inside an item's text sits below the item's own.
            out.push_str("####");
            out.push_str(d);
        } else {
            out.push_str(d);
        }
        out.push('\n');
    }
    out.push('\n');
}

fn sdk_docs_task(check: bool) {
    let path = root().join("docs/sdk.md");
    let want = sdk_docs();
    if check {
        if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
            eprintln!("xtask: docs/sdk.md is not current with plugins/sdk/src: run `cargo xtask sdk-docs`");
            exit(1);
        }
    } else {
        std::fs::write(&path, want).expect("writing docs/sdk.md");
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "plugins" => plugins(),
        "sdk-docs" => sdk_docs_task(rest.iter().any(|a| a == "--check")),
        "run" => {
            plugins();
            let mut c = cargo();
            c.current_dir(root()).args(["run", "--release", "-p", "gateway", "--", "serve"]).args(&rest);
            run(c);
        }
        "test" => {
            sdk_docs_task(true);
            plugins();
            let mut cmds = Vec::new();
            // A filtered run (`cargo xtask test -- name`) is about the host's tests only.
            if rest.is_empty() {
                let mut c = cargo();
                c.current_dir(root().join("plugins")).arg("test").arg("--target-dir").arg(root().join("plugins/target"));
                for p in PLUGIN_UNIT_TESTS {
                    c.args(["-p", p]);
                }
                cmds.push(c);
            }
            let mut c = cargo();
            c.current_dir(root()).args(["test", "--workspace"]).args(&rest);
            cmds.push(c);
            test_with_summary(cmds);
        }
        "fake-providers" => {
            let mut c = cargo();
            c.current_dir(root()).args(["run", "--quiet", "-p", "fake-providers", "--"]).args(&rest);
            run(c);
        }
        _ => {
            eprintln!("usage: cargo xtask plugins | sdk-docs [--check] | run [ARGS] | test [ARGS] | fake-providers [ARGS]");
            exit(2);
        }
    }
}
