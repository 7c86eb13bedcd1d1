-- Holder events (issue #11, EventKind::HolderOnline / HolderGone) carry more than a group, a
-- user and a file: the holder's peer address, device key (hex) and completeness. They go into
-- one text column, `detail`, written and parsed only by trackerd/src/store/events.rs
-- ('' for the older kinds).
ALTER TABLE events ADD COLUMN detail TEXT NOT NULL DEFAULT '';
