-- People in the live room (workers/live.py, docs/api.md "Who sees whom in a live room").
--
-- A question may be asked anonymously: the room (students and staff alike) sees neither the
-- asker's id nor their name; the row keeps user_id so the asker's own votes stay refused and
-- an administrator can still trace abuse.
ALTER TABLE questions ADD COLUMN anonymous boolean NOT NULL DEFAULT false;
