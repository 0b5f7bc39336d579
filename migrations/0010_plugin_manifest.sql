-- Plugin manifests (docs/plugin-manifest.md): each stored version keeps the manifest its
-- component carried (parsed, as JSON; NULL for a component without one). Activation compares
-- its needs with the routes' grants and creates the tables its `[[storage]]` declares; upload
-- compares that storage with the plugin's earlier versions.
--
-- Plugin-owned tables themselves are created at activation, not here: `plg_<plugin>__<table>`
-- in this schema (a `-` in the plugin name becomes `_`), each a tenant table made by
-- app_tenant_table (0002).
ALTER TABLE plugin_versions ADD COLUMN manifest jsonb;
