-- The social monitor's record. Times are milliseconds since the epoch; hashes are 64-bit, stored as signed integers.
CREATE TABLE IF NOT EXISTS so_items (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL UNIQUE,  -- hex of the hash of (source, the source's own id)
    source       TEXT NOT NULL,
    kind         TEXT NOT NULL,
    author       TEXT NOT NULL,
    text         TEXT NOT NULL,
    url          TEXT,
    at_ms        INTEGER NOT NULL,
    received_ms  INTEGER NOT NULL,
    language     TEXT NOT NULL,
    assets       TEXT NOT NULL,         -- space-separated symbols, e.g. "BTC ETH"
    sentiment    REAL NOT NULL,
    score        REAL NOT NULL,
    priority     TEXT NOT NULL,         -- low | normal | high
    content_hash INTEGER NOT NULL,
    simhash      INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS so_items_at ON so_items (at_ms);
CREATE INDEX IF NOT EXISTS so_items_received ON so_items (received_ms);
CREATE TABLE IF NOT EXISTS so_item_assets (
    item_seq  INTEGER NOT NULL,
    asset     TEXT NOT NULL,
    at_ms     INTEGER NOT NULL,
    sentiment REAL NOT NULL,
    score     REAL NOT NULL,
    PRIMARY KEY (asset, item_seq)
);
CREATE INDEX IF NOT EXISTS so_item_assets_at ON so_item_assets (at_ms);
CREATE TABLE IF NOT EXISTS so_cursors (
    source     TEXT PRIMARY KEY,
    cursor     TEXT NOT NULL,           -- the source's typed cursor as JSON
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS so_skips (
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (source, reason)
);
