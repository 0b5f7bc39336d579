-- The optimizer (issue: optimizer; seed 000): AI campaign changes logged with before/after,
-- approved by a person or applied by `system:auto`, rolled back; tenant settings; per-step
-- statistics the optimizer reads; fail-soft chains' outcomes (agent_runs); per-org schedules
-- whose slots run once across replicas. Every table is a tenant table.

-- Tenant settings (seed 000's `tenant_settings`). No row: the defaults.
CREATE TABLE tenant_settings (
    tenant_id                uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    -- Safe by default: proposals wait for a person until an admin turns this off.
    require_manual_approval  boolean NOT NULL DEFAULT true,
    -- The tenant's own webhook for chain notifications (https; signed with notify_secret).
    notify_url               text CONSTRAINT tenant_settings_notify_url_len CHECK (notify_url IS NULL OR length(notify_url) BETWEEN 1 AND 2048),
    -- Sealed (AES-256-GCM under the gateway's secret key, bound to the org id).
    notify_secret            bytea,
    -- The chat-completions model the optimizer asks, when the org has provider `openai`.
    llm_model                text CONSTRAINT tenant_settings_llm_model_len CHECK (llm_model IS NULL OR length(llm_model) BETWEEN 1 AND 100),
    updated_by               uuid,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_settings_pkey PRIMARY KEY (tenant_id)
);

-- Per sequence step counts, recounted from campaign_activity (the chain's "analytics update"
-- step, and before every optimizer run). seq_number 0: activity tied to no step.
CREATE TABLE campaign_step_stats (
    tenant_id     uuid NOT NULL,
    campaign_id   uuid NOT NULL,
    seq_number    integer NOT NULL CONSTRAINT campaign_step_stats_seq_number_valid CHECK (seq_number >= 0),
    sent          integer NOT NULL DEFAULT 0,
    opened        integer NOT NULL DEFAULT 0,
    clicked       integer NOT NULL DEFAULT 0,
    replied       integer NOT NULL DEFAULT 0,
    bounced       integer NOT NULL DEFAULT 0,
    unsubscribed  integer NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_step_stats_pkey PRIMARY KEY (tenant_id, campaign_id, seq_number),
    CONSTRAINT campaign_step_stats_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE
);

-- Every AI change (seed 000's `campaign_optimizations`), proposed, reviewed, applied, rolled
-- back. `changes` is an array of {asset_type, asset_id, field, previous_value, new_value,
-- auto_applied, agent}; `base_version` the campaign's sequence_version it was computed on.
CREATE TABLE campaign_optimizations (
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id          uuid NOT NULL,
    campaign_id        uuid NOT NULL,
    optimization_type  text NOT NULL CONSTRAINT campaign_optimizations_type_valid
                       CHECK (optimization_type IN ('update_subject', 'update_body', 'update_delay',
                                                    'pause_campaign', 'stop_campaign', 'rollback')),
    summary            text NOT NULL CONSTRAINT campaign_optimizations_summary_len CHECK (length(summary) BETWEEN 1 AND 500),
    rationale          text NOT NULL CONSTRAINT campaign_optimizations_rationale_len CHECK (length(rationale) BETWEEN 1 AND 4000),
    changes            jsonb NOT NULL CONSTRAINT campaign_optimizations_changes_array CHECK (jsonb_typeof(changes) = 'array'),
    source             text NOT NULL CONSTRAINT campaign_optimizations_source_valid CHECK (source IN ('rules', 'llm', 'rollback')),
    agent              text NOT NULL CONSTRAINT campaign_optimizations_agent_len CHECK (length(agent) BETWEEN 1 AND 100),
    base_version       integer NOT NULL,
    result_version     integer,
    status             text NOT NULL DEFAULT 'proposed' CONSTRAINT campaign_optimizations_status_valid
                       CHECK (status IN ('proposed', 'approved', 'rejected', 'expired', 'superseded',
                                         'applying', 'applied', 'failed', 'rolled_back')),
    -- One change per (campaign, base version, type, asset): the same input proposes once.
    dedupe_key         text NOT NULL CONSTRAINT campaign_optimizations_dedupe_key_len CHECK (length(dedupe_key) BETWEEN 1 AND 500),
    rollback_of        uuid,
    run_id             uuid,
    job_id             uuid,
    error              text CONSTRAINT campaign_optimizations_error_len CHECK (error IS NULL OR length(error) <= 500),
    -- Actors: `user:<uuid>`, `super_admin:<uuid>`, `system:auto`, `system:sync`.
    reviewed_by        text,
    reviewed_at        timestamptz,
    applied_by         text,
    applied_at         timestamptz,
    rolled_back_by     text,
    rolled_back_at     timestamptz,
    expires_at         timestamptz NOT NULL DEFAULT now() + interval '7 days',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT campaign_optimizations_pkey PRIMARY KEY (id),
    CONSTRAINT campaign_optimizations_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT campaign_optimizations_dedupe_key_key UNIQUE (tenant_id, dedupe_key),
    CONSTRAINT campaign_optimizations_campaign_fkey FOREIGN KEY (tenant_id, campaign_id)
        REFERENCES campaigns (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT campaign_optimizations_rollback_of_fkey FOREIGN KEY (tenant_id, rollback_of)
        REFERENCES campaign_optimizations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX campaign_optimizations_campaign ON campaign_optimizations (tenant_id, campaign_id, created_at DESC);
CREATE INDEX campaign_optimizations_status ON campaign_optimizations (tenant_id, status, created_at DESC);
-- A change is rolled back once.
CREATE UNIQUE INDEX campaign_optimizations_one_rollback ON campaign_optimizations (tenant_id, rollback_of)
    WHERE rollback_of IS NOT NULL;

-- The audit trail: one row per state a change enters (its insert included), written by the
-- trigger below, so no code path can move a change without leaving one.
CREATE TABLE optimization_transitions (
    id               bigint GENERATED ALWAYS AS IDENTITY,
    tenant_id        uuid NOT NULL,
    optimization_id  uuid NOT NULL,
    from_status      text,
    to_status        text NOT NULL,
    actor            text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT optimization_transitions_pkey PRIMARY KEY (id),
    CONSTRAINT optimization_transitions_optimization_fkey FOREIGN KEY (tenant_id, optimization_id)
        REFERENCES campaign_optimizations (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX optimization_transitions_optimization ON optimization_transitions (tenant_id, optimization_id, id);

-- The state machine, enforced here whatever the caller:
--   proposed → approved | rejected | expired | superseded
--   approved → applying;  applying → applied | failed;  applied → rolled_back
-- Inserts start at `proposed`; terminal states (rejected, expired, superseded, failed,
-- rolled_back) and a change's identity (campaign, type, changes, base version, dedupe key,
-- rollback_of, created_at) never change. Violations raise check_violation naming the
-- constraint `campaign_optimizations_transition`, which the gateway maps to 409 CONFLICT.
CREATE FUNCTION campaign_optimizations_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'proposed' THEN
            RAISE EXCEPTION 'a change starts as proposed, not %', NEW.status
                USING ERRCODE = 'check_violation', CONSTRAINT = 'campaign_optimizations_transition';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.status IN ('rejected', 'expired', 'superseded', 'failed', 'rolled_back') THEN
        RAISE EXCEPTION 'the change is %, which is final', OLD.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'campaign_optimizations_transition';
    END IF;
    IF NEW.campaign_id IS DISTINCT FROM OLD.campaign_id OR NEW.optimization_type IS DISTINCT FROM OLD.optimization_type
       OR NEW.changes IS DISTINCT FROM OLD.changes OR NEW.base_version IS DISTINCT FROM OLD.base_version
       OR NEW.dedupe_key IS DISTINCT FROM OLD.dedupe_key OR NEW.rollback_of IS DISTINCT FROM OLD.rollback_of
       OR NEW.created_at IS DISTINCT FROM OLD.created_at OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        RAISE EXCEPTION 'what a change is never changes'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'campaign_optimizations_transition';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
           (OLD.status = 'proposed' AND NEW.status IN ('approved', 'rejected', 'expired', 'superseded'))
        OR (OLD.status = 'approved' AND NEW.status = 'applying')
        OR (OLD.status = 'applying' AND NEW.status IN ('applied', 'failed'))
        OR (OLD.status = 'applied' AND NEW.status = 'rolled_back')) THEN
        RAISE EXCEPTION 'a change cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'check_violation', CONSTRAINT = 'campaign_optimizations_transition';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
CREATE TRIGGER campaign_optimizations_guard BEFORE INSERT OR UPDATE ON campaign_optimizations
    FOR EACH ROW EXECUTE FUNCTION campaign_optimizations_guard();

-- The actor is the transaction's `app.actor` (set by the gateway with set_config(..., true)),
-- else `system`.
CREATE FUNCTION campaign_optimizations_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO optimization_transitions (tenant_id, optimization_id, from_status, to_status, actor)
        VALUES (NEW.tenant_id, NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status,
                COALESCE(NULLIF(current_setting('app.actor', true), ''), 'system'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER campaign_optimizations_audit AFTER INSERT OR UPDATE ON campaign_optimizations
    FOR EACH ROW EXECUTE FUNCTION campaign_optimizations_audit();

-- Per-org schedules (kind `optimizer`): a 5-field cron expression in a time zone.
-- `next_run_at` is the next slot; a replica that finds it due claims the slot in
-- `schedule_runs` (its primary key makes a slot run once across replicas and restarts).
CREATE TABLE schedules (
    tenant_id    uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    kind         text NOT NULL CONSTRAINT schedules_kind_valid CHECK (kind IN ('optimizer')),
    cron         text NOT NULL CONSTRAINT schedules_cron_len CHECK (length(cron) BETWEEN 1 AND 100),
    timezone     text NOT NULL CONSTRAINT schedules_timezone_len CHECK (length(timezone) BETWEEN 1 AND 64),
    enabled      boolean NOT NULL DEFAULT true,
    next_run_at  timestamptz,
    updated_by   uuid,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedules_pkey PRIMARY KEY (tenant_id, kind)
);
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled;

CREATE TABLE schedule_runs (
    tenant_id   uuid NOT NULL,
    kind        text NOT NULL,
    slot        timestamptz NOT NULL,
    outcome     text NOT NULL CONSTRAINT schedule_runs_outcome_valid CHECK (outcome IN ('enqueued', 'skipped')),
    reason      text CONSTRAINT schedule_runs_reason_len CHECK (reason IS NULL OR length(reason) <= 500),
    job_id      uuid,
    run_id      uuid,
    replica     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT schedule_runs_pkey PRIMARY KEY (tenant_id, kind, slot),
    CONSTRAINT schedule_runs_schedule_fkey FOREIGN KEY (tenant_id, kind)
        REFERENCES schedules (tenant_id, kind) ON DELETE CASCADE
);

-- agent_runs: a run's outcome (what it proposed, sent, skipped) beside its input, and runs
-- that were skipped (a recent run already covered them).
ALTER TABLE agent_runs ADD COLUMN output jsonb;
ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_status_valid;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_status_valid CHECK (status IN ('succeeded', 'failed', 'skipped'));
CREATE INDEX agent_runs_recent ON agent_runs (tenant_id, finished_at DESC);

SELECT app_tenant_table('tenant_settings');
SELECT app_tenant_table('campaign_step_stats');
SELECT app_tenant_table('campaign_optimizations');
SELECT app_tenant_table('optimization_transitions');
SELECT app_tenant_table('schedules');
SELECT app_tenant_table('schedule_runs');
-- The audit trail is append-only for the gateway; changes are never deleted by it (an org's
-- deletion still cascades: referential actions run as the tables' owner).
REVOKE UPDATE, DELETE ON optimization_transitions FROM gateway_app;
REVOKE DELETE ON campaign_optimizations FROM gateway_app;

DO $$
BEGIN
    -- Every replica's scheduler finds due schedules of every org and claims their slots.
    EXECUTE format('CREATE POLICY platform_access ON schedules FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', current_user);
    EXECUTE format('CREATE POLICY platform_access ON schedule_runs FOR ALL TO %I '
                   'USING (current_setting(''app.scope'', true) = ''platform'') '
                   'WITH CHECK (current_setting(''app.scope'', true) = ''platform'')', current_user);
END
$$;
