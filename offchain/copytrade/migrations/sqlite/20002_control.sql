-- The copy-trader's control log (issue 12, one control path): every command (copy-trading on/off, the runtime
-- ratio, the emergency stop and resume) is appended by `kronos_copytrade::control`, whoever sends it (the HTTP
-- API, `kronos copytrade`, the Telegram bot); the sequence is assigned by the database in the INSERT itself. The
-- state is the last command per control key. The engine's record of what it carried out is elsewhere (ct_state,
-- written by the engine only).
CREATE TABLE IF NOT EXISTS ct_control (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    control_key TEXT NOT NULL,       -- trading | ratio | emergency
    command     TEXT NOT NULL,       -- set_trading | set_ratio | reset_ratio | emergency_stop | resume
    value       TEXT,
    set_by      TEXT NOT NULL,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS ct_control_key_seq ON ct_control (control_key, seq);
