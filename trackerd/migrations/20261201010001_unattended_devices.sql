-- Devices (issue #12, "restart without a human"): a daemon's device key (Ed25519 public key,
-- 64 hex digits) registered for a user by a password login from that daemon. A registered,
-- active device may log in again by itself by signing a single-use nonce with its key
-- (DeviceLogin); `state` is 'active', 'revoked' (revoke_device) or 'logged_out' (logout): only
-- a password login from the device makes it active again.
CREATE TABLE devices (
    user_name  TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    device_key TEXT   NOT NULL,
    name       TEXT   NOT NULL,
    created    BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    last_addr  TEXT   NOT NULL,
    state      TEXT   NOT NULL,
    PRIMARY KEY (user_name, device_key)
);
CREATE UNIQUE INDEX devices_by_name ON devices (user_name, name);

-- A login replaces the other sessions of the same user and device key (a restarted daemon is
-- one holder, not several): looked up by this index.
CREATE INDEX sessions_by_device ON sessions (user_name, device_key);

-- The identity of this tracker deployment (every tracker on this database): 32 random bytes as
-- hex, made by the first tracker that opens the database. Device-login signatures cover it.
CREATE TABLE tracker_identity (
    id          BIGINT NOT NULL PRIMARY KEY,
    identity    TEXT   NOT NULL
);
