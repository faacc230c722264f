-- The fleet: :keys registrations through the same function (one transaction for speed).
SELECT register('DE*PGB*E' || i, 'PGB-' || i, digest('key ' || i, 'sha256') || digest('pub ' || i, 'sha512'),
                timestamptz '2026-01-01 00:00:00+00')
FROM generate_series(0, :keys - 1) AS i;
ANALYZE;
