-- The social monitor's record. Times are milliseconds since the epoch; hashes are 64-bit, stored as signed integers.
CREATE TABLE IF NOT EXISTS so_items (
    seq          BIGSERIAL PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,  -- hex of the hash of (source, the source's own id)
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    author       TEXT NOT NULL,
    text         TEXT NOT NULL,
    url          TEXT,
    at_ms        BIGINT NOT NULL,
    received_ms  BIGINT NOT NULL,
    language     TEXT NOT NULL,
    assets       TEXT NOT NULL,         -- space-separated symbols, e.g. "BTC ETH"
    sentiment    DOUBLE PRECISION NOT NULL,
    score        DOUBLE PRECISION NOT NULL,
    priority     TEXT NOT NULL,         -- low | normal | high
    content_hash BIGINT NOT NULL,
    simhash      BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS so_items_at ON so_items (at_ms);
CREATE INDEX IF NOT EXISTS so_items_received ON so_items (received_ms);
CREATE TABLE IF NOT EXISTS so_item_assets (
    item_seq  BIGINT NOT NULL,
    asset     TEXT NOT NULL,
    at_ms     BIGINT NOT NULL,
    sentiment DOUBLE PRECISION NOT NULL,
    score     DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (asset, item_seq)
);
CREATE INDEX IF NOT EXISTS so_item_assets_at ON so_item_assets (at_ms);
CREATE TABLE IF NOT EXISTS so_cursors (
    source     TEXT PRIMARY KEY,
    cursor     TEXT NOT NULL,           -- the source's typed cursor as JSON
    updated_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS so_skips (
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    n      BIGINT NOT NULL,
    PRIMARY KEY (source, reason)
);
