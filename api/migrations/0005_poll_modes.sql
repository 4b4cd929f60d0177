-- Polls a teacher would use (workers/poll_rules.py, workers/live_polls.py):
--   kind       single or multiple choice;
--   anonymous  true: nobody sees who voted what; false: staff see the voters of each option;
--   results    when students see the counts: live, after_close, on_reveal (the behaviour of
--              polls before this migration, hence the default) or never;
--   closes_at  set when the poll has a timer: the server closes it then, and refuses votes
--              from that moment on even before the close has run.
ALTER TABLE polls
    ADD COLUMN kind      text NOT NULL DEFAULT 'single' CHECK (kind IN ('single', 'multiple')),
    ADD COLUMN anonymous boolean NOT NULL DEFAULT true,
    ADD COLUMN results   text NOT NULL DEFAULT 'on_reveal'
        CHECK (results IN ('live', 'after_close', 'on_reveal', 'never')),
    ADD COLUMN closes_at timestamptz,
    ADD COLUMN closed_by text CHECK (closed_by IN ('staff', 'timer', 'session_end'));

-- The scheduler's safety net for timers whose due entry was lost.
CREATE INDEX polls_timer_idx ON polls (closes_at) WHERE state = 'open' AND closes_at IS NOT NULL;

-- A multiple-choice vote is one row per ticked option; a single-choice vote stays one row
-- (the worker replaces a voter's rows under the room lock).
ALTER TABLE poll_votes DROP CONSTRAINT poll_votes_pkey;
ALTER TABLE poll_votes ADD PRIMARY KEY (poll_id, user_id, option);
