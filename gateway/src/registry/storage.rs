//! Plugin-owned storage at upload: a new version's `[[storage]]` must be a forward, additive
//! change of what the plugin's earlier versions declared (`docs/plugin-manifest.md`). Pure;
//! the tables themselves are created at activation (`db::plugin_storage::create_owned`).

use std::collections::BTreeMap;

use super::manifest::{Column, OwnedTable};
use crate::db::plugin_storage::{default_literal, physical, MAX_IDENTIFIER};

/// What the earlier versions declared, merged: every table and column any of them declared
/// (the first declaration of each wins: later ones could only add), and each table's unique
/// column sets.
#[derive(Debug, Default)]
pub struct Declared {
    tables: BTreeMap<String, (Columns, Vec<Vec<String>>)>,
}

type Columns = BTreeMap<String, Column>;

impl Declared {
    pub fn add(&mut self, storage: &[OwnedTable]) {
        for t in storage {
            let (cols, unique) = self.tables.entry(t.name.clone()).or_insert_with(|| (BTreeMap::new(), t.unique.clone()));
            for c in &t.columns {
                cols.entry(c.name.clone()).or_insert_with(|| c.clone());
            }
            for u in &t.unique {
                if !unique.contains(u) {
                    unique.push(u.clone());
                }
            }
        }
    }
}

/// Checks `plugin`'s new storage on its own (physical names fit, defaults are constants of
/// their column's type) and against what earlier versions declared. The message names the
/// table and column.
pub fn check(plugin: &str, new: &[OwnedTable], before: &Declared) -> Result<(), String> {
    for t in new {
        let p = physical(plugin, &t.name);
        if p.len() > MAX_IDENTIFIER {
            return Err(format!(
                "storage table `{}`: its table `{p}` is longer than {MAX_IDENTIFIER} bytes (shorten the plugin or table name)",
                t.name
            ));
        }
        for c in &t.columns {
            default_literal(c).map_err(|e| format!("storage table `{}`: {e}", t.name))?;
        }
    }
    for (name, (cols, unique)) in &before.tables {
        let Some(t) = new.iter().find(|t| &t.name == name) else {
            return Err(format!("storage table `{name}` dropped: an earlier version declares it, and tables are never dropped"));
        };
        for (cname, old) in cols {
            let Some(c) = t.columns.iter().find(|c| &c.name == cname) else {
                return Err(format!("column `{name}.{cname}` dropped: an earlier version declares it, and columns are never dropped"));
            };
            if c.ty != old.ty {
                return Err(format!("column `{name}.{cname}`: type changed from {:?} to {:?}", old.ty, c.ty).to_lowercase());
            }
            if c.nullable != old.nullable {
                return Err(format!("column `{name}.{cname}`: nullability changed"));
            }
            if c.default != old.default {
                return Err(format!("column `{name}.{cname}`: default changed"));
            }
        }
        for c in &t.columns {
            if !cols.contains_key(&c.name) && !c.nullable && c.default.is_none() {
                return Err(format!(
                    "column `{name}.{}`: added as NOT NULL without a default (existing rows have no value): make it nullable or give it a default",
                    c.name
                ));
            }
        }
        for u in &t.unique {
            if !unique.contains(u) {
                return Err(format!("storage table `{name}`: unique ({}) added to an existing table (its rows may already break it)", u.join(", ")));
            }
        }
        for u in unique {
            if !t.unique.contains(u) {
                return Err(format!("storage table `{name}`: unique ({}) dropped: constraints are never dropped", u.join(", ")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::manifest::Manifest;

    fn storage(tables: &str) -> Vec<OwnedTable> {
        Manifest::parse(&format!("[plugin]\nversion = \"1.0.0\"\n{tables}")).unwrap().storage
    }

    const V1: &str = r#"
[[storage]]
name = "notes"
columns = [{ name = "title", type = "text" }, { name = "body", type = "text", nullable = true }]
unique = [["title"]]
"#;

    #[test]
    fn a_manifest_round_trips_through_its_stored_json() {
        let m = Manifest::parse(&format!("[plugin]\nversion = \"1.0.0\"\n[needs]\ntables = {{ crm_contacts = \"read\" }}\n[needs.routes.r]\nlocks = true\n{V1}")).unwrap();
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(serde_json::from_value::<Manifest>(json).unwrap(), m);
    }

    #[test]
    fn additive_changes_pass_and_others_name_table_and_column() {
        let mut before = Declared::default();
        before.add(&storage(V1));
        check("notes", &storage(V1), &before).unwrap();
        let added = r#"
[[storage]]
name = "notes"
columns = [{ name = "title", type = "text" }, { name = "body", type = "text", nullable = true },
           { name = "pinned", type = "boolean", default = false }, { name = "tag", type = "text", nullable = true }]
unique = [["title"]]
indexes = [["pinned"]]
[[storage]]
name = "tags"
columns = [{ name = "label", type = "text" }]
"#;
        check("notes", &storage(added), &before).unwrap();
        let cases = [
            ("[[storage]]\nname = \"other\"\ncolumns = [{ name = \"x\", type = \"text\" }]", "storage table `notes` dropped"),
            ("[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"text\" }]\nunique = [[\"title\"]]", "column `notes.body` dropped"),
            ("[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"integer\" }, { name = \"body\", type = \"text\", nullable = true }]\nunique = [[\"title\"]]", "column `notes.title`: type changed"),
            ("[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"text\" }, { name = \"body\", type = \"text\" }]\nunique = [[\"title\"]]", "column `notes.body`: nullability"),
            ("[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"text\" }, { name = \"body\", type = \"text\", nullable = true }, { name = \"n\", type = \"integer\" }]\nunique = [[\"title\"]]", "column `notes.n`: added as NOT NULL"),
            ("[[storage]]\nname = \"notes\"\ncolumns = [{ name = \"title\", type = \"text\" }, { name = \"body\", type = \"text\", nullable = true }]", "unique (title) dropped"),
        ];
        for (text, want) in cases {
            let e = check("notes", &storage(text), &before).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
        let long = "a".repeat(30);
        let e = check(&"p".repeat(40), &storage(&format!("[[storage]]\nname = \"{long}\"\ncolumns = [{{ name = \"x\", type = \"text\" }}]")), &Declared::default()).unwrap_err();
        assert!(e.contains("longer than 63"), "{e}");
        let e = check("p", &storage("[[storage]]\nname = \"t\"\ncolumns = [{ name = \"x\", type = \"integer\", default = \"1\" }]"), &Declared::default()).unwrap_err();
        assert!(e.contains("not a constant of type integer"), "{e}");
    }
}
