-- Who registered each file entry, so per-member quotas (files, bytes, pieces) count what a
-- member created, not what they merely hold: becoming one more holder of an existing entry
-- costs the database nothing. Entries from before this migration belong to nobody ('').
ALTER TABLE files ADD COLUMN registered_by TEXT NOT NULL DEFAULT '';
CREATE INDEX files_by_registrant ON files (registered_by, group_name);
