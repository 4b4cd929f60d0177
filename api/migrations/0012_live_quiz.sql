-- Live quiz mode (workers/live_quiz.py, workers/live_quiz_rules.py): staff run one of the
-- cohort's quizzes in a live room, one question at a time, each with a server-side deadline.
--
-- questions   the quiz's questions as they were at quiz.start (answer keys included: never
--             sent to students), so editing the quiz meanwhile cannot change a running one;
-- time_limits one limit in seconds per question;
-- current     the index of the question on screen; question_at and deadline are its start
--             and its end (answers are refused from the deadline on, whether or not its
--             results went out yet);
-- closed      the highest index whose results were published (-1: none yet): closing is
--             idempotent whichever of the timer, quiz.next, quiz.end or session end gets there
--             first.
CREATE TABLE live_quizzes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id    bigint NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    quiz_id       bigint NOT NULL REFERENCES quizzes (id) ON DELETE CASCADE,
    title         text NOT NULL,
    questions     jsonb NOT NULL CHECK (jsonb_typeof(questions) = 'array'),
    time_limits   jsonb NOT NULL CHECK (jsonb_typeof(time_limits) = 'array'),
    reveal        boolean NOT NULL DEFAULT true,
    state         text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'ended')),
    current       integer NOT NULL DEFAULT 0 CHECK (current >= 0),
    question_at   timestamptz NOT NULL,
    deadline      timestamptz NOT NULL,
    closed        integer NOT NULL DEFAULT -1 CHECK (closed >= -1 AND closed <= current),
    started_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    ended_by      text CHECK (ended_by IN ('staff', 'session_end')),
    CHECK ((state = 'ended') = (ended_at IS NOT NULL))
);
-- One running quiz per room; also the state route's "the session's newest quiz".
CREATE UNIQUE INDEX live_quizzes_running_idx ON live_quizzes (session_id) WHERE state = 'running';
CREATE INDEX live_quizzes_session_idx ON live_quizzes (session_id, id DESC);
-- The scheduler's safety net for deadlines whose due entry was lost.
CREATE INDEX live_quizzes_deadline_idx ON live_quizzes (deadline) WHERE state = 'running';

-- One answer per student and question (the primary key refuses a second one).
CREATE TABLE live_quiz_answers (
    live_quiz_id bigint NOT NULL REFERENCES live_quizzes (id) ON DELETE CASCADE,
    question     integer NOT NULL CHECK (question >= 0),
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    answer       jsonb NOT NULL,
    outcome      text NOT NULL CHECK (outcome IN ('correct', 'partial', 'incorrect')),
    elapsed_ms   integer NOT NULL CHECK (elapsed_ms >= 0),
    score        integer NOT NULL CHECK (score >= 0),
    answered_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (live_quiz_id, question, user_id)
);
-- Leaderboard totals per user.
CREATE INDEX live_quiz_answers_user_idx ON live_quiz_answers (live_quiz_id, user_id);
