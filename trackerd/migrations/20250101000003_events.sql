-- Revocation events pushed to subscribed daemons (proto::tracker::Event).
--
-- Ids come from event_seq, bumped with UPDATE … RETURNING inside the transaction that makes the
-- change: the row lock is held until commit, so ids become visible in increasing order even
-- with several trackers on one PostgreSQL (a sequence would not guarantee that: a subscriber
-- could see id 6 commit before id 5 and skip 5 for ever).
CREATE TABLE event_seq (
    id   BIGINT NOT NULL PRIMARY KEY,
    last BIGINT NOT NULL
);
INSERT INTO event_seq (id, last) VALUES (1, 0);

-- kind: 'member_gone' | 'group_deleted' | 'file_removed'; user_name/file_name '' when unused.
CREATE TABLE events (
    id         BIGINT NOT NULL PRIMARY KEY,
    created    BIGINT NOT NULL,
    kind       TEXT   NOT NULL,
    group_name TEXT   NOT NULL,
    user_name  TEXT   NOT NULL,
    file_name  TEXT   NOT NULL
);
CREATE INDEX events_by_created ON events (created);

-- Who may see an event: the group's members at the time (including the one who is gone), so a
-- removed member's daemon and the daemons of a deleted group still hear about it.
CREATE TABLE event_recipients (
    event_id  BIGINT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    user_name TEXT   NOT NULL,
    PRIMARY KEY (user_name, event_id)
);
CREATE INDEX event_recipients_by_event ON event_recipients (event_id);
