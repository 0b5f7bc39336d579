//! A plugin version's manifest: what the author says the version is and needs, shipped inside
//! the component (the `gateway:manifest` custom section, next to `gateway:fixtures`). The
//! format is the contract in `docs/plugin-manifest.md`.
//!
//! This module only reads and checks the manifest on its own. Comparing its needs with a
//! route's grants (activation) and creating its tables (plugin-owned storage) happen where
//! those decisions are made; this module knows neither policies nor SQL.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plugin::grants::Access;

/// The custom section that carries the manifest's TOML text.
pub const SECTION: &str = "gateway:manifest";

/// The largest manifest accepted, in bytes: it is read on every upload.
pub const MAX_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub plugin: About,
    #[serde(default)]
    pub needs: Needs,
    /// Tables the plugin owns (plugin-owned storage), in declaration order.
    #[serde(default)]
    pub storage: Vec<OwnedTable>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct About {
    /// The registry name; when given, it must be the name the version is uploaded as.
    pub name: Option<String>,
    /// The author's semver label (`1.4.0`), shown beside the registry's version number.
    pub version: String,
    /// The contract the author built against (`gateway:plugin@0.2.0`); informative: the
    /// component's `http-handler` export decides which contract it is served.
    pub contract: Option<String>,
}

/// What the version needs from the routes that serve it. `routes` adds needs for one route
/// (by route id) on top of the ones every serving route must grant.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Needs {
    #[serde(flatten)]
    pub all: Need,
    #[serde(default)]
    pub routes: BTreeMap<String, Need>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Need {
    /// Tables by grant name (a gateway table, or another plugin's `plugin.table`) and the
    /// access needed. A plugin's own tables are never listed: they are granted to it.
    #[serde(default)]
    pub tables: BTreeMap<String, Access>,
    /// Outbound origins (`https://api.example.com`), as written in `[route.grants] hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub locks: bool,
    #[serde(default)]
    pub credentials: Vec<CredentialNeed>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialNeed {
    pub provider: String,
    pub name: String,
}

/// One plugin-owned table. The gateway adds `tenant_id`, a database-assigned `id uuid`
/// primary key and `created_at`; the author declares the rest.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OwnedTable {
    pub name: String,
    pub columns: Vec<Column>,
    /// Column sets unique within an org (the gateway prepends `tenant_id`).
    #[serde(default)]
    pub unique: Vec<Vec<String>>,
    /// Column sets to index (the gateway prepends `tenant_id`).
    #[serde(default)]
    pub indexes: Vec<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default)]
    pub nullable: bool,
    /// A constant default (string, number or boolean), or none.
    pub default: Option<toml::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    Integer,
    Bigint,
    Boolean,
    Numeric,
    Timestamptz,
    Uuid,
    Jsonb,
}

/// Why a manifest was refused; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin manifest: {0}")]
pub struct Invalid(pub String);

/// Names of owned tables and columns: lower-case SQL identifiers without `__` (the gateway's
/// separator in physical names), short enough that a physical name fits PostgreSQL's 63 bytes.
fn identifier(kind: &str, s: &str) -> Result<(), Invalid> {
    let ok = (1..=30).contains(&s.len())
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.contains("__")
        && !s.ends_with('_');
    if ok {
        Ok(())
    } else {
        Err(Invalid(format!("{kind} `{s}`: must be 1 to 30 of [a-z0-9_], start with a letter, no `__`, not end with `_`")))
    }
}

/// Columns the gateway adds to every owned table; an author may not declare them.
pub const RESERVED_COLUMNS: &[&str] = &["tenant_id", "id", "created_at"];

impl Manifest {
    /// Parses and checks a manifest's TOML text on its own (not against any policy).
    pub fn parse(text: &str) -> Result<Manifest, Invalid> {
        if text.len() > MAX_LEN {
            return Err(Invalid(format!("larger than {MAX_LEN} bytes")));
        }
        let m: Manifest = toml::from_str(text).map_err(|e| Invalid(e.message().to_string()))?;
        m.check()?;
        Ok(m)
    }

    /// The manifest a component carries, if any.
    pub fn from_component(bytes: &[u8]) -> Result<Option<Manifest>, Invalid> {
        match fixture_section::extract_named(bytes, SECTION) {
            Ok(None) => Ok(None),
            Ok(Some(data)) => {
                let text = std::str::from_utf8(data).map_err(|_| Invalid("not UTF-8".into()))?;
                Manifest::parse(text).map(Some)
            }
            Err(e) => Err(Invalid(e.to_string())),
        }
    }

    fn check(&self) -> Result<(), Invalid> {
        semver::Version::parse(&self.plugin.version)
            .map_err(|e| Invalid(format!("plugin.version `{}`: not semver ({e})", self.plugin.version)))?;
        if let Some(n) = &self.plugin.name {
            let ok = (1..=64).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(Invalid(format!("plugin.name `{n}`: must be 1 to 64 of [a-z0-9-]")));
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.storage {
            identifier("storage table", &t.name)?;
            if !names.insert(t.name.as_str()) {
                return Err(Invalid(format!("storage table `{}` declared twice", t.name)));
            }
            if t.columns.is_empty() {
                return Err(Invalid(format!("storage table `{}`: no columns", t.name)));
            }
            let mut cols = std::collections::HashSet::new();
            for c in &t.columns {
                identifier("column", &c.name)?;
                if RESERVED_COLUMNS.contains(&c.name.as_str()) {
                    return Err(Invalid(format!("column `{}.{}`: reserved (the gateway adds it)", t.name, c.name)));
                }
                if !cols.insert(c.name.as_str()) {
                    return Err(Invalid(format!("column `{}.{}` declared twice", t.name, c.name)));
                }
            }
            for set in t.unique.iter().chain(&t.indexes) {
                if set.is_empty() {
                    return Err(Invalid(format!("storage table `{}`: an empty unique or index column list", t.name)));
                }
                for c in set {
                    if !cols.contains(c.as_str()) && !RESERVED_COLUMNS.contains(&c.as_str()) {
                        return Err(Invalid(format!("storage table `{}`: unique/index names unknown column `{c}`", t.name)));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTES: &str = r#"
[plugin]
name = "notes"
version = "1.2.0"
contract = "gateway:plugin@0.1.0"

[needs]
tables = { crm_contacts = "read" }
hosts = ["https://api.example.com"]

[needs.routes.notes_sync]
credentials = [{ provider = "smartlead", name = "api_key" }]

[[storage]]
name = "notes"
columns = [
  { name = "title", type = "text" },
  { name = "body", type = "text", nullable = true },
  { name = "pinned", type = "boolean", default = false },
]
unique = [["title"]]
indexes = [["pinned", "created_at"]]
"#;

    #[test]
    fn a_full_manifest_parses() {
        let m = Manifest::parse(NOTES).unwrap();
        assert_eq!(m.plugin.version, "1.2.0");
        assert_eq!(m.needs.all.tables["crm_contacts"], Access::Read);
        assert_eq!(m.needs.routes["notes_sync"].credentials[0].provider, "smartlead");
        assert_eq!(m.storage[0].columns[2].default, Some(toml::Value::Boolean(false)));
        let embedded = fixture_section::embed_named(b"\0asm\x0d\0\x01\0", SECTION, NOTES.as_bytes()).unwrap();
        assert_eq!(Manifest::from_component(&embedded).unwrap(), Some(m));
        assert_eq!(Manifest::from_component(b"\0asm\x0d\0\x01\0").unwrap(), None);
    }

    #[test]
    fn bad_manifests_name_what_is_wrong() {
        let cases = [
            ("[plugin]\nversion = \"1\"", "not semver"),
            ("[plugin]\nversion = \"1.0.0\"\nnmae = 1", "unknown field"),
            ("[plugin]\nversion = \"1.0.0\"\n[[storage]]\nname = \"a__b\"\ncolumns = [{name = \"x\", type = \"text\"}]", "a__b"),
            ("[plugin]\nversion = \"1.0.0\"\n[[storage]]\nname = \"t\"\ncolumns = [{name = \"id\", type = \"text\"}]", "reserved"),
            ("[plugin]\nversion = \"1.0.0\"\n[[storage]]\nname = \"t\"\ncolumns = [{name = \"x\", type = \"money\"}]", "unknown variant"),
            ("[plugin]\nversion = \"1.0.0\"\n[[storage]]\nname = \"t\"\ncolumns = [{name = \"x\", type = \"text\"}]\nunique = [[\"y\"]]", "unknown column `y`"),
            ("[plugin]\nversion = \"1.0.0\"\n[needs]\ntables = { t = \"own\" }", "unknown variant"),
        ];
        for (text, want) in cases {
            let e = Manifest::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
