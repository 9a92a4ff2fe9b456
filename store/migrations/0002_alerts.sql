-- restic-manager schema, version 2: what the alerts role needs beyond v1.
-- Documented in docs/schema.md.

-- What raised an alert (the failed job, the missed cron slot, the offline
-- transition). A condition that was already alerted on — even if that
-- alert has since been resolved by hand — is never raised again.
ALTER TABLE alerts ADD COLUMN cause TEXT NOT NULL DEFAULT '';
CREATE INDEX alerts_cause ON alerts (host_id, kind, subject, cause);

-- The alerts worker's cursor also follows results ingested late (an agent
-- replaying its outbox after days offline reports an old finished_at).
CREATE INDEX job_ingest_received ON job_ingest (received_at);
