-- When the nonce authority last handed a nonce out (database clock, ms): a stored next nonce older than the hold
-- window is not trusted over the node's pending count, so a nonce taken by a keeper that died before broadcasting it
-- leaves no gap behind (issue 18).
ALTER TABLE signer_nonces ADD COLUMN taken_ms BIGINT NOT NULL DEFAULT 0;
