-- Notification preferences per channel, quiet hours and the daily digest (issue 11, item 10).
--
-- In-app channel: `notification_prefs.in_app` (no row: on). A notification of a kind the user
-- switched off in-app is still stored, with `hidden = true`: the row keeps creation
-- idempotent (its dedupe key) and carries the email channel, but it is never listed, never
-- counted as unread, never sent as `notification.new` and never put in a digest. Switching
-- the kind back on applies to notifications created from then on.
ALTER TABLE notification_prefs ADD COLUMN in_app boolean NOT NULL DEFAULT true;
ALTER TABLE notifications ADD COLUMN hidden boolean NOT NULL DEFAULT false;

-- Per-user delivery schedule. No row: no quiet hours, no digest, UTC.
-- Quiet hours are [quiet_start, quiet_end) in local time of `time_zone`; start > end spans
-- midnight. Emails due inside the window are delayed to its end, never dropped.
-- The digest is at most one email per user and local day (email_deliveries key
-- 'digest:<user>:<local date>'), sent once the local time has passed `digest_time`.
CREATE TABLE notification_settings (
    user_id     bigint PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    quiet_start time,
    quiet_end   time,
    time_zone   text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    digest      boolean NOT NULL DEFAULT false,
    digest_time time NOT NULL DEFAULT '08:00',
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL)),
    CHECK (quiet_start IS NULL OR quiet_start <> quiet_end)
);
CREATE INDEX notification_settings_digest_idx ON notification_settings (user_id) WHERE digest;

-- A digest email is a delivery of no single notification: it names its user instead.
ALTER TABLE email_deliveries ADD COLUMN user_id bigint REFERENCES users (id) ON DELETE CASCADE;
