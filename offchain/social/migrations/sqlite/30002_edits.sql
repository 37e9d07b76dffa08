-- Edits and deletions at the source (Discord MESSAGE_UPDATE / MESSAGE_DELETE): an item keeps its id and sequence
-- number; an edit raises `version` and records the source's edit time (a replayed edit, not newer, changes
-- nothing); a deleted item keeps its row (its fingerprint still guards against reposts) but is no longer served and
-- its asset mentions are removed from the aggregates.
ALTER TABLE so_items ADD COLUMN version INTEGER NOT NULL DEFAULT 1;
ALTER TABLE so_items ADD COLUMN edited_ms INTEGER;
ALTER TABLE so_items ADD COLUMN deleted_ms INTEGER;
