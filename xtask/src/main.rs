//! Project tasks, so that nobody runs a build step by hand:
//!
//! - `cargo xtask plugins`: build every plugin in `plugins/` for `wasm32-wasip2` (installing
//!   the target with rustup when it is missing) and embed each plugin's `fixtures.json`.
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
    embed_manifests();
}

/// Puts each plugin's `plugin.toml` into its component as the `gateway:manifest` custom
/// section (docs/plugin-manifest.md), as `embed_fixtures` does fixtures.
fn embed_manifests() {
    let out_dir = root().join("plugins/target/wasm32-wasip2/release");
    let Ok(dirs) = std::fs::read_dir(root().join("plugins")) else { return };
    for dir in dirs.flatten() {
        let Ok(toml) = std::fs::read(dir.path().join("plugin.toml")) else { continue };
        let wasm = out_dir.join(format!("{}.wasm", dir.file_name().to_string_lossy().replace('-', "_")));
        let fail = |e: String| -> ! {
            eprintln!("xtask: {}: {e}", wasm.display());
            exit(1)
        };
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| fail(e.to_string()));
        let out = fixture_section::embed_named(&bytes, "gateway:manifest", &toml).unwrap_or_else(|e| fail(e.to_string()));
        if out != bytes {
            let tmp = wasm.with_extension("wasm.tmp");
            std::fs::write(&tmp, out).and_then(|_| std::fs::rename(&tmp, &wasm)).expect("writing the component");
        }
    }
}

/// Puts each plugin's `fixtures.json` into its component as the `gateway:fixtures` custom
/// section (replacing the one a previous run added), so the fixtures ship with the bytes and
/// the gateway runs them on upload. The format is in `docs/plugins.md`; the section is read
/// and written by the `fixture-section` crate, which the gateway uses too.
fn embed_fixtures() {
    let out_dir = root().join("plugins/target/wasm32-wasip2/release");
    let Ok(dirs) = std::fs::read_dir(root().join("plugins")) else { return };
    for dir in dirs.flatten() {
        let fixtures = dir.path().join("fixtures.json");
        let Ok(json) = std::fs::read(&fixtures) else { continue };
        let wasm = out_dir.join(format!("{}.wasm", dir.file_name().to_string_lossy().replace('-', "_")));
        let bytes = std::fs::read(&wasm).unwrap_or_else(|e| {
            eprintln!("xtask: {}: {e}", wasm.display());
            exit(1)
        });
        let out = fixture_section::embed(&bytes, &json).unwrap_or_else(|e| {
            eprintln!("xtask: {}: {e}", wasm.display());
            exit(1)
        });
        if out != bytes {
            // A new file, renamed over: cargo hard-links its output to `deps/`, which stays as built.
            let tmp = wasm.with_extension("wasm.tmp");
            std::fs::write(&tmp, out).and_then(|_| std::fs::rename(&tmp, &wasm)).expect("writing the component");
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "plugins" => plugins(),
        "run" => {
            plugins();
            let mut c = cargo();
            c.current_dir(root()).args(["run", "--release", "-p", "gateway", "--", "serve"]).args(&rest);
            run(c);
        }
        "test" => {
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
            eprintln!("usage: cargo xtask plugins | run [ARGS] | test [ARGS] | fake-providers [ARGS]");
            exit(2);
        }
    }
}
