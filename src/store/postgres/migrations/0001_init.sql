-- llmtap PostgreSQL schema, version 1. Applied once, in one transaction, under the
-- advisory lock of `migrate.rs`; never edited after release (a change is a new file).
--
-- Times are microseconds since the Unix epoch (bigint), as in the records and the
-- cursors (time, id). Counters are bigint; picodollar sums saturate in the engine.
-- Time-ordered data (calls, their content manifests, rate-limit points) is range
-- partitioned by UTC day on the call's start time, so retention drops whole
-- partitions (llmtap_drop_partitions_before) instead of deleting rows.

-- One row per call: the columns the list filters and sorts need, and the record's
-- metadata as JSON (no bodies, no parsed views: those are content, below).
CREATE TABLE calls (
    started_us      bigint   NOT NULL,
    id              text     NOT NULL,
    invocation_id   text     NOT NULL,
    -- Round as the writing instance numbered it; reads number an invocation's rounds
    -- 1..n by (started_us, id) so that instances agree.
    round           integer  NOT NULL,
    tenant          text,
    agent           text,
    provider        text     NOT NULL,
    kind            text     NOT NULL,
    model           text,
    response_model  text,
    status          text,
    http_status     integer,
    trigger         text,
    user_id         text,
    session_id      text,
    prompt          text,
    task_id         text,
    key_fingerprint text,
    latency_us      bigint   NOT NULL,
    cost_pusd       bigint,
    input_tokens    bigint,
    output_tokens   bigint,
    properties      jsonb    NOT NULL DEFAULT '{}',
    -- The stored record's metadata (CallRecord JSON without bodies and views).
    record          jsonb    NOT NULL,
    -- The list summary the read API pages return (summary.rs), so pages never read `record`.
    summary         jsonb    NOT NULL,
    PRIMARY KEY (started_us, id)
) PARTITION BY RANGE (started_us);

-- Anything outside the day partitions made ahead (an old capture log replayed, a clock
-- far off) lands here; retention deletes from it row by row.
CREATE TABLE calls_default PARTITION OF calls DEFAULT;

CREATE INDEX calls_time ON calls (started_us DESC, id DESC);
CREATE INDEX calls_invocation ON calls (invocation_id, started_us, id);
CREATE INDEX calls_tenant ON calls (tenant, started_us DESC, id DESC);
CREATE INDEX calls_agent ON calls (agent, started_us DESC, id DESC);
CREATE INDEX calls_provider ON calls (provider, started_us DESC, id DESC);
CREATE INDEX calls_model ON calls (model, started_us DESC, id DESC);
CREATE INDEX calls_response_model ON calls (response_model, started_us DESC, id DESC)
    WHERE response_model IS NOT NULL;
CREATE INDEX calls_status ON calls (status, started_us DESC, id DESC);
CREATE INDEX calls_user ON calls (user_id, started_us DESC, id DESC) WHERE user_id IS NOT NULL;
CREATE INDEX calls_session ON calls (session_id, started_us DESC, id DESC) WHERE session_id IS NOT NULL;
CREATE INDEX calls_trigger ON calls (trigger, started_us DESC, id DESC) WHERE trigger IS NOT NULL;
CREATE INDEX calls_prompt ON calls (prompt, started_us DESC, id DESC) WHERE prompt IS NOT NULL;

-- A call's content manifest (calls.rs `Manifest`, sealed when encryption is on): the
-- root addresses of its bodies, stored views, prompt variables and `q` texts.
-- Partitioned like `calls`, so a dropped day takes its manifests with it.
CREATE TABLE call_content (
    started_us bigint NOT NULL,
    call_id    text   NOT NULL,
    manifest   bytea  NOT NULL,
    PRIMARY KEY (started_us, call_id)
) PARTITION BY RANGE (started_us);
CREATE TABLE call_content_default PARTITION OF call_content DEFAULT;

-- Content-addressed values (content.rs templates and attachment blobs, sealed when
-- encryption is on). An address is the hash of what the value rebuilds to, so every
-- instance writing the same piece writes the same row: INSERT ... ON CONFLICT DO
-- NOTHING stores it once under any concurrency. `refs` counts parents
-- (atomic `refs = refs + n` upserts); a value is deleted only at refs = 0.
CREATE TABLE chunks (
    addr  bytea  PRIMARY KEY,
    value bytea  NOT NULL,
    refs  bigint NOT NULL DEFAULT 0
);
CREATE TABLE blobs (
    addr  bytea  PRIMARY KEY,
    value bytea  NOT NULL,
    refs  bigint NOT NULL DEFAULT 0
);

-- One row per agent run (InvocationRecord JSON), updated as rounds arrive from any
-- instance. Not partitioned: a run's start moves earlier when an earlier round
-- arrives late; retention deletes runs that ended before the cutoff.
CREATE TABLE invocations (
    id          text    PRIMARY KEY,
    started_us  bigint  NOT NULL,
    ended_us    bigint  NOT NULL,
    tenant      text,
    agent       text,
    status      text,
    trigger     text,
    user_id     text,
    session_id  text,
    prompt      text,
    cost_pusd   bigint  NOT NULL DEFAULT 0,
    record      jsonb   NOT NULL,
    summary     jsonb   NOT NULL
);
CREATE INDEX invocations_time ON invocations (started_us DESC, id DESC);
CREATE INDEX invocations_tenant ON invocations (tenant, started_us DESC, id DESC);
CREATE INDEX invocations_agent ON invocations (agent, started_us DESC, id DESC);
CREATE INDEX invocations_status ON invocations (status, started_us DESC, id DESC);
CREATE INDEX invocations_session ON invocations (session_id, started_us DESC) WHERE session_id IS NOT NULL;
CREATE INDEX invocations_ended ON invocations (ended_us);
-- The models of a run (requested and answering), for the model filter on runs.
CREATE TABLE invocation_models (
    invocation_id text NOT NULL REFERENCES invocations (id) ON DELETE CASCADE,
    model         text NOT NULL,
    PRIMARY KEY (model, invocation_id)
);

-- Sessions (index.rs `SessionSummary`), kept by atomic upserts from every instance.
CREATE TABLE sessions (
    id          text    PRIMARY KEY,
    tenant      text,
    agent       text,
    subject     text,
    calls       bigint  NOT NULL DEFAULT 0,
    input_tokens  bigint NOT NULL DEFAULT 0,
    output_tokens bigint NOT NULL DEFAULT 0,
    cost_pusd   bigint  NOT NULL DEFAULT 0,
    first_us    bigint  NOT NULL,
    last_us     bigint  NOT NULL
);
CREATE INDEX sessions_first ON sessions (first_us DESC, id DESC);
CREATE INDEX sessions_tenant ON sessions (tenant, first_us DESC, id DESC);

-- Rollups (index.rs `RollupCell`) per scope (`*`, `T`+tenant, `A`+agent,
-- `X`+tenant+0x1f+agent) and 15-minute bucket; bucket -1 is all time, with the
-- latency histogram. Instances add their batch's deltas with one upsert per cell
-- (`calls = calls + excluded.calls`), so no update is lost between instances.
CREATE TABLE rollups (
    scope          bytea    NOT NULL,
    bucket_us      bigint   NOT NULL,
    calls          bigint   NOT NULL DEFAULT 0,
    errors         bigint   NOT NULL DEFAULT 0,
    invocations    bigint   NOT NULL DEFAULT 0,
    cost_pusd      bigint   NOT NULL DEFAULT 0,
    input_tokens   bigint   NOT NULL DEFAULT 0,
    output_tokens  bigint   NOT NULL DEFAULT 0,
    latency_sum_us bigint   NOT NULL DEFAULT 0,
    hist           bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (scope, bucket_us)
);

-- Saturating addition for counters (a total that stops at its maximum is wrong; one
-- that overflows fails the batch), and element-wise addition of latency histograms.
CREATE FUNCTION llmtap_sat_add(a bigint, b bigint) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT LEAST(GREATEST(a::numeric + b, 0), 9223372036854775807)::bigint
$$;
CREATE FUNCTION llmtap_hist_add(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT coalesce(array_agg(llmtap_sat_add(coalesce(x, 0), coalesce(y, 0)) ORDER BY i), '{}')
    FROM generate_series(1, GREATEST(coalesce(array_length(a, 1), 0), coalesce(array_length(b, 1), 0))) AS i,
         LATERAL (SELECT a[i] AS x, b[i] AS y) AS pair
$$;

-- Latest rate-limit state per provider, key fingerprint and model (RateLimitState JSON).
CREATE TABLE ratelimits (
    provider        text   NOT NULL,
    key_fingerprint text   NOT NULL DEFAULT '',
    model           text   NOT NULL DEFAULT '',
    at_us           bigint NOT NULL,
    state           jsonb  NOT NULL,
    PRIMARY KEY (provider, key_fingerprint, model)
);
-- The remaining-capacity series and the 429s, partitioned by day like the calls.
CREATE TABLE ratelimit_points (
    provider        text   NOT NULL,
    key_fingerprint text   NOT NULL DEFAULT '',
    model           text   NOT NULL DEFAULT '',
    at_us           bigint NOT NULL,
    call_id         text   NOT NULL,
    is_429          boolean NOT NULL DEFAULT false,
    retry_after_s   double precision,
    point           jsonb  NOT NULL,
    PRIMARY KEY (provider, key_fingerprint, model, at_us, call_id)
) PARTITION BY RANGE (at_us);
CREATE TABLE ratelimit_points_default PARTITION OF ratelimit_points DEFAULT;

-- Append-only audit of body reads, written by API handlers of any instance.
CREATE TABLE audit (
    at_us  bigint    NOT NULL,
    seq    bigserial NOT NULL,
    entry  jsonb     NOT NULL,
    PRIMARY KEY (at_us, seq)
);

-- Where each instance's capture log has been applied up to (journal positions are
-- per instance and per data directory).
CREATE TABLE journal_applied (
    instance  text   PRIMARY KEY,
    position  bigint NOT NULL
);

-- Store-wide settings: `encrypted` (key id once sealed content exists), and the like.
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- The tables partitioned by day on their time column.
CREATE TABLE llmtap_partitioned (
    parent text PRIMARY KEY
);
INSERT INTO llmtap_partitioned VALUES ('calls'), ('call_content'), ('ratelimit_points');

-- Creates the UTC-day partitions covering [from_us, to_us) of every partitioned table,
-- named <table>_pYYYYMMDD. A day that already has rows in a default partition is left
-- there (attaching it would fail); those rows are deleted by retention row by row.
-- Returns the number of partitions created.
CREATE FUNCTION llmtap_ensure_partitions(from_us bigint, to_us bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day_us constant bigint := 86400000000;
    d bigint;
    t text;
    made integer := 0;
    name text;
    in_default boolean;
BEGIN
    FOR t IN SELECT parent FROM llmtap_partitioned LOOP
        d := from_us - (from_us % day_us);
        WHILE d < to_us LOOP
            name := t || '_p' || to_char(to_timestamp(d / 1000000) AT TIME ZONE 'UTC', 'YYYYMMDD');
            IF to_regclass(name) IS NULL THEN
                EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE %I >= %s AND %I < %s)',
                    t || '_default',
                    CASE WHEN t = 'ratelimit_points' THEN 'at_us' ELSE 'started_us' END, d,
                    CASE WHEN t = 'ratelimit_points' THEN 'at_us' ELSE 'started_us' END, d + day_us)
                    INTO in_default;
                IF NOT in_default THEN
                    EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                        name, t, d, d + day_us);
                    made := made + 1;
                END IF;
            END IF;
            d := d + day_us;
        END LOOP;
    END LOOP;
    RETURN made;
END $$;

-- Drops every day partition that ends at or before cutoff_us (whole days only) and
-- deletes the default partitions' rows older than the cutoff. Returns the partitions
-- dropped. Content values are released by the engine before (refcounts).
CREATE FUNCTION llmtap_drop_partitions_before(cutoff_us bigint) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname AS name, p.parent AS parent,
               pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM llmtap_partitioned p
        JOIN pg_inherits i ON i.inhparent = p.parent::regclass
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE c.relname <> p.parent || '_default'
    LOOP
        -- bound reads: FOR VALUES FROM ('lo') TO ('hi')
        IF substring(part.bound FROM 'TO \(''?(-?[0-9]+)''?\)')::bigint <= cutoff_us THEN
            EXECUTE format('DROP TABLE %I', part.name);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    DELETE FROM calls_default WHERE started_us < cutoff_us;
    DELETE FROM call_content_default WHERE started_us < cutoff_us;
    DELETE FROM ratelimit_points_default WHERE at_us < cutoff_us;
    RETURN dropped;
END $$;

-- The live stream: each instance's write_batch ends with
-- pg_notify('llmtap_batches', payload) inside the batch's transaction, so listeners
-- hear of a batch only once it is committed. Payload: JSON
-- {"instance": "...", "calls": ["c_...", ...], "invocations": ["...", ...]}, cut to
-- the ids that fit in 7,900 bytes and `"more": true` beyond; listeners read the rows.
COMMENT ON TABLE calls IS 'llmtap calls; live stream on NOTIFY channel llmtap_batches';
