-- Portable schema: runs unchanged on SQLite and PostgreSQL through sqlx::Any.
-- Only TEXT and BIGINT columns (hashes as hex, booleans as 0/1, times as unix seconds).

CREATE TABLE users (
    name          TEXT   NOT NULL PRIMARY KEY,
    password_hash TEXT   NOT NULL, -- argon2id PHC string
    created       BIGINT NOT NULL
);

-- Only the SHA-256 of a token is stored: a leaked database does not leak live sessions.
CREATE TABLE sessions (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_name  TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    peer_addr  TEXT   NOT NULL,
    created    BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE INDEX sessions_by_user ON sessions (user_name, last_seen);

-- "groups" is a keyword in both dialects, hence group_info.
CREATE TABLE group_info (
    name    TEXT   NOT NULL PRIMARY KEY,
    owner   TEXT   NOT NULL REFERENCES users (name),
    created BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_name TEXT   NOT NULL REFERENCES group_info (name) ON DELETE CASCADE,
    user_name  TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    joined     BIGINT NOT NULL,
    PRIMARY KEY (group_name, user_name)
);

CREATE TABLE join_requests (
    group_name TEXT   NOT NULL REFERENCES group_info (name) ON DELETE CASCADE,
    user_name  TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    requested  BIGINT NOT NULL,
    PRIMARY KEY (group_name, user_name)
);

-- pieces: the piece SHA1s concatenated as hex (40 chars each), in piece order.
CREATE TABLE files (
    group_name TEXT   NOT NULL REFERENCES group_info (name) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    size       BIGINT NOT NULL,
    piece_size BIGINT NOT NULL,
    sha1       TEXT   NOT NULL,
    pieces     TEXT   NOT NULL,
    created    BIGINT NOT NULL,
    PRIMARY KEY (group_name, name)
);

CREATE TABLE shares (
    group_name TEXT   NOT NULL,
    file_name  TEXT   NOT NULL,
    user_name  TEXT   NOT NULL REFERENCES users (name) ON DELETE CASCADE,
    complete   BIGINT NOT NULL,
    updated    BIGINT NOT NULL,
    PRIMARY KEY (group_name, file_name, user_name),
    FOREIGN KEY (group_name, file_name) REFERENCES files (group_name, name) ON DELETE CASCADE
);
CREATE INDEX shares_by_user ON shares (user_name, group_name);

-- The ticket-signing key; one row (id = 1), shared by every tracker on this database.
CREATE TABLE tracker_key (
    id         BIGINT NOT NULL PRIMARY KEY,
    secret_hex TEXT   NOT NULL,
    created    BIGINT NOT NULL
);
