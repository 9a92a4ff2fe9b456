-- The control plane's sweeper reads every online host each heartbeat
-- interval, twice: the ids of online hosts (offline candidates) and their
-- desired and confirmed config versions (the config resync). With
-- hosts_status on (status) alone each read looked up every online host's
-- row: 50,000 rows of about 600 bytes, 1-2 s per read under load, and the
-- reader held the WAL meanwhile. Carrying the columns those reads need,
-- the index answers both alone (about 40 bytes an entry). None of them
-- moves in a heartbeat flush (it sets last-seen and uptime only), so the
-- flush still leaves the index as it is (migration 0028).
DROP INDEX hosts_status;
CREATE INDEX hosts_status ON hosts (status, config_version, applied_config_version, id);
