-- Shared rate limits (issue #17, "Shared limits on an existing engine"). Platform tables: the
-- owner role only (no grant to gateway_app), used through the owner pool like job_workers.
--
-- ratelimit_gcra: one row per (bucket, org or user) that replicas share, holding the bucket's
-- GCRA state: `tat`, its theoretical arrival time in seconds since the epoch by the database's
-- clock (the only clock, so replicas' clocks never disagree). Replicas lease a few tokens at a
-- time from it (`granted`: what the last lease got). UNLOGGED: no WAL per lease; a crash
-- empties it, which leaves every bucket full, the same as a restart of one gateway did.
CREATE UNLOGGED TABLE ratelimit_gcra (
    key      text NOT NULL CONSTRAINT ratelimit_gcra_key_len CHECK (length(key) BETWEEN 1 AND 400),
    tat      double precision NOT NULL,
    granted  integer NOT NULL,
    seen     double precision NOT NULL,
    CONSTRAINT ratelimit_gcra_pkey PRIMARY KEY (key)
);

-- gateway_replicas: every serving replica's heartbeat; the live ones (a fresh heartbeat) split
-- the limits between them when the shared store is unreachable, and the per-org plugin caps
-- always. Apart from job_workers because a replica may run no job workers.
CREATE TABLE gateway_replicas (
    id            text NOT NULL CONSTRAINT gateway_replicas_id_len CHECK (length(id) BETWEEN 1 AND 200),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT gateway_replicas_pkey PRIMARY KEY (id)
);
