-- Each session records the device key (Ed25519 public key, 64 hex digits) of the daemon that
-- logged in: tickets are bound to it and downloaders pin holders to it on the TLS peer link.
-- Sessions from before this migration have no key: they are dropped (their daemons log in
-- again), so every session ever listed as a holder can be pinned.
DELETE FROM sessions;
ALTER TABLE sessions ADD COLUMN device_key TEXT NOT NULL DEFAULT '';
