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
-- Each statement is a query returning one jsonb, `{"n": affected, "rows": [[…], …]}`. It is
-- given the tenant ($1), every statement's values ($2, text[]) and the results so far ($3),
-- from which it reads the cells of earlier statements it uses.
CREATE FUNCTION gateway_batch(tenant uuid, statements text[], params text[]) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
AS $$
DECLARE
    results jsonb := '[]'::jsonb;
    r jsonb;
BEGIN
    FOR i IN 1 .. coalesce(array_length(statements, 1), 0) LOOP
        EXECUTE statements[i] INTO r USING tenant, params, results;
        results := results || jsonb_build_array(r);
    END LOOP;
    RETURN results;
END
$$;

REVOKE ALL ON FUNCTION gateway_batch(uuid, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION gateway_batch(uuid, text[], text[]) TO gateway_app;
