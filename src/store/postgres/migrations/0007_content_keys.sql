-- Crypto-shredding (store/shred.rs): content values are sealed with the key of the
-- period they were written in. The keys live here, in a table small enough to be
-- rewritten (VACUUM FULL) each time a key is destroyed, so a destroyed key leaves no
-- dead tuple behind; PostgreSQL's WAL and the operator's backups keep it until they
-- are recycled (README, "What is recorded, and what never is").
CREATE TABLE content_keys (
    slot bigint PRIMARY KEY,
    key  bytea  NOT NULL
);

-- Periods in which content died: shredded once the period is over.
CREATE TABLE content_shred_due (
    slot bigint PRIMARY KEY
);

-- The period a stored value is sealed in: the codec's flag byte has bit 4, then the
-- period as u32 BE. NULL for values written before period keys.
CREATE FUNCTION llmtap_sealed_in(v bytea) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN length(v) >= 5 AND (get_byte(v, 0) & 4) <> 0 THEN
        (get_byte(v, 1)::bigint << 24) | (get_byte(v, 2)::bigint << 16)
        | (get_byte(v, 3)::bigint << 8) | get_byte(v, 4)::bigint
    END
$$;

ALTER TABLE chunks ADD COLUMN sealed_in bigint GENERATED ALWAYS AS (llmtap_sealed_in(value)) STORED;
ALTER TABLE blobs ADD COLUMN sealed_in bigint GENERATED ALWAYS AS (llmtap_sealed_in(value)) STORED;
ALTER TABLE call_content ADD COLUMN sealed_in bigint GENERATED ALWAYS AS (llmtap_sealed_in(manifest)) STORED;
CREATE INDEX chunks_sealed_in ON chunks (sealed_in) WHERE sealed_in IS NOT NULL;
CREATE INDEX blobs_sealed_in ON blobs (sealed_in) WHERE sealed_in IS NOT NULL;
CREATE INDEX call_content_sealed_in ON call_content (sealed_in) WHERE sealed_in IS NOT NULL;

-- A value that dies makes its period due. Dropped partitions fire no trigger: the
-- retention sweep notes their periods before it drops them.
CREATE FUNCTION llmtap_note_dying() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.sealed_in IS NOT NULL THEN
        INSERT INTO content_shred_due (slot) VALUES (OLD.sealed_in) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER chunks_dying AFTER DELETE ON chunks FOR EACH ROW EXECUTE FUNCTION llmtap_note_dying();
CREATE TRIGGER blobs_dying AFTER DELETE ON blobs FOR EACH ROW EXECUTE FUNCTION llmtap_note_dying();
CREATE TRIGGER call_content_dying AFTER DELETE ON call_content FOR EACH ROW EXECUTE FUNCTION llmtap_note_dying();
