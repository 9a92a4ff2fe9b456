-- The control plane's config resync compared every online host's desired
-- and confirmed config versions each heartbeat interval: at 100,000 agents
-- a read of 100,000 index entries, decoded into as many rows, that took
-- 1-12 s under load (docs/benchmarks.md, stop 42). Hosts whose agent has
-- not confirmed its desired config are few (a push under way, an agent
-- that cannot take its config): this index holds only them, so the
-- resync reads only them. A heartbeat flush changes neither version, so
-- it leaves the index as it is; a config bump adds the host and its
-- agent's confirmation removes it.
CREATE INDEX hosts_config_unconfirmed ON hosts (status, id, config_version)
    WHERE applied_config_version < config_version;
