-- The alerts role evaluates only hosts whose status changed since its
-- cursor (`worker_state` `alerts.hosts`), not every host per pass.
CREATE INDEX hosts_status_changed ON hosts (status_changed_at);
