-- Lectern's initial schema. Applied once, inside one transaction, by api/migrate.py.
--
-- Conventions (keep them in later migrations):
--   * Rows get `bigint GENERATED ALWAYS AS IDENTITY` ids: insert without an id and read it back
--     with RETURNING. Login sessions and refresh-token families are uuids (gen_random_uuid(),
--     builtin since PostgreSQL 13): they travel in tokens, where guessable ids would leak counts.
--   * Every timestamp is timestamptz, defaulting to now() (the transaction's start).
--   * No extensions. Emails are stored trimmed and lower-cased, enforced by a CHECK, so a plain
--     UNIQUE makes them case-insensitive; callers normalise with `lower(btrim(...))` first.
--   * ON DELETE CASCADE for rows that mean nothing without their parent (a cohort's lessons, a
--     user's votes); ON DELETE SET NULL for authorship that should outlive the author.
--   * Migrations are append-only: never edit an applied file, add the next number instead.

-- -- people and cohorts ----------------------------------------------------------------------

CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         text NOT NULL UNIQUE
                  CHECK (email = lower(btrim(email)) AND email LIKE '_%@_%' AND length(email) <= 320),
    display_name  text NOT NULL CHECK (length(btrim(display_name)) BETWEEN 1 AND 200),
    role          text NOT NULL DEFAULT 'student'
                  CHECK (role IN ('student', 'instructor', 'admin')),
    -- NULL until the user sets a password (accounts created by a CSV import): no login possible.
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE cohorts (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug       text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title      text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- 'member' studies in the cohort, 'staff' teaches it (the `cohorts` and `staff` JWT claims).
CREATE TABLE enrollments (
    cohort_id  bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text NOT NULL DEFAULT 'member' CHECK (kind IN ('member', 'staff')),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (cohort_id, user_id)
);
-- Login builds the claims from a user's enrollments.
CREATE INDEX enrollments_user_idx ON enrollments (user_id);

-- -- self-paced content --------------------------------------------------------------------

CREATE TABLE lessons (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id  bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    position   integer NOT NULL CHECK (position >= 0),
    title      text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    body       text NOT NULL DEFAULT '',
    -- Bumped on every edit: the API's cache key and its optimistic-concurrency check.
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- Deferrable so a reorder can swap positions inside one transaction
    -- (SET CONSTRAINTS lessons_cohort_position_key DEFERRED). A deferrable constraint cannot be
    -- an ON CONFLICT arbiter: upsert lessons by id, never by (cohort_id, position).
    CONSTRAINT lessons_cohort_position_key UNIQUE (cohort_id, position)
        DEFERRABLE INITIALLY IMMEDIATE
);

CREATE TABLE lesson_progress (
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lesson_id    bigint NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    completed_at timestamptz NOT NULL DEFAULT now(),
    -- The primary key serves "progress of a user"; completing twice is ON CONFLICT DO NOTHING.
    PRIMARY KEY (user_id, lesson_id)
);
-- Dashboards: who completed a lesson.
CREATE INDEX lesson_progress_lesson_idx ON lesson_progress (lesson_id);

CREATE TABLE quizzes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id    bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    title        text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    -- workers.grading's question union, answer keys included: never send this column to a
    -- student, send workers.grading.public_questions(...) instead.
    questions    jsonb NOT NULL CHECK (jsonb_typeof(questions) = 'array'),
    max_attempts integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    created_by   bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quizzes_cohort_idx ON quizzes (cohort_id);

CREATE TABLE quiz_submissions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    quiz_id      bigint NOT NULL REFERENCES quizzes (id) ON DELETE CASCADE,
    user_id      bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    attempt      integer NOT NULL CHECK (attempt >= 1),
    answers      jsonb NOT NULL,
    score        numeric(10, 2),
    max_score    numeric(10, 2),
    -- workers.grading.GradeResult as JSON, per-question feedback included.
    feedback     jsonb,
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'graded')),
    submitted_at timestamptz NOT NULL DEFAULT now(),
    graded_at    timestamptz,
    -- The idempotency key of a submission: a retried submit or a redelivered grading job
    -- cannot create a second row for the same attempt.
    UNIQUE (quiz_id, user_id, attempt),
    -- A graded row always carries its score, a pending one never does.
    CHECK ((status = 'graded') = (graded_at IS NOT NULL AND score IS NOT NULL
                                  AND max_score IS NOT NULL AND feedback IS NOT NULL))
);
-- The unique key serves "submissions of a quiz" and "a user's attempts at a quiz";
-- this one serves "all my submissions, newest first".
CREATE INDEX quiz_submissions_user_idx ON quiz_submissions (user_id, submitted_at DESC);
-- The grading worker's sweep for submissions whose job was lost.
CREATE INDEX quiz_submissions_pending_idx ON quiz_submissions (submitted_at)
    WHERE status = 'pending';

-- -- live sessions -------------------------------------------------------------------------

CREATE TABLE live_sessions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id        bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    title            text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    state            text NOT NULL DEFAULT 'scheduled'
                     CHECK (state IN ('scheduled', 'live', 'ended')),
    -- Set in the same transaction that enqueues the reminders: at most one reminder run.
    reminder_sent_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX live_sessions_cohort_idx ON live_sessions (cohort_id, starts_at);
-- The scheduler's "sessions starting soon that were not reminded yet".
CREATE INDEX live_sessions_reminder_idx ON live_sessions (starts_at)
    WHERE state = 'scheduled' AND reminder_sent_at IS NULL;

CREATE TABLE attendance (
    session_id       bigint NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    user_id          bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    joined_at        timestamptz NOT NULL DEFAULT now(),
    left_at          timestamptz,
    seconds_attended integer NOT NULL DEFAULT 0 CHECK (seconds_attended >= 0),
    PRIMARY KEY (session_id, user_id)
);
CREATE INDEX attendance_user_idx ON attendance (user_id);

-- Q&A. A question counts as answered when answered_at is set; `answer` may stay NULL when
-- the instructor answered out loud. `votes` is a cache of count(question_votes), updated in
-- the same transaction as the vote row.
CREATE TABLE questions (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id  bigint NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body        text NOT NULL CHECK (length(btrim(body)) BETWEEN 1 AND 2000),
    created_at  timestamptz NOT NULL DEFAULT now(),
    answer      text,
    answered_by bigint REFERENCES users (id) ON DELETE SET NULL,
    answered_at timestamptz,
    pinned      boolean NOT NULL DEFAULT false,
    dismissed   boolean NOT NULL DEFAULT false,
    votes       integer NOT NULL DEFAULT 0 CHECK (votes >= 0)
);
CREATE INDEX questions_session_idx ON questions (session_id, created_at);

CREATE TABLE question_votes (
    question_id bigint NOT NULL REFERENCES questions (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (question_id, user_id)
);

CREATE TABLE polls (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    question   text NOT NULL CHECK (length(btrim(question)) BETWEEN 1 AND 500),
    -- A JSON array of option labels; poll_votes.option indexes it.
    options    jsonb NOT NULL
               CHECK (jsonb_typeof(options) = 'array' AND jsonb_array_length(options) BETWEEN 2 AND 20),
    state      text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closed', 'revealed')),
    created_by bigint REFERENCES users (id) ON DELETE SET NULL,
    opened_at  timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz,
    CHECK ((state = 'open') = (closed_at IS NULL))
);
CREATE INDEX polls_session_idx ON polls (session_id, opened_at);

-- One vote per user and poll; changing a vote is an upsert on the primary key.
CREATE TABLE poll_votes (
    poll_id  bigint NOT NULL REFERENCES polls (id) ON DELETE CASCADE,
    user_id  bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    option   integer NOT NULL CHECK (option BETWEEN 0 AND 19),
    voted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (poll_id, user_id)
);

-- Deletion is soft (moderation keeps the trail); readers filter deleted_at IS NULL.
CREATE TABLE chat_messages (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id bigint NOT NULL REFERENCES live_sessions (id) ON DELETE CASCADE,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body       text NOT NULL CHECK (length(btrim(body)) BETWEEN 1 AND 2000),
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    deleted_by bigint REFERENCES users (id) ON DELETE SET NULL
);
-- Chat history of a session, paged by id.
CREATE INDEX chat_messages_session_idx ON chat_messages (session_id, id);

-- -- announcements and notifications -------------------------------------------------------

CREATE TABLE announcements (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id  bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    author_id  bigint REFERENCES users (id) ON DELETE SET NULL,
    title      text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 200),
    body       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX announcements_cohort_idx ON announcements (cohort_id, created_at DESC);

-- `dedupe_key` makes creating a notification idempotent: insert with ON CONFLICT (user_id,
-- kind, dedupe_key) DO NOTHING, using a key derived from the cause (e.g. 'submission:42').
-- Its default is a fresh uuid, i.e. "never deduplicated".
CREATE TABLE notifications (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_.]{0,63}$'),
    dedupe_key text NOT NULL DEFAULT gen_random_uuid()::text,
    title      text NOT NULL,
    body       text NOT NULL DEFAULT '',
    data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    read_at    timestamptz,
    UNIQUE (user_id, kind, dedupe_key)
);
CREATE INDEX notifications_user_idx ON notifications (user_id, id DESC);
CREATE INDEX notifications_unread_idx ON notifications (user_id, id DESC) WHERE read_at IS NULL;

-- No row means the default: email on.
CREATE TABLE notification_prefs (
    user_id bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind    text NOT NULL,
    email   boolean NOT NULL DEFAULT true,
    PRIMARY KEY (user_id, kind)
);

-- -- authentication ------------------------------------------------------------------------

-- One row per login; its id is the `sid` claim. Revoking it ends every token of the login.
CREATE TABLE login_sessions (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    user_agent text NOT NULL DEFAULT '' CHECK (length(user_agent) <= 512),
    -- text rather than inet: asyncpg would otherwise want ipaddress objects.
    ip         text NOT NULL DEFAULT '' CHECK (length(ip) <= 64)
);
CREATE INDEX login_sessions_user_idx ON login_sessions (user_id) WHERE revoked_at IS NULL;

-- Rotating refresh tokens: only a hash is stored. Presenting a token whose used_at is already
-- set is reuse: revoke the whole family (and its login session).
CREATE TABLE refresh_tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    session_id uuid NOT NULL REFERENCES login_sessions (id) ON DELETE CASCADE,
    family     uuid NOT NULL,
    token_hash bytea NOT NULL UNIQUE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    CHECK (expires_at > issued_at)
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family);
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (session_id);

-- -- delivery: outbox, email, imports -------------------------------------------------------

-- Events written in the same transaction as the change that causes them (DESIGN.md section
-- 6); the relay publishes rows in id order and sets published_at. Ids are assigned at insert,
-- not at commit, so a relay must not assume "every id below the last one I saw is committed":
-- it re-reads the unpublished rows through the partial index instead.
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text NOT NULL,
    type         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

-- At most one email per notification (UNIQUE notification_id) and per idempotency key (also
-- handed to the SMTP server as the Message-ID), so a redelivered job never sends twice.
CREATE TABLE email_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    notification_id bigint UNIQUE REFERENCES notifications (id) ON DELETE SET NULL,
    idempotency_key text NOT NULL UNIQUE,
    to_addr         text NOT NULL,
    subject         text NOT NULL,
    body            text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
CREATE INDEX email_deliveries_queued_idx ON email_deliveries (created_at) WHERE status = 'queued';

-- Bulk enrollment: the API stores the upload and enqueues a job; the worker updates
-- `processed` as it goes and appends one entry per row to `results`.
CREATE TABLE csv_imports (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    cohort_id   bigint NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
    uploaded_by bigint REFERENCES users (id) ON DELETE SET NULL,
    status      text NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'running', 'done', 'failed')),
    source      text NOT NULL DEFAULT '',
    total       integer NOT NULL DEFAULT 0 CHECK (total >= 0),
    processed   integer NOT NULL DEFAULT 0 CHECK (processed >= 0 AND processed <= total),
    results     jsonb NOT NULL DEFAULT '[]'::jsonb,
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX csv_imports_cohort_idx ON csv_imports (cohort_id, created_at DESC);
