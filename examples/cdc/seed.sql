-- The orders table whose changes the CDC example (orders.yaml) mirrors: 1,000 orders, then
-- updates and deletes. Rows 101 and 202 break the orders contract on purpose.
CREATE TABLE IF NOT EXISTS orders (
    order_id    bigint PRIMARY KEY,
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
