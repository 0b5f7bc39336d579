-- Gateway core schema: the tenancy model (orgs -> users -> businesses) and API tokens.
--
-- Two kinds of tables:
--   platform tables (orgs, api_tokens): read and written only by the schema owner, outside any
--     tenant; the restricted role has no privileges on them at all.
--   tenant tables (everything with tenant_id): ENABLE + FORCE ROW LEVEL SECURITY, policies with
--     USING and WITH CHECK on app.tenant_id that fail closed when the setting is NULL or empty.
--     Tenant work runs as `gateway_app` (owns nothing, NOBYPASSRLS) inside a transaction that
--     sets app.tenant_id / app.role with set_config(..., true).

-- Roles are cluster-wide: several databases of one cluster may migrate at once, so a
-- concurrent creation by another database's migration counts as success.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'gateway_app') THEN
        BEGIN
            CREATE ROLE gateway_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT;
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

-- The connecting (owner) role must be able to SET ROLE gateway_app for tenant transactions.
DO $$
BEGIN
    IF NOT pg_has_role(current_user, 'gateway_app', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT gateway_app TO %I', current_user);
        EXCEPTION WHEN duplicate_object OR unique_violation THEN
            NULL;
        END;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO gateway_app;

-- The tenant id of the current transaction, or NULL when unset or empty: policies compare
-- against it, and a comparison with NULL is never true, so an unset tenant sees nothing.
CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

GRANT EXECUTE ON FUNCTION app_current_tenant() TO gateway_app;

CREATE TABLE orgs (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CONSTRAINT orgs_name_len CHECK (length(name) BETWEEN 1 AND 200),
    plan        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id          uuid NOT NULL,
    tenant_id   uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email       text NOT NULL CONSTRAINT users_email_normalised CHECK (email = lower(btrim(email))),
    role        text NOT NULL CONSTRAINT users_role_valid CHECK (role IN ('member', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT users_tenant_email_key UNIQUE (tenant_id, email)
);

CREATE TABLE api_tokens (
    id            uuid PRIMARY KEY,
    token_sha256  bytea NOT NULL CONSTRAINT api_tokens_hash_key UNIQUE
                  CONSTRAINT api_tokens_hash_len CHECK (length(token_sha256) = 32),
    role          text NOT NULL CONSTRAINT api_tokens_role_valid
                  CHECK (role IN ('member', 'admin', 'super_admin')),
    org_id        uuid REFERENCES orgs (id) ON DELETE CASCADE,
    user_id       uuid REFERENCES users (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    -- super-admins stand outside orgs; everybody else belongs to exactly one.
    CONSTRAINT api_tokens_scope CHECK (
        (role = 'super_admin' AND org_id IS NULL AND user_id IS NULL)
        OR (role <> 'super_admin' AND org_id IS NOT NULL AND user_id IS NOT NULL))
);

CREATE TABLE businesses (
    id          uuid NOT NULL,
    tenant_id   uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name        text NOT NULL CONSTRAINT businesses_name_len CHECK (length(name) BETWEEN 1 AND 200),
    owner_id    uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT businesses_pkey PRIMARY KEY (id),
    CONSTRAINT businesses_tenant_id_id_key UNIQUE (tenant_id, id),
    -- composite FK: an owner can only be a user of the same tenant.
    CONSTRAINT businesses_owner_fkey FOREIGN KEY (tenant_id, owner_id)
        REFERENCES users (tenant_id, id)
);

CREATE TABLE business_members (
    tenant_id    uuid NOT NULL,
    business_id  uuid NOT NULL,
    user_id      uuid NOT NULL,
    added_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT business_members_pkey PRIMARY KEY (tenant_id, business_id, user_id),
    CONSTRAINT business_members_business_fkey FOREIGN KEY (tenant_id, business_id)
        REFERENCES businesses (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT business_members_user_fkey FOREIGN KEY (tenant_id, user_id)
        REFERENCES users (tenant_id, id) ON DELETE CASCADE
);

-- Row-level security on every tenant table, identical policy shape everywhere.
DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'businesses', 'business_members'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I AS PERMISSIVE FOR ALL TO PUBLIC '
            'USING (tenant_id = app_current_tenant()) '
            'WITH CHECK (tenant_id = app_current_tenant())', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO gateway_app', t);
    END LOOP;
END
$$;
