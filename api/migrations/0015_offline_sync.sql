-- Offline sync (issue 11, item 9; api/routes_sync.py): operations recorded offline arrive in
-- batches with client timestamps and idempotency keys.

-- One row per applied operation: the key makes a replay return the stored result instead of
-- applying again. Written in the transaction that applies the operation.
CREATE TABLE sync_operations (
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 64),
    op              text NOT NULL,
    client_ts       timestamptz NOT NULL,
    result          jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, idempotency_key)
);

-- Quiz answer drafts: last write wins by client timestamp (`client_ts`).
CREATE TABLE quiz_drafts (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    quiz_id    bigint NOT NULL REFERENCES quizzes (id) ON DELETE CASCADE,
    answers    jsonb NOT NULL,
    client_ts  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, quiz_id)
);

-- A student's note on a lesson: content, so an offline edit made on an older version than the
-- server's is not merged or overwritten but sent to manual review (sync_conflicts).
CREATE TABLE lesson_notes (
    user_id    bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lesson_id  bigint NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    body       text NOT NULL CHECK (length(body) <= 20000),
    version    integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    client_ts  timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, lesson_id)
);

-- Content edits waiting for a person: both sides kept, nothing lost.
CREATE TABLE sync_conflicts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    lesson_id      bigint NOT NULL REFERENCES lessons (id) ON DELETE CASCADE,
    base_version   integer NOT NULL,
    server_version integer NOT NULL,
    server_body    text NOT NULL,
    client_body    text NOT NULL,
    client_ts      timestamptz NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    resolved_at    timestamptz
);
CREATE INDEX sync_conflicts_open_idx ON sync_conflicts (user_id, id) WHERE resolved_at IS NULL;
