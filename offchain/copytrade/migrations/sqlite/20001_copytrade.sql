-- The copy-trader's record. Decimals are text (exact); times are milliseconds since the epoch.
CREATE TABLE IF NOT EXISTS ct_orders (
    client_id     TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,       -- order | stop
    symbol        TEXT NOT NULL,
    side          TEXT NOT NULL,
    qty           TEXT NOT NULL,
    trigger_price TEXT,
    reduce_only   INTEGER NOT NULL,
    reason        TEXT NOT NULL,       -- mirror | ai | stop | breach | emergency
    status        TEXT NOT NULL,       -- sending | filled | rejected | not_placed | unresolved | open | canceled | finished | expired
    exchange_id   INTEGER,
    avg_price     TEXT,
    executed_qty  TEXT,
    fee           TEXT,
    realized_pnl  TEXT,
    error         TEXT,
    paper         INTEGER NOT NULL,
    created_ms    INTEGER NOT NULL,
    updated_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ct_orders_status ON ct_orders (status);
CREATE TABLE IF NOT EXISTS ct_fills (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id    TEXT NOT NULL,
    symbol       TEXT NOT NULL,
    side         TEXT NOT NULL,
    qty          TEXT NOT NULL,
    price        TEXT NOT NULL,
    fee          TEXT NOT NULL,
    realized_pnl TEXT NOT NULL,
    paper        INTEGER NOT NULL,
    at_ms        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ct_positions (
    symbol      TEXT PRIMARY KEY,
    qty         TEXT NOT NULL,
    entry_price TEXT NOT NULL,
    updated_ms  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ct_lead (
    symbol     TEXT PRIMARY KEY,
    qty        TEXT NOT NULL,
    lead_limit TEXT,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ct_state (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS ct_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    kind   TEXT NOT NULL,
    symbol TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ct_equity (
    at_ms  INTEGER PRIMARY KEY,
    equity TEXT NOT NULL
);
