-- The web role's tables: users, sessions and api_tokens exist since 0001;
-- this adds what accounts, API tokens and the login throttle need.

-- An API token acts with its own role (at most its creator's).
ALTER TABLE api_tokens ADD COLUMN role TEXT NOT NULL DEFAULT 'viewer'
    CHECK (role IN ('admin', 'operator', 'viewer'));

-- When a user's password last changed (sessions from before it are gone).
ALTER TABLE users ADD COLUMN password_changed_at INTEGER NOT NULL DEFAULT 0;

CREATE INDEX sessions_user ON sessions (user_id);

-- Failed logins per key: `account:<name>` and `addr:<client address>`.
CREATE TABLE login_throttle (
    key              TEXT PRIMARY KEY,
    failures         INTEGER NOT NULL,
    last_failure_at  INTEGER NOT NULL,
    blocked_until    INTEGER NOT NULL
);
