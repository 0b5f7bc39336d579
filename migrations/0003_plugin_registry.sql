-- The plugin registry: versions uploaded by operators, which one is active, and the audit
-- trail. Platform tables (no tenant), closed to the restricted role.

CREATE TABLE plugin_versions (
    name         text NOT NULL CONSTRAINT plugin_versions_name_valid CHECK (name ~ '^[a-z0-9-]{1,64}$'),
    version      integer NOT NULL CONSTRAINT plugin_versions_version_positive CHECK (version > 0),
    sha256       text NOT NULL CONSTRAINT plugin_versions_sha_len CHECK (length(sha256) = 64),
    component    bytea NOT NULL,
    wit_world    text NOT NULL,
    uploaded_by  uuid,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT plugin_versions_pkey PRIMARY KEY (name, version)
);

CREATE TABLE plugin_active (
    name              text PRIMARY KEY,
    version           integer NOT NULL,
    previous_version  integer,
    activated_by      uuid,
    activated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT plugin_active_version_fkey FOREIGN KEY (name, version) REFERENCES plugin_versions (name, version)
);

CREATE TABLE plugin_audit (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         uuid,
    action        text NOT NULL CONSTRAINT plugin_audit_action_valid CHECK (action IN ('upload', 'activate', 'rollback')),
    name          text NOT NULL,
    from_version  integer,
    to_version    integer
);
