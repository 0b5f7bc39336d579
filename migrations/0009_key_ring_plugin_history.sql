-- Issue #17, key ring: each replica's ring of secret keys, by key id only (never a key), so a
-- replica starting with a ring that differs from the others' says so. A platform table,
-- closed to the restricted role. Rows of replicas that stopped refreshing are ignored.
CREATE TABLE secret_key_rings (
    replica  text PRIMARY KEY CONSTRAINT secret_key_rings_replica_len CHECK (length(replica) BETWEEN 1 AND 64),
    -- Newest (sealing) key first; each 8 hex digits.
    key_ids  text[] NOT NULL CONSTRAINT secret_key_rings_key_ids_valid CHECK (cardinality(key_ids) >= 1),
    seen_at  timestamptz NOT NULL DEFAULT now()
);
