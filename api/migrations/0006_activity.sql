-- The cohort activity feed (workers/activity.py, api/routes_activity.py): "X completed lesson
-- Y", "X passed quiz Z", "X joined", shown to the cohort on `cohort:{id}` and the dashboard.
--
-- `activity_privacy` is the cohort's switch: 'off' records nothing at all, 'initials' shows
-- "A. L.", 'names' the display name. Rows keep the user id, not the name: the feed is
-- rendered with the cohort's setting at read time, so tightening it hides names already
-- shown in the history too.
ALTER TABLE cohorts ADD COLUMN activity_privacy text NOT NULL DEFAULT 'initials'
    CHECK (activity_privacy IN ('off', 'initials', 'names'));

CREATE TABLE cohort_activity (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id     bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    user_id       bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('member.joined', 'lesson.completed', 'quiz.passed')),
    -- The lesson or quiz (0 for member.joined): one entry per person and thing, so repeated
    -- completions, regrades and retries never post twice.
    subject_id    bigint NOT NULL DEFAULT 0,
    subject_title text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (cohort_id, user_id, kind, subject_id)
);
CREATE INDEX cohort_activity_cohort_idx ON cohort_activity (cohort_id, id DESC);
