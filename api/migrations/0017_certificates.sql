-- Course certificates (workers/certificates.py): the progress milestones a student unlocked in a
-- cohort, each with the moment it was unlocked, and the certificate issued when the course was
-- complete. Both are written by the lesson completion that crossed them, in its transaction,
-- and never taken back: a lesson added later lowers the percentage, not what was earned.
CREATE TABLE certificate_milestones (
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cohort_id   bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    milestone   smallint NOT NULL CHECK (milestone IN (25, 50, 75, 100)),
    unlocked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, cohort_id, milestone)
);

CREATE TABLE certificates (
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    cohort_id bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    -- What a reader of a printed certificate quotes; random, so it reveals no count or id.
    code      text NOT NULL UNIQUE DEFAULT replace(gen_random_uuid()::text, '-', ''),
    issued_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, cohort_id)
);
