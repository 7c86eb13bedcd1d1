-- Items (issue #13): a file entry is a single file or a directory tree (proto::item).
--
-- tree: NULL for a single file; for a tree, its entries in canonical order, one per line,
-- written and parsed only by trackerd/src/store/items.rs:
--   F <size> <sha1 hex> <path>     a regular file
--   D <path>                       an empty directory
-- (paths cannot hold control characters, so a newline always ends an entry). One column
-- rather than a child table: a tree is immutable, always written and read whole (Share,
-- GetFile, ListItem), and identified by its digest, so one value per item keeps registering and
-- serving 100,000 entries at one row's cost on both databases.
-- file_count: regular files in the item (1 for a single file), for listings without parsing
-- trees. quota_entries: what the item counts against its registrant's `quota_files` (1 for a
-- single file; for a tree one per entry, or one per 256 bytes of its listing if that is more;
-- see trackerd/src/store/files.rs).
ALTER TABLE files ADD COLUMN tree TEXT;
ALTER TABLE files ADD COLUMN file_count BIGINT NOT NULL DEFAULT 1;
ALTER TABLE files ADD COLUMN quota_entries BIGINT NOT NULL DEFAULT 1;
-- piece_count: the length of the piece list (a tree's is not derivable from its size), so
-- listings and quotas need not measure a multi-megabyte `pieces` value.
ALTER TABLE files ADD COLUMN piece_count BIGINT NOT NULL DEFAULT 0;
UPDATE files SET piece_count = LENGTH(pieces) / 40;
