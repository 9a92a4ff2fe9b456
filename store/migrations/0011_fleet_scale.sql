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
