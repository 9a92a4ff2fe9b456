-- Host tags: free labels an operator puts on a host ("prod", "db",
-- "site-a") to filter the fleet by. Written by the control plane (the
-- owner of hosts); one row per (host, tag).
CREATE TABLE host_tags (
    host_id TEXT NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
    tag     TEXT NOT NULL,
    PRIMARY KEY (host_id, tag)
) WITHOUT ROWID;
-- The dashboard's tag filter and the list of known tags.
CREATE INDEX host_tags_tag ON host_tags (tag, host_id);

-- Fleet scale (bench/fleet-ui, docs/benchmarks.md): job lists page by the
-- cursor (created_at, id) as a row value, so the indexes carry the id.
DROP INDEX IF EXISTS jobs_created;
CREATE INDEX jobs_created_id ON jobs (created_at DESC, id DESC);
DROP INDEX IF EXISTS jobs_host_created;
CREATE INDEX jobs_host_created_id ON jobs (host_id, created_at DESC, id DESC);
