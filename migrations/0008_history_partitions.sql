-- History that does not grow forever (issue #17, "History and secrets"): `webhook_events`,
-- `jobs`, `agent_runs` and `crm_outbox` become tables partitioned by day (UTC) on a time
-- column, so that retention is dropping whole partitions rather than deleting rows.
-- docs/scaling.md ("History: partitions and retention") is the contract.
--
--   webhook_events  RANGE (received_at)
--   jobs            RANGE (finished_at): a live job (pending, processing) has no finished_at
--                   and so lives in the default partition `jobs_default`; finishing a job
--                   moves it into its day. Retention drops only day partitions, so it can never
--                   drop a job that has not finished, and the queue's statements (which say
--                   `finished_at IS NULL`) touch only the live partition however long the
--                   history is.
--   agent_runs      RANGE (finished_at)
--   crm_outbox      RANGE (created_at)
--
-- Every table has a default partition, so an insert never fails when the gateway has not
-- created a day ahead (it creates days ahead in a background task; app_history_partition moves
-- rows of a day out of the default partition when it creates that day).
--
-- A unique constraint on a partitioned table must include the partition key, so an event's
-- dedup key (tenant, endpoint, event key) can no longer be unique on `webhook_events`: it moves
-- to `webhook_event_keys`, a plain table with its own, longer retention (idempotency records
-- outlive the history, and providers' retry windows).
--
-- Partitions are tenant tables like their parents: RLS enabled and forced with the same
-- tenant policy, and no privilege for `gateway_app` (it reaches rows through the parent only,
-- whose policies apply then).

-- The partition of `parent` holding UTC day `day`: created (RLS forced, tenant policy) if
-- missing, after moving that day's rows out of the default partition. Returns whether it was
-- created. The caller serialises (migration, or the gateway's maintenance under an advisory
-- lock).
CREATE FUNCTION app_history_partition(parent regclass, day date) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
    part text := base || '_p' || to_char(day, 'YYYYMMDD');
    dflt text := base || '_default';
    key text;
    lo timestamptz := day::timestamp AT TIME ZONE 'UTC';
    hi timestamptz := (day + 1)::timestamp AT TIME ZONE 'UTC';
    stray bigint;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname INTO STRICT key FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent;
    -- Creating a partition locks the parent; take it first so that moving rows out of the
    -- default partition and creating the day are one step for everybody else.
    EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', parent);
    EXECUTE format('SELECT count(*) FROM %I WHERE %I >= %L AND %I < %L', dflt, key, lo, key, hi) INTO stray;
    IF stray > 0 THEN
        EXECUTE format('CREATE TEMP TABLE app_history_moving ON COMMIT DROP AS SELECT * FROM %I WHERE %I >= %L AND %I < %L',
                       dflt, key, lo, key, hi);
        EXECUTE format('DELETE FROM %I WHERE %I >= %L AND %I < %L', dflt, key, lo, key, hi);
    END IF;
    EXECUTE format('CREATE TABLE %I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)', part, parent, lo, hi);
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I AS PERMISSIVE FOR ALL TO PUBLIC '
                   'USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', part);
    EXECUTE format('CREATE POLICY platform_access ON %I FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', part, current_user);
    IF stray > 0 THEN
        EXECUTE format('INSERT INTO %I SELECT * FROM app_history_moving', part);
        DROP TABLE app_history_moving;
    END IF;
    RETURN true;
END
$$;

-- The default partition of `parent` (created once, here), a tenant table like the days.
CREATE FUNCTION app_history_default(parent regclass) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    dflt text := (SELECT relname FROM pg_class WHERE oid = parent) || '_default';
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF %s DEFAULT', dflt, parent);
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', dflt);
    EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', dflt);
    EXECUTE format('CREATE POLICY tenant_isolation ON %I AS PERMISSIVE FOR ALL TO PUBLIC '
                   'USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant())', dflt);
    EXECUTE format('CREATE POLICY platform_access ON %I FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', dflt, current_user);
END
$$;

-- Drops the day partitions of `parent` that end at or before `cutoff` (UTC day), and deletes
-- rows older than it from the default partition (there only when the days were late). For
-- `jobs` the key is finished_at, so neither step can touch a job that has not finished.
-- Returns the partitions dropped.
CREATE FUNCTION app_history_drop_before(parent regclass, cutoff date) RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    base text := (SELECT relname FROM pg_class WHERE oid = parent);
    key text;
    part text;
BEGIN
    SELECT a.attname INTO STRICT key FROM pg_partitioned_table p
        JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
        WHERE p.partrelid = parent;
    FOR part IN
        SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent AND c.relname ~ ('^' || base || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < cutoff
        ORDER BY 1
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        RETURN NEXT part;
    END LOOP;
    EXECUTE format('DELETE FROM %I WHERE %I < %L', base || '_default', key, cutoff::timestamp AT TIME ZONE 'UTC');
END
$$;

-- The days of `parent` from `first` to `last` (inclusive).
CREATE FUNCTION app_history_cover(parent regclass, first date, last date) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::integer FROM generate_series(first, last, interval '1 day') d
    WHERE app_history_partition(parent, d::date)
$$;

-- ---------------------------------------------------------------------------------------
-- webhook_events and its dedup keys.

ALTER TABLE webhook_events RENAME TO webhook_events_old;
ALTER TABLE webhook_events_old RENAME CONSTRAINT webhook_events_pkey TO webhook_events_old_pkey;
ALTER TABLE webhook_events_old RENAME CONSTRAINT webhook_events_key_unique TO webhook_events_old_key_unique;
ALTER TABLE webhook_events_old RENAME CONSTRAINT webhook_events_endpoint_fkey TO webhook_events_old_endpoint_fkey;
ALTER TABLE webhook_events_old RENAME CONSTRAINT webhook_events_key_len TO webhook_events_old_key_len;
ALTER INDEX webhook_events_tenant_received RENAME TO webhook_events_old_tenant_received;

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
    CONSTRAINT webhook_events_pkey PRIMARY KEY (id, received_at),
    CONSTRAINT webhook_events_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
) PARTITION BY RANGE (received_at);
CREATE INDEX webhook_events_tenant_received ON webhook_events (tenant_id, received_at DESC);

-- An event key seen, once per (tenant, endpoint, key), kept for the idempotency window
-- (GATEWAY_IDEMPOTENCY_DAYS, longer than the history and than any provider retries): a
-- delivery whose key is here is a duplicate even when its event has left the history.
CREATE TABLE webhook_event_keys (
    tenant_id    uuid NOT NULL,
    endpoint_id  uuid NOT NULL,
    event_key    text NOT NULL,
    event_id     uuid NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT webhook_event_keys_pkey PRIMARY KEY (tenant_id, endpoint_id, event_key),
    CONSTRAINT webhook_event_keys_endpoint_fkey FOREIGN KEY (tenant_id, endpoint_id)
        REFERENCES webhook_endpoints (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_event_keys_received ON webhook_event_keys (received_at);

-- ---------------------------------------------------------------------------------------
-- jobs: no primary key (a unique constraint would have to include finished_at, which a live
-- job does not have); ids are random UUIDs, unique by construction, and indexed.

ALTER TABLE jobs RENAME TO jobs_old;
ALTER TABLE jobs_old RENAME CONSTRAINT jobs_pkey TO jobs_old_pkey;
ALTER TABLE jobs_old RENAME CONSTRAINT jobs_status_valid TO jobs_old_status_valid;
ALTER TABLE jobs_old RENAME CONSTRAINT jobs_max_attempts_positive TO jobs_old_max_attempts_positive;
ALTER TABLE jobs_old RENAME CONSTRAINT jobs_tenant_id_fkey TO jobs_old_tenant_id_fkey;
ALTER INDEX jobs_runnable RENAME TO jobs_old_runnable;
ALTER INDEX jobs_ref RENAME TO jobs_old_ref;
ALTER INDEX jobs_processing_by_worker RENAME TO jobs_old_processing_by_worker;

CREATE TABLE jobs (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL CONSTRAINT jobs_tenant_id_fkey REFERENCES orgs (id) ON DELETE CASCADE,
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
    -- For a webhook job, its event's received_at (the event's partition key).
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    payload       jsonb,
    -- Finished is exactly done or dead: what keeps live jobs out of the day partitions.
    CONSTRAINT jobs_finished_when_final CHECK ((finished_at IS NOT NULL) = (status IN ('done', 'dead')))
) PARTITION BY RANGE (finished_at);
CREATE INDEX jobs_id ON jobs (id);
CREATE INDEX jobs_runnable ON jobs (tenant_id, run_at) WHERE status IN ('pending', 'processing');
CREATE INDEX jobs_ref ON jobs (tenant_id, ref_id);
CREATE INDEX jobs_processing_by_worker ON jobs (locked_by) WHERE status = 'processing';
-- The queue depth metric counts dead jobs without reading the history.
CREATE INDEX jobs_dead ON jobs (tenant_id) WHERE status = 'dead';

-- ---------------------------------------------------------------------------------------
-- agent_runs

ALTER TABLE agent_runs RENAME TO agent_runs_old;
ALTER TABLE agent_runs_old RENAME CONSTRAINT agent_runs_pkey TO agent_runs_old_pkey;
ALTER TABLE agent_runs_old RENAME CONSTRAINT agent_runs_status_valid TO agent_runs_old_status_valid;
ALTER INDEX agent_runs_job RENAME TO agent_runs_old_job;
ALTER INDEX agent_runs_recent RENAME TO agent_runs_old_recent;

CREATE TABLE agent_runs (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL,
    job_id       uuid,
    kind         text NOT NULL,
    attempt      integer NOT NULL,
    status       text NOT NULL CONSTRAINT agent_runs_status_valid CHECK (status IN ('succeeded', 'failed', 'skipped')),
    error        text,
    input        jsonb,
    worker       text,
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now(),
    output       jsonb,
    CONSTRAINT agent_runs_pkey PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at);
CREATE INDEX agent_runs_job ON agent_runs (tenant_id, job_id);
CREATE INDEX agent_runs_recent ON agent_runs (tenant_id, finished_at DESC);

-- ---------------------------------------------------------------------------------------
-- crm_outbox (written by plugins through tenant-db: topic and payload; the rest is the
-- database's).

ALTER TABLE crm_outbox RENAME TO crm_outbox_old;
ALTER TABLE crm_outbox_old RENAME CONSTRAINT crm_outbox_pkey TO crm_outbox_old_pkey;
ALTER TABLE crm_outbox_old RENAME CONSTRAINT crm_outbox_topic_valid TO crm_outbox_old_topic_valid;
ALTER INDEX crm_outbox_unpublished RENAME TO crm_outbox_old_unpublished;

CREATE TABLE crm_outbox (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    topic         text NOT NULL CONSTRAINT crm_outbox_topic_valid
                  CHECK (topic IN ('contact.updated.v1', 'event.tracked.v1')),
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    CONSTRAINT crm_outbox_pkey PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX crm_outbox_unpublished ON crm_outbox (created_at) WHERE published_at IS NULL;

-- ---------------------------------------------------------------------------------------
-- Partitions: the default, every UTC day the existing rows fall on, and today and the next
-- week; then the rows, and the old tables go.

SELECT app_history_default(t) FROM unnest(ARRAY['webhook_events', 'jobs', 'agent_runs', 'crm_outbox']::regclass[]) t;

SELECT app_history_partition('webhook_events', d)
    FROM (SELECT DISTINCT (received_at AT TIME ZONE 'UTC')::date d FROM webhook_events_old) x;
SELECT app_history_partition('jobs', d)
    FROM (SELECT DISTINCT (finished_at AT TIME ZONE 'UTC')::date d FROM jobs_old WHERE finished_at IS NOT NULL) x;
SELECT app_history_partition('agent_runs', d)
    FROM (SELECT DISTINCT (finished_at AT TIME ZONE 'UTC')::date d FROM agent_runs_old) x;
SELECT app_history_partition('crm_outbox', d)
    FROM (SELECT DISTINCT (created_at AT TIME ZONE 'UTC')::date d FROM crm_outbox_old) x;
SELECT app_history_cover(t, (now() AT TIME ZONE 'UTC')::date, (now() AT TIME ZONE 'UTC')::date + 7)
    FROM unnest(ARRAY['webhook_events', 'jobs', 'agent_runs', 'crm_outbox']::regclass[]) t;

-- The owner role reads the old tables whole (their RLS is forced, which would hide every row
-- from an owner that is not a superuser).
ALTER TABLE webhook_events_old NO FORCE ROW LEVEL SECURITY;
ALTER TABLE jobs_old NO FORCE ROW LEVEL SECURITY;
ALTER TABLE agent_runs_old NO FORCE ROW LEVEL SECURITY;
ALTER TABLE crm_outbox_old NO FORCE ROW LEVEL SECURITY;

INSERT INTO webhook_events SELECT id, tenant_id, endpoint_id, provider, event_key, event_type, body, content_type, received_at
    FROM webhook_events_old;
INSERT INTO webhook_event_keys (tenant_id, endpoint_id, event_key, event_id, received_at)
    SELECT tenant_id, endpoint_id, event_key, id, received_at FROM webhook_events_old;
-- A job finished before this migration without a finished_at (none should be) gets one.
INSERT INTO jobs SELECT id, tenant_id, kind, ref_id, status, attempts, max_attempts, retry_base_ms, run_at, locked_by,
                        last_error, last_run_id, created_at, updated_at,
                        CASE WHEN status IN ('done', 'dead') THEN COALESCE(finished_at, updated_at) END, payload
    FROM jobs_old;
INSERT INTO agent_runs SELECT id, tenant_id, job_id, kind, attempt, status, error, input, worker, started_at, finished_at, output
    FROM agent_runs_old;
INSERT INTO crm_outbox SELECT id, tenant_id, topic, payload, created_at, published_at FROM crm_outbox_old;

DROP TABLE webhook_events_old, jobs_old, agent_runs_old, crm_outbox_old;

SELECT app_tenant_table('webhook_events');
SELECT app_tenant_table('webhook_event_keys');
SELECT app_tenant_table('jobs');
SELECT app_tenant_table('agent_runs');
SELECT app_tenant_table('crm_outbox');

DO $$
BEGIN
    -- As in 0004: claim jobs of every org, and read the events they refer to.
    EXECUTE format('CREATE POLICY platform_access ON jobs FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', current_user);
    EXECUTE format('CREATE POLICY platform_access ON webhook_events FOR SELECT TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'')', current_user);
    -- Retention deletes expired keys of every org.
    EXECUTE format('CREATE POLICY platform_access ON webhook_event_keys FOR DELETE TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'')', current_user);
END
$$;
