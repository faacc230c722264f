-- The fleet: :keys registrations, chained exactly as register() does, in one transaction. The
-- head row is updated once at the end: a million updates of one row in one transaction would
-- make every later update walk the whole chain of row versions.
SELECT set_config('bench.keys', :'keys', false);
DO $$
DECLARE
    n   bigint := current_setting('bench.keys')::bigint;
    pos bigint;
    h   bytea;
    pk  bytea;
    body bytea;
    at  timestamptz := timestamptz '2026-01-01 00:00:00+00';
BEGIN
    SELECT head.position, head.hash INTO pos, h FROM head;
    FOR i IN 0 .. n - 1 LOOP
        pk := digest('key ' || i, 'sha256') || digest('pub ' || i, 'sha512');
        body := convert_to(json_build_object('register', json_build_object(
            'evse_id', 'DE*PGB*E' || i, 'meter_serial', 'PGB-' || i,
            'public_key', encode(pk, 'hex'), 'effective_at', at))::text, 'UTF8');
        pos := pos + 1;
        h := digest(h || body, 'sha256');
        INSERT INTO log VALUES (pos, clock_timestamp(), gen_random_uuid(), body, h);
        INSERT INTO keys VALUES (digest(pk, 'sha256'), 'DE*PGB', pk, 'PGB-' || i, 2, at, pos);
        INSERT INTO bindings VALUES ('DE*PGB*E' || i, at, NULL, digest(pk, 'sha256'));
    END LOOP;
    UPDATE head SET position = pos, hash = h;
END $$;
VACUUM ANALYZE;
