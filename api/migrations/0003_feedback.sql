-- Instructor feedback on quiz submissions (api/routes_feedback.py, workers/review.py).
--
-- The automatic grade stays in quiz_submissions.feedback (workers.grading.GradeResult) and is
-- never rewritten. Staff's hand grades are stored beside it: `manual_points` maps question ids
-- to the points staff awarded, `score_override` replaces the total. `score` always holds the
-- effective total (workers.review.apply_review), so the leaderboard and the statistics, which
-- read `score`, follow the instructor's word.
--
-- `review` is the "waiting for grading" queue: the grader sets 'waiting' when a short-text
-- answer matched none of the accepted answers (a human should look), and feedback that grades
-- every waiting question (or overrides the total) sets 'done'.
ALTER TABLE quiz_submissions
    ADD COLUMN manual_points  jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(manual_points) = 'object'),
    ADD COLUMN score_override numeric(10, 2) CHECK (score_override >= 0),
    ADD COLUMN review         text NOT NULL DEFAULT 'none'
        CHECK (review IN ('none', 'waiting', 'done'));

-- The grading queue of a cohort, oldest first.
CREATE INDEX quiz_submissions_waiting_idx ON quiz_submissions (submitted_at)
    WHERE review = 'waiting';

-- One row per piece of feedback (a comment, a hand grade, an override, or all three); the
-- history is kept. `client_key` makes a retried POST return the stored row instead of adding
-- a second one. `notified_at` is set by the `feedback` job in the transaction that creates the
-- student's notification; the scheduler re-enqueues rows left without it.
CREATE TABLE submission_feedback (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    submission_id  bigint NOT NULL REFERENCES quiz_submissions (id) ON DELETE CASCADE,
    author_id      bigint REFERENCES users (id) ON DELETE SET NULL,
    comment        text NOT NULL DEFAULT '' CHECK (length(comment) <= 5000),
    question_points jsonb NOT NULL DEFAULT '{}'::jsonb
        CHECK (jsonb_typeof(question_points) = 'object'),
    score_override numeric(10, 2) CHECK (score_override >= 0),
    -- The effective total and its maximum right after this feedback.
    score          numeric(10, 2) NOT NULL,
    max_score      numeric(10, 2) NOT NULL,
    client_key     text CHECK (length(client_key) BETWEEN 1 AND 64),
    created_at     timestamptz NOT NULL DEFAULT now(),
    notified_at    timestamptz,
    UNIQUE (submission_id, client_key)
);
CREATE INDEX submission_feedback_submission_idx ON submission_feedback (submission_id, id);
CREATE INDEX submission_feedback_unnotified_idx ON submission_feedback (created_at)
    WHERE notified_at IS NULL;
