-- Invitations: an admin (or the staff of a cohort, for its students) creates one; whoever holds
-- its token may register once. Only the token's SHA-256 is stored. When `email` is set the
-- registration must use it; registering the email of an account without a password (created
-- by a CSV import) sets that account's password instead of creating a new user.
CREATE TABLE invites (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    email       text CHECK (email = lower(btrim(email))),
    role        text NOT NULL DEFAULT 'student' CHECK (role IN ('student', 'instructor', 'admin')),
    cohort_id   bigint REFERENCES cohorts (id) ON DELETE CASCADE,
    kind        text NOT NULL DEFAULT 'member' CHECK (kind IN ('member', 'staff')),
    created_by  bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    used_by     bigint REFERENCES users (id) ON DELETE SET NULL,
    CHECK (expires_at > created_at)
);
