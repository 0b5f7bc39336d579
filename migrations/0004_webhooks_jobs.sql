-- Webhook ingress (endpoints, their secrets, received events) and the job queue that
-- processes them (issue: webhooks + Postgres job queue). Every table is a tenant table.
--
-- Two operations are cross-tenant by nature and run as the owner role with
-- `app.scope = 'platform'` set for the transaction: resolving an endpoint id to its org before
-- any credential is known (the signature is the credential), and claiming jobs of every org.
-- The `platform_access` policies below are granted to the owner role only, never to
-- `gateway_app`, so a tenant transaction can never use them.

CREATE TABLE webhook_endpoints (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    provider     text NOT NULL CONSTRAINT webhook_endpoints_provider_len CHECK (length(provider) BETWEEN 1 AND 64),
    scheme       text NOT NULL CONSTRAINT webhook_endpoints_scheme_valid
                 CHECK (scheme IN ('standard-webhooks', 'hmac-sha256')),
    created_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz,
    CONSTRAINT webhook_endpoints_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_endpoints_tenant_id_id_key UNIQUE (tenant_id, id)
);

-- Secrets are sealed (AES-256-GCM under the gateway's secret key, bound to the endpoint id):
-- HMAC needs the key itself, so hashing is not an option. `expires_at` NULL = current; a
-- rotation gives the previous ones a grace period.
CREATE TABLE webhook_secrets (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id    uuid NOT NULL,
    endpoint_id  uuid NOT NULL,
    sealed       bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    CONSTRAINT webhook_secrets_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_secrets_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_secrets_endpoint ON webhook_secrets (endpoint_id);

-- A received event, exactly once per (tenant, endpoint, event key). The body is kept as the
-- bytes that were signed.
CREATE TABLE webhook_events (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    endpoint_id  uuid NOT NULL,
    provider     text NOT NULL,
    event_key    text NOT NULL CONSTRAINT webhook_events_key_len CHECK (length(event_key) BETWEEN 1 AND 512),
    event_type   text,
    body         bytea NOT NULL,
    content_type text,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_events_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_events_key_unique UNIQUE (tenant_id, endpoint_id, event_key),
    CONSTRAINT webhook_events_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_events_tenant_received ON webhook_events (tenant_id, received_at DESC);

-- The job queue. `run_at` is when the job may next be claimed: for `pending` the (backoff)
-- schedule, for `processing` the end of the lease, after which another worker may take it.
CREATE TABLE jobs (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind          text NOT NULL,
    ref_id        uuid,
    status        text NOT NULL DEFAULT 'pending' CONSTRAINT jobs_status_valid
                  CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    attempts      integer NOT NULL DEFAULT 0,
    max_attempts  integer NOT NULL CONSTRAINT jobs_max_attempts_positive CHECK (max_attempts > 0),
    retry_base_ms integer NOT NULL DEFAULT 1000,
    run_at        timestamptz NOT NULL DEFAULT now(),
    locked_by     text,
    last_error    text,
    last_run_id   uuid,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    CONSTRAINT jobs_pkey PRIMARY KEY (id)
);
-- Claims walk the distinct orgs with runnable work and take the oldest per org.
CREATE INDEX jobs_runnable ON jobs (tenant_id, run_at) WHERE status IN ('pending', 'processing');
CREATE INDEX jobs_ref ON jobs (tenant_id, ref_id);

-- One row per attempt (seed 000's agent_runs): what ran, for which job, how it ended.
CREATE TABLE agent_runs (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    job_id       uuid,
    kind         text NOT NULL,
    attempt      integer NOT NULL,
    status       text NOT NULL CONSTRAINT agent_runs_status_valid CHECK (status IN ('succeeded', 'failed')),
    error        text,
    input        jsonb,
    worker       text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agent_runs_pkey PRIMARY KEY (id)
);
CREATE INDEX agent_runs_job ON agent_runs (tenant_id, job_id);

SELECT app_tenant_table('webhook_endpoints');
SELECT app_tenant_table('webhook_secrets');
SELECT app_tenant_table('webhook_events');
SELECT app_tenant_table('jobs');
SELECT app_tenant_table('agent_runs');

DO $$
BEGIN
    -- Resolve an endpoint (and its secrets) before the org is known.
    EXECUTE format('CREATE POLICY platform_access ON webhook_endpoints FOR SELECT TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'')', current_user);
    EXECUTE format('CREATE POLICY platform_access ON webhook_secrets FOR SELECT TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'')', current_user);
    -- Claim jobs of every org (and read the events they refer to).
    EXECUTE format('CREATE POLICY platform_access ON jobs FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', current_user);
    EXECUTE format('CREATE POLICY platform_access ON webhook_events FOR SELECT TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'')', current_user);
END
$$;
