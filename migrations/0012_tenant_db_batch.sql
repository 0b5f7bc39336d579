-- `tenant-db.batch` (WIT gateway:plugin@0.2.0): several plugin statements in one round trip.
--
-- The host builds every statement (`db::structured`, identifiers from the schema, tenant
-- filter in the text, values as elements of `params`) and checks its grants before calling
-- this. The function only runs them, in order, as the caller: SECURITY INVOKER, so row-level
-- security applies as `gateway_app` exactly as for separate statements. Each EXECUTE takes a
-- fresh snapshot (a volatile function in READ COMMITTED), so a statement sees the writes of
-- those before it and what other transactions committed before it began: a lock followed by a
-- read behaves as two calls would.
--
-- Statement N runs as `/* batch:N */ …`: the error context quotes it, which is how the host
-- names the statement that failed.
--
-- Each statement is a query returning one jsonb, `{"n": affected, "rows": [[…], …]}`. It is
-- given the tenant ($1), every statement's values ($2, text[]) and the results so far ($3),
-- from which it reads the cells of earlier statements it uses.
--
-- Plans: a dynamic statement is parsed and planned on every EXECUTE, which made a batch cost
-- more database CPU than the separate (prepared, cached) statements it replaces. So each
-- statement text is prepared once per connection (`gwb_<md5 of its text>`, a session-level
-- setting remembering that it was) and executed by name, its arguments passed as quoted
-- literals (`format('%L')`, the server's own quoting). At most 256 texts are prepared per
-- connection; past that, a new text runs as a plain dynamic statement. A prepared statement
-- outlives a rolled-back transaction while the setting does not, hence the catalogue check.
CREATE FUNCTION gateway_batch(tenant uuid, statements text[], params text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    results jsonb := '[]'::jsonb;
    r jsonb;
    stmt_name text;
    mode text;
BEGIN
    FOR i IN 1 .. coalesce(array_length(statements, 1), 0) LOOP
        stmt_name := 'gwb_' || md5(statements[i]);
        mode := current_setting('gateway.' || stmt_name, true);
        IF mode IS NULL OR mode = '' THEN
            IF EXISTS (SELECT 1 FROM pg_prepared_statements p WHERE p.name = stmt_name) THEN
                mode := 'p';
            ELSIF (SELECT count(*) FROM pg_prepared_statements p WHERE p.name LIKE 'gwb\_%') < 256 THEN
                EXECUTE format('PREPARE %I (uuid, text[], jsonb) AS %s', stmt_name, statements[i]);
                mode := 'p';
            ELSE
                mode := 'd';
            END IF;
            PERFORM set_config('gateway.' || stmt_name, mode, false);
        END IF;
        IF mode = 'p' THEN
            EXECUTE format('/* batch:%s */ EXECUTE %I(%L, %L, %L)', i - 1, stmt_name, tenant, params, results) INTO r;
        ELSE
            EXECUTE format('/* batch:%s */ ', i - 1) || statements[i] INTO r USING tenant, params, results;
        END IF;
        results := results || jsonb_build_array(r);
    END LOOP;
    RETURN results;
END
$$;

REVOKE ALL ON FUNCTION gateway_batch(uuid, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gateway_batch(uuid, text[], text[]) TO gateway_app;
