-- Settings pages (issue 12, part B): where a session signed in from, where an
-- audited action came from, and the audit log's filters by actor and action.
ALTER TABLE sessions ADD COLUMN address TEXT;
ALTER TABLE audit_log ADD COLUMN address TEXT;
CREATE INDEX audit_log_actor ON audit_log (actor, ts DESC);
CREATE INDEX audit_log_action ON audit_log (action, ts DESC);
-- The first characters of an API token's secret (`rmt_AbCd1234`), so the
-- tokens page can say which token is which; the rest is stored only hashed.
ALTER TABLE api_tokens ADD COLUMN prefix TEXT;
