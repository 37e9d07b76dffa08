-- Indexes for the API's reads (issue 19): each of /api/rounds' filters and /api/predictions is answered by walking an
-- index newest-first and stopping at the limit, instead of sorting the whole table (the query plans are in the keeper
-- README, "Performance of the API"). Rounds of one chain and market use the primary key (chain, market_id, epoch).
CREATE INDEX rounds_newest ON rounds (epoch DESC, chain, market_id);
CREATE INDEX rounds_chain_newest ON rounds (chain, epoch DESC, market_id);
CREATE INDEX predictions_chain_newest ON predictions (chain, epoch DESC);
