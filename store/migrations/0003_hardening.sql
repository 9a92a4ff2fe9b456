-- Hardening (issue 9).

-- The delivery outbox's "no older pending row of the same alert and
-- channel" check in `due()`: one indexed lookup per due row instead of a
-- walk over every pending row (quadratic in the backlog).
CREATE INDEX delivery_outbox_pending_order
    ON delivery_outbox (alert_id, channel_id, created_at)
    WHERE state = 'pending';
