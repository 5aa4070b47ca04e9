-- The portal's search words move out of `worksets` into a table of their own, so that a workset's state
-- change no longer writes them again. Every non-HOT update of a row (a state change: the state is indexed)
-- gives the new version an entry in every index of its table; the GIN index of `worksets.search_vector`
-- (migration 0017) took one for each of its words at every state change (~5 per workset), though the words
-- change only with the name or the spec. Measured on this machine: a state-change UPDATE of `worksets` cost
-- PostgreSQL 218 us of CPU with that index and 190 us without (3 rounds of 3,000 worksets x 5 state changes).

-- The words of a workset's name and sample ids, as migration 0017 defined them.
CREATE FUNCTION workset_search_vector(name TEXT, spec JSONB) RETURNS tsvector
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT to_tsvector('simple', translate(lower(name || ' '
        || coalesce(jsonb_path_query_array(spec, '$.samples[*].id')::text, '') || ' '
        || coalesce(jsonb_path_query_array(spec, '$.samples[*].sample_id')::text, '')), '-_.', '   '))
$$;

-- One row per workset, written by triggers on `worksets` in the transaction that inserts the workset or
-- changes its name or spec, whoever writes it, so it commits or vanishes with it. No code writes it.
CREATE TABLE workset_search (
    workset_id    TEXT PRIMARY KEY REFERENCES worksets (id) ON DELETE CASCADE,
    search_vector tsvector NOT NULL
);

CREATE FUNCTION workset_search_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO workset_search (workset_id, search_vector)
    SELECT id, workset_search_vector(name, spec) FROM inserted;
    RETURN NULL;
END $$;

CREATE FUNCTION workset_search_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE workset_search SET search_vector = workset_search_vector(NEW.name, NEW.spec) WHERE workset_id = NEW.id;
    RETURN NULL;
END $$;

-- Once per INSERT statement (a bulk seed writes its rows with one INSERT); only a save that writes the name or
-- the spec calls the row function (WorksetRepository.save writes the spec only when it changed: a requeue's
-- new settings).
CREATE TRIGGER worksets_search_insert AFTER INSERT ON worksets
    REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT EXECUTE FUNCTION workset_search_insert();
CREATE TRIGGER worksets_search_update AFTER UPDATE OF name, spec ON worksets
    FOR EACH ROW WHEN (OLD.name IS DISTINCT FROM NEW.name OR OLD.spec IS DISTINCT FROM NEW.spec)
    EXECUTE FUNCTION workset_search_update();

-- What was there before the triggers: `worksets` is locked by CREATE TRIGGER until this migration commits.
INSERT INTO workset_search (workset_id, search_vector) SELECT id, search_vector FROM worksets;
CREATE INDEX workset_search_words ON workset_search USING gin (search_vector);

-- Its index goes with the column.
ALTER TABLE worksets DROP COLUMN search_vector;
