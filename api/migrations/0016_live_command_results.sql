-- Exactly-once live commands (workers/live_once.py): the result of every live-room command
-- that changed something, keyed by its command id (the ID of its entry in the command stream,
-- the same on every redelivery), written in the transaction of the change. A redelivered or
-- reclaimed command finds its row and replies with the stored result, changing nothing.
-- The scheduler deletes rows a day old (a command is reclaimed within seconds).
CREATE TABLE live_command_results (
    command_id text PRIMARY KEY,
    reply      jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX live_command_results_created_idx ON live_command_results (created_at);
