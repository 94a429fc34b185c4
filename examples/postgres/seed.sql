-- Order versions for the ReadPostgres example: one row per version of an order (id is the
-- primary key, updated_at the cursor). A few rows break the orders contract on purpose.
CREATE TABLE IF NOT EXISTS order_versions (
    id          bigint PRIMARY KEY,
    order_id    bigint NOT NULL,
    customer_id bigint NOT NULL,
    region      text,
    status      text,
    amount      numeric(18, 2),
    quantity    integer,
    is_gift     boolean,
    promo_code  text,
    channel     text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS order_versions_cursor ON order_versions (updated_at, id);
INSERT INTO order_versions
SELECT g, 1 + g / 2, 1 + g % 997,
       (ARRAY['north', 'south', 'east', 'west', 'central'])[1 + g % 5],
       (ARRAY['placed', 'paid', 'shipped', 'delivered'])[1 + g % 4],
       round((g % 50000) / 100.0 + 1, 2), 1 + g % 9, g % 7 = 0,
       CASE WHEN g % 3 = 0 THEN 'SPRING' || (g % 100) END, 'web',
       timestamptz '2024-03-01' + (g / 2) * interval '1 minute',
       timestamptz '2024-03-01' + g * interval '1 minute'
FROM generate_series(1, 10000) g
ON CONFLICT (id) DO NOTHING;
-- Rows the contract rejects: a negative amount, an unknown region, a quantity of zero.
UPDATE order_versions SET amount = -5 WHERE id = 101;
UPDATE order_versions SET region = 'atlantis' WHERE id = 202;
UPDATE order_versions SET quantity = 0 WHERE id = 303;
