-- Liveness of job workers (issue: reliability). A claim is a lease, but a lease alone keeps a
-- dead worker's jobs counted against their org's concurrency until it runs out. Every
-- replica's workers keep a heartbeat row here; a processing job whose worker has no fresh
-- heartbeat is released at once by whichever replica notices (its lease is ended, so it is
-- runnable again and no longer counted). Platform table: the owner role only.

CREATE TABLE job_workers (
    id            text NOT NULL CONSTRAINT job_workers_id_len CHECK (length(id) BETWEEN 1 AND 200),
    started_at    timestamptz NOT NULL DEFAULT now(),
    heartbeat_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT job_workers_pkey PRIMARY KEY (id)
);

-- Finds the jobs a worker holds (release on restart, release of dead workers' jobs).
CREATE INDEX jobs_processing_by_worker ON jobs (locked_by) WHERE status = 'processing';
