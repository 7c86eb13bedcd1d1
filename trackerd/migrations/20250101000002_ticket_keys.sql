-- Ticket-signing keys leave the database: only PUBLIC keys are kept here, with the time after
-- which tickets signed by each are refused (NULL: not scheduled). Each trackerd signs with the
-- private key in its own key file; every tracker on this database publishes its public key here
-- so seeders logged in at any tracker accept tickets from all of them.
--
-- The old tracker_key table (a private key in hex) is emptied by trackerd at startup, after it
-- moved the key to the key file; see trackerd/src/keys.rs. It stays as an empty table so that
-- this migration never destroys a key before trackerd saved it.
CREATE TABLE ticket_keys (
    public_hex TEXT   NOT NULL PRIMARY KEY,
    created    BIGINT NOT NULL,
    retire_at  BIGINT
);
