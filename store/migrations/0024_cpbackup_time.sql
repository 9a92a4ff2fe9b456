-- The control-plane backup at a time of day (issue 13): the minute after
-- midnight it runs at (NULL: 02:00) in an IANA time zone (NULL: the
-- server's), both set on Settings, Control-plane backup.

ALTER TABLE controlplane_backup_settings ADD COLUMN run_at_minute INTEGER;
ALTER TABLE controlplane_backup_settings ADD COLUMN time_zone TEXT;
