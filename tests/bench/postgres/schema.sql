-- The registry's data model as a team would build it in PostgreSQL: an append-only log whose
-- SHA-256 chain is computed inside each transaction (pgcrypto), a key table and binding
-- intervals with the natural indexes. Used by tests/bench/run.sh for the comparison.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

-- The chain's head: one row, updated by every append, which serialises appends exactly as the
-- registry's single writer does.
CREATE TABLE head (
    id       boolean PRIMARY KEY DEFAULT true CHECK (id),
    position bigint NOT NULL,
    hash     bytea  NOT NULL
);
INSERT INTO head VALUES (true, -1, digest('', 'sha256'));

CREATE TABLE log (
    position    bigint      PRIMARY KEY,
    recorded_at timestamptz NOT NULL,
    request_id  uuid        NOT NULL UNIQUE,
    body        bytea       NOT NULL,
    hash        bytea       NOT NULL  -- SHA-256(previous hash || body)
);

CREATE TABLE keys (
    fingerprint    bytea       PRIMARY KEY,
    operator_id    text        NOT NULL,
    public_key     bytea       NOT NULL,
    meter_serial   text        NOT NULL,
    state          smallint    NOT NULL,
    effective_from timestamptz NOT NULL,
    position       bigint      NOT NULL REFERENCES log
);
CREATE INDEX keys_by_serial ON keys (meter_serial);

CREATE TABLE bindings (
    evse_id     text        NOT NULL,
    valid_from  timestamptz NOT NULL,
    valid_until timestamptz,
    fingerprint bytea       NOT NULL REFERENCES keys,
    PRIMARY KEY (evse_id, valid_from)
);
CREATE INDEX bindings_by_key ON bindings (fingerprint);

-- One durable registration: append the event to the chain and project it, in one transaction.
CREATE FUNCTION register(evse text, serial text, public_key bytea, at timestamptz)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    body bytea := convert_to(json_build_object('register', json_build_object(
        'evse_id', evse, 'meter_serial', serial, 'public_key', encode(public_key, 'hex'),
        'effective_at', at))::text, 'UTF8');
    pos bigint;
    h bytea;
BEGIN
    UPDATE head SET position = head.position + 1, hash = digest(head.hash || body, 'sha256')
        RETURNING head.position, head.hash INTO pos, h;
    INSERT INTO log VALUES (pos, clock_timestamp(), gen_random_uuid(), body, h);
    INSERT INTO keys VALUES (digest(public_key, 'sha256'), 'DE*PGB', public_key, serial, 2, at, pos);
    INSERT INTO bindings VALUES (evse, at, NULL, digest(public_key, 'sha256'));
    RETURN pos;
END $$;
