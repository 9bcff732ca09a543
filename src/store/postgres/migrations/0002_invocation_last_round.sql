-- llmtap PostgreSQL schema, version 2: where an invocation's latest round stands.
--
-- Instances merge the calls they write into the invocation row under a per-run
-- advisory lock. A round that reaches the database after a later-started one (it
-- went through a slower instance) adds to the run's counters but must not set its
-- status: the run's status is its latest-started round's. These two columns are
-- that round's (started_us, id), the order reads number rounds in.
ALTER TABLE invocations
    ADD COLUMN last_round_us bigint NOT NULL DEFAULT -1,
    ADD COLUMN last_round_id text   NOT NULL DEFAULT '';

-- Point reads by call id (the read API's /calls/{id}, the capture log's replay check):
-- the primary key leads with the partition key, so it cannot find an id alone.
CREATE INDEX calls_id ON calls (id);
CREATE INDEX call_content_id ON call_content (call_id);
