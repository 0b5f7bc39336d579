-- Issue #17, key ring: each replica's ring of secret keys, by key id only (never a key), so a
-- replica starting with a ring that differs from the others' says so. A platform table,
-- closed to the restricted role. Rows of replicas that stopped refreshing are ignored.
CREATE TABLE secret_key_rings (
    replica  text PRIMARY KEY CONSTRAINT secret_key_rings_replica_len CHECK (length(replica) BETWEEN 1 AND 64),
    -- Newest (sealing) key first; each 8 hex digits.
    key_ids  text[] NOT NULL CONSTRAINT secret_key_rings_key_ids_valid CHECK (cardinality(key_ids) >= 1),
    seen_at  timestamptz NOT NULL DEFAULT now()
);

-- Issue #18, registry/policy consistency.
-- The author's semver label (the manifest's `[plugin] version`) beside the registry number;
-- NULL for versions without a manifest.
ALTER TABLE plugin_versions ADD COLUMN label text
    CONSTRAINT plugin_versions_label_len CHECK (label IS NULL OR length(label) BETWEEN 1 AND 128);

-- Every activation, newest last: `rollback` undoes the newest live one and goes to the one
-- before it (v3 → v2 → v1, not a toggle). `version` NULL: deactivated (the policy's file).
CREATE TABLE plugin_activations (
    id         bigserial PRIMARY KEY,
    name       text NOT NULL,
    version    integer,
    actor      uuid,
    at         timestamptz NOT NULL DEFAULT now(),
    undone_at  timestamptz,
    CONSTRAINT plugin_activations_version_fkey FOREIGN KEY (name, version) REFERENCES plugin_versions (name, version)
);
CREATE INDEX plugin_activations_name ON plugin_activations (name, id) WHERE undone_at IS NULL;

-- What the registry knew before: the previous version, then the active one.
INSERT INTO plugin_activations (name, version, actor, at)
SELECT name, previous_version, NULL, activated_at FROM plugin_active WHERE previous_version IS NOT NULL;
INSERT INTO plugin_activations (name, version, actor, at)
SELECT name, version, activated_by, activated_at FROM plugin_active;

ALTER TABLE plugin_audit DROP CONSTRAINT plugin_audit_action_valid;
ALTER TABLE plugin_audit ADD CONSTRAINT plugin_audit_action_valid
    CHECK (action IN ('upload', 'activate', 'rollback', 'deactivate'));
