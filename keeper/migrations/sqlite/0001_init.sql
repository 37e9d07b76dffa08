-- Keeper state (SQLite). The chain is the source of truth; this is the keeper's record of what it saw and sent.
CREATE TABLE markets (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    contract TEXT NOT NULL,
    feed TEXT NOT NULL,
    sequencer TEXT,
    token TEXT NOT NULL,
    pair TEXT,
    genesis BIGINT NOT NULL,
    interval_s BIGINT NOT NULL,
    settle_window_s BIGINT NOT NULL,
    max_price_age_s BIGINT NOT NULL,
    feed_decimals BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (chain, market_id)
);
CREATE TABLE checkpoints (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    idx BIGINT NOT NULL,
    ts BIGINT NOT NULL,
    round_id TEXT NOT NULL,
    price TEXT NOT NULL,
    status TEXT NOT NULL,
    tx_hash TEXT,
    block BIGINT,
    delay_blocks BIGINT,
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (chain, market_id, idx)
);
CREATE TABLE rounds (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    state TEXT NOT NULL,
    lock_price TEXT,
    close_price TEXT,
    outcome TEXT,
    reason TEXT,
    up_wei TEXT NOT NULL DEFAULT '0',
    down_wei TEXT NOT NULL DEFAULT '0',
    reward_wei TEXT,
    treasury_fee_wei TEXT,
    delay_blocks BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (chain, market_id, epoch)
);
CREATE TABLE transactions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chain TEXT NOT NULL,
    signer TEXT NOT NULL,
    action TEXT NOT NULL,
    nonce BIGINT NOT NULL,
    tx_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    max_fee_wei TEXT NOT NULL,
    priority_fee_wei TEXT NOT NULL,
    gas_limit BIGINT NOT NULL,
    sent_at BIGINT NOT NULL,
    mined_block BIGINT,
    gas_used BIGINT,
    error TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX transactions_action ON transactions (chain, action);
CREATE INDEX transactions_open ON transactions (chain, signer, status);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms BIGINT NOT NULL,
    chain TEXT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE predictions (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    publisher TEXT NOT NULL,
    p_up_bps BIGINT NOT NULL,
    up BIGINT NOT NULL,
    salt TEXT NOT NULL,
    commitment TEXT NOT NULL,
    commit_tx TEXT,
    reveal_tx TEXT,
    outcome TEXT,
    hit BIGINT,
    brier BIGINT,
    created_at BIGINT NOT NULL,
    revealed_at BIGINT,
    PRIMARY KEY (chain, market_id, epoch, publisher)
);
CREATE TABLE track_records (
    chain TEXT NOT NULL,
    publisher TEXT NOT NULL,
    committed BIGINT NOT NULL,
    hits BIGINT NOT NULL,
    misses BIGINT NOT NULL,
    voided BIGINT NOT NULL,
    expired BIGINT NOT NULL,
    brier_sum TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (chain, publisher)
);
CREATE TABLE leases (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (chain, market_id)
);
