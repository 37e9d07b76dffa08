-- Leases on the database's clock with a fencing epoch (issue 18). A lease row is never deleted: its epoch only grows,
-- one step per change of holder (or per taking again after expiry), so a keeper that held epoch N and lost it can
-- never hold N again. Times are milliseconds of the database's clock.
DROP TABLE leases;
CREATE TABLE leases (
    chain TEXT NOT NULL,
    market_id BIGINT NOT NULL,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    since_ms BIGINT NOT NULL,
    renewed_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    PRIMARY KEY (chain, market_id)
);
-- The nonce authority for signers shared by several keepers: the next nonce of (chain, signer), taken atomically.
CREATE TABLE signer_nonces (
    chain TEXT NOT NULL,
    signer TEXT NOT NULL,
    next_nonce BIGINT NOT NULL,
    PRIMARY KEY (chain, signer)
);
