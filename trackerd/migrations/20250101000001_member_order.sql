-- Join order within a group, for "longest-standing member" when the owner leaves: unix
-- seconds cannot order two members accepted within the same second. group_info.member_seq is
-- the last number handed out; bumping it with UPDATE … RETURNING locks the group row, so
-- concurrent accepts (even from several trackers on PostgreSQL) get distinct numbers.
ALTER TABLE group_info ADD COLUMN member_seq BIGINT NOT NULL DEFAULT 0;
ALTER TABLE group_members ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
