-- The version of a live session's Q&A board: bumped by one for every row of `questions` of the
-- session that is inserted, updated or deleted, whoever writes it (a trigger, so no writer can
-- forget). Worker processes keep each board in memory and trust their copy only while this
-- number is the one they expect (workers/qa_board.py), so a command no longer reloads the
-- whole board.
ALTER TABLE live_sessions ADD COLUMN board_version bigint NOT NULL DEFAULT 0;

CREATE FUNCTION bump_board_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN
        UPDATE live_sessions SET board_version = board_version + 1 WHERE id = OLD.session_id;
    END IF;
    IF TG_OP <> 'DELETE' AND (TG_OP = 'INSERT' OR NEW.session_id <> OLD.session_id) THEN
        UPDATE live_sessions SET board_version = board_version + 1 WHERE id = NEW.session_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER questions_bump_board_version
    AFTER INSERT OR UPDATE OR DELETE ON questions
    FOR EACH ROW EXECUTE FUNCTION bump_board_version();
