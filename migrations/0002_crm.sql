-- CRM event ingestion (seeds 000 and 001), used by the crm-track plugin through tenant-db.

-- Makes a table a tenant table: RLS enabled and forced, the one policy shape (USING and
-- WITH CHECK on app.tenant_id, closed when unset), and privileges for the restricted role.
-- Every tenant table from here on goes through it.
CREATE FUNCTION app_tenant_table(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', t);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s AS PERMISSIVE FOR ALL TO PUBLIC '
        'USING (tenant_id = app_current_tenant()) '
        'WITH CHECK (tenant_id = app_current_tenant())', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO gateway_app', t);
END
$$;

CREATE TABLE crm_contacts (
    id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    business_id  uuid,
    name         text CONSTRAINT crm_contacts_name_len CHECK (name IS NULL OR length(name) <= 200),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_contacts_pkey PRIMARY KEY (id),
    CONSTRAINT crm_contacts_tenant_id_id_key UNIQUE (tenant_id, id),
    CONSTRAINT crm_contacts_business_fkey FOREIGN KEY (tenant_id, business_id)
        REFERENCES businesses (tenant_id, id)
);

-- One identity (normalised email, E.164-ish phone, external id) belongs to one contact per
-- tenant: the explicit conflict target of every upsert.
CREATE TABLE contact_identities (
    tenant_id   uuid NOT NULL,
    type        text NOT NULL CONSTRAINT contact_identities_type_valid
                CHECK (type IN ('external_id', 'email', 'phone')),
    value       text NOT NULL CONSTRAINT contact_identities_value_len CHECK (length(value) BETWEEN 1 AND 320),
    contact_id  uuid NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contact_identities_tenant_type_value_key PRIMARY KEY (tenant_id, type, value),
    CONSTRAINT contact_identities_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES crm_contacts (tenant_id, id) ON DELETE CASCADE,
    CONSTRAINT contact_identities_phone_format CHECK (type <> 'phone' OR value ~ '^\+?[1-9][0-9]{6,15}$'),
    CONSTRAINT contact_identities_email_normalised CHECK (type <> 'email' OR value = lower(btrim(value)))
);
CREATE INDEX contact_identities_contact ON contact_identities (tenant_id, contact_id);

CREATE TABLE crm_events (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    contact_id    uuid NOT NULL,
    business_id   uuid,
    type          text NOT NULL CONSTRAINT crm_events_type_len CHECK (length(type) BETWEEN 1 AND 100),
    props         jsonb NOT NULL DEFAULT '{}' CONSTRAINT crm_events_props_object CHECK (jsonb_typeof(props) = 'object'),
    -- SHA-256 of the request body: the same idempotency key with another body is refused.
    request_hash  text,
    -- Identities that pointed at other contacts when this event was resolved (not merged).
    conflicts     jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT crm_events_pkey PRIMARY KEY (id),
    CONSTRAINT crm_events_contact_fkey FOREIGN KEY (tenant_id, contact_id)
        REFERENCES crm_contacts (tenant_id, id) ON DELETE CASCADE
);
-- Seed 001's idempotency index, unique per tenant so a duplicate can never be stored. Not
-- partial: the lookup `props->>'idemKey' = $key` does not imply `props ? 'idemKey'` to the
-- planner, and keyless events (NULL) never conflict in a unique index.
CREATE UNIQUE INDEX crm_events_idem_key ON crm_events (tenant_id, (props->>'idemKey'));
CREATE INDEX crm_events_contact_recent ON crm_events (tenant_id, contact_id, created_at DESC);
CREATE INDEX crm_events_recent ON crm_events (tenant_id, created_at DESC);

-- Transactional outbox for downstream consumers (drained by a later job).
CREATE TABLE crm_outbox (
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL,
    topic         text NOT NULL CONSTRAINT crm_outbox_topic_valid
                  CHECK (topic IN ('contact.updated.v1', 'event.tracked.v1')),
    payload       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    CONSTRAINT crm_outbox_pkey PRIMARY KEY (id)
);
CREATE INDEX crm_outbox_unpublished ON crm_outbox (created_at) WHERE published_at IS NULL;

SELECT app_tenant_table('crm_contacts');
SELECT app_tenant_table('contact_identities');
SELECT app_tenant_table('crm_events');
SELECT app_tenant_table('crm_outbox');
