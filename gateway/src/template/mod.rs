//! `gateway plugin new`: a plugin crate that builds out of tree, with only this binary, a Rust
//! toolchain and the crates registry. The SDK (`plugins/sdk`) and the WIT contract (`wit/`)
//! are compiled into the binary from this checkout and written into the new crate (`sdk/`,
//! `sdk/wit/`), so a crate is pinned to the contract the gateway that made it serves. The
//! plugins' `Cargo.lock` goes with them: the new crate resolves to the versions this
//! repository builds and tests with.

use std::path::Path;

use crate::error::{Error, Result};

/// The current WIT contract (`gateway plugin wit`), the one new crates are built against; the
/// gateway also serves the older versions in `plugin::WIT_VERSIONS`.
pub const WIT: &str = include_str!("../../../wit/plugin.wit");

/// The package [`WIT`] declares (`gateway:plugin@0.2.0`): the newest served version.
pub const CONTRACT: &str = crate::plugin::WIT_VERSIONS[crate::plugin::WIT_VERSIONS.len() - 1];

/// The SDK's sources, by path inside the SDK crate.
const SDK_SOURCES: &[(&str, &str)] = &[
    ("src/db.rs", include_str!("../../../plugins/sdk/src/db.rs")),
    ("src/encoding.rs", include_str!("../../../plugins/sdk/src/encoding.rs")),
    ("src/log.rs", include_str!("../../../plugins/sdk/src/log.rs")),
];
const SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
/// The SDK's bindings point at `wit/` two levels up in this repository; in a new crate the
/// contract sits inside the SDK.
const SDK_WIT_PATH: (&str, &str) = ("path: \"../../wit\"", "path: \"wit\"");
const LOCK: &str = include_str!("../../../plugins/Cargo.lock");

const SDK_MANIFEST: &str = include_str!("sdk.Cargo.toml");
const CARGO_TOML: &str = include_str!("Cargo.toml.in");
const CARGO_CONFIG: &str = include_str!("config.toml.in");
const PLUGIN_TOML: &str = include_str!("plugin.toml.in");
const FIXTURES: &str = include_str!("fixtures.json.in");
const README: &str = include_str!("README.md.in");
const LIB_RS: &str = include_str!("lib.rs.in");
const GITIGNORE: &str = "/target\n";

/// Every file of a new plugin crate named `name`, by path inside it.
pub fn files(name: &str) -> Result<Vec<(String, String)>> {
    let ok = (1..=64).contains(&name.len())
        && name.as_bytes()[0].is_ascii_lowercase()
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(Error::Config(format!("plugin name `{name}`: must be 1 to 64 of [a-z0-9-], starting with a letter")));
    }
    if !SDK_LIB.contains(SDK_WIT_PATH.0) {
        return Err(Error::Config("the embedded SDK no longer names its WIT path as expected".into()));
    }
    let fill = |t: &str| {
        t.replace("@NAME@", name)
            .replace("@LIB@", &name.replace('-', "_"))
            .replace("@CONTRACT@", CONTRACT)
            .replace("@GATEWAY_VERSION@", env!("CARGO_PKG_VERSION"))
    };
    let mut out = vec![
        ("Cargo.toml".to_string(), fill(CARGO_TOML)),
        ("Cargo.lock".to_string(), LOCK.to_string()),
        (".cargo/config.toml".to_string(), fill(CARGO_CONFIG)),
        (".gitignore".to_string(), GITIGNORE.to_string()),
        ("plugin.toml".to_string(), fill(PLUGIN_TOML)),
        ("fixtures.json".to_string(), fill(FIXTURES)),
        ("README.md".to_string(), fill(README)),
        ("src/lib.rs".to_string(), fill(LIB_RS)),
        ("sdk/Cargo.toml".to_string(), SDK_MANIFEST.to_string()),
        ("sdk/src/lib.rs".to_string(), SDK_LIB.replace(SDK_WIT_PATH.0, SDK_WIT_PATH.1)),
        ("sdk/wit/plugin.wit".to_string(), WIT.to_string()),
    ];
    out.extend(SDK_SOURCES.iter().map(|(p, text)| (format!("sdk/{p}"), text.to_string())));
    Ok(out)
}

/// Writes a new plugin crate into `dir`, which must not exist or be empty.
pub fn write(name: &str, dir: &Path) -> Result<Vec<String>> {
    let files = files(name)?;
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(Error::Config(format!("{} exists and is not empty", dir.display())));
    }
    for (path, text) in &files {
        let at = dir.join(path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&at, text).map_err(|e| Error::io(format!("writing {}", at.display()), e))?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_sdk_source_is_embedded() {
        let mut on_disk: Vec<String> = std::fs::read_dir(repo().join("plugins/sdk/src"))
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = SDK_SOURCES.iter().map(|(p, _)| p.to_string()).chain(["src/lib.rs".to_string()]).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add new SDK files to SDK_SOURCES");
    }

    #[test]
    fn the_sdk_manifest_pins_what_the_plugins_workspace_pins() {
        let ws: toml::Value = toml::from_str(&std::fs::read_to_string(repo().join("plugins/Cargo.toml")).unwrap()).unwrap();
        let ours: toml::Value = toml::from_str(SDK_MANIFEST).unwrap();
        let sdk: toml::Value = toml::from_str(&std::fs::read_to_string(repo().join("plugins/sdk/Cargo.toml")).unwrap()).unwrap();
        assert_eq!(ours["package"]["name"], sdk["package"]["name"]);
        assert_eq!(ours["package"]["version"], sdk["package"]["version"]);
        let deps = sdk["dependencies"].as_table().unwrap();
        assert_eq!(ours["dependencies"].as_table().unwrap().len(), deps.len(), "the SDK's dependencies changed");
        for name in deps.keys() {
            let want = &ws["workspace"]["dependencies"][name];
            let got = &ours["dependencies"][name];
            let version = |v: &toml::Value| v.as_str().map(str::to_string).or_else(|| v.get("version").and_then(|v| v.as_str()).map(str::to_string));
            assert_eq!(version(got), version(want), "{name}");
        }
    }

    #[test]
    fn a_new_crate_is_complete_and_named() {
        let files = files("my-notes").unwrap();
        let get = |p: &str| &files.iter().find(|(q, _)| q == p).unwrap_or_else(|| panic!("{p}")).1;
        assert!(get("Cargo.toml").contains("name = \"my-notes\""));
        assert!(get("sdk/src/lib.rs").contains("path: \"wit\""));
        let m = crate::registry::manifest::Manifest::parse(get("plugin.toml")).unwrap();
        assert_eq!(m.plugin.name.as_deref(), Some("my-notes"));
        // A new crate names the contract it embeds: the current one.
        assert_eq!(m.plugin.contract.as_deref(), Some(CONTRACT));
        assert!(get("sdk/wit/plugin.wit").contains(&format!("package {CONTRACT};")), "{CONTRACT}");
        let fixtures: Vec<crate::registry::fixtures::Fixture> = serde_json::from_str(get("fixtures.json")).unwrap();
        assert!(fixtures.iter().any(|f| f.needs_database()) && fixtures.iter().any(|f| !f.needs_database()));
        assert!(!files.iter().any(|(_, t)| t.contains("@NAME@") || t.contains("@LIB@")));
        assert!(super::files("Bad").is_err() && super::files("1x").is_err());
    }
}
