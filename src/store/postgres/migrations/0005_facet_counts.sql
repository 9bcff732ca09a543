-- llmtap PostgreSQL schema, version 5: calls per UTC day and facet value.
--
-- Why: a call list query over all of `calls` is planned over every day partition
-- and its indexes (about 4 ms at 40 partitions, more than the page's execution),
-- and a list's total was a count(*) that read every match. `call_facet_days` holds,
-- per UTC day, how many calls carry each value of the facets the sled engine's
-- facet cache counts (index.rs `PAIRED`: agent, provider, model, status, tenant,
-- trigger, prompt, has_session), and how many calls there are at all (`t=`). From
-- it, lists.rs finds from which day on a page's matches lie (so the page query names
-- that window and the planner prunes every other partition) and, for a one-facet
-- filter, the exact total. The writer adds each batch's counts in the batch's
-- transaction (batch.rs); retention deletes a dropped day's counts with it.
--
-- A facet is its tag character, then `=` and the value, or `#` and the hex SHA-256
-- of the value when it is longer than 200 bytes (index entries are limited to
-- about 2.7 kB, and a client chooses its model names). `facets::facet` is the same
-- rule in Rust.
CREATE TABLE call_facet_days (
    facet  text   NOT NULL,
    day_us bigint NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (facet, day_us)
);

CREATE FUNCTION llmtap_facet(tag text, value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(value) <= 200 THEN tag || '=' || value
                ELSE tag || '#' || encode(sha256(convert_to(value, 'UTF8')), 'hex') END
$$;

-- What is stored already: each call's facets once each (a call whose requested and
-- answering model are the same counts once for it).
INSERT INTO call_facet_days (facet, day_us, n)
SELECT f.f, c.started_us - c.started_us % 86400000000, count(*)
FROM calls c,
LATERAL unnest(ARRAY[
    't=',
    llmtap_facet('a', c.agent),
    llmtap_facet('p', c.provider),
    llmtap_facet('m', c.model),
    CASE WHEN c.response_model IS DISTINCT FROM c.model THEN llmtap_facet('m', c.response_model) END,
    llmtap_facet('s', c.status),
    llmtap_facet('n', c.tenant),
    llmtap_facet('r', c.trigger),
    llmtap_facet('o', c.prompt),
    CASE WHEN c.session_id IS NULL THEN 'h=0' ELSE 'h=1' END
]) AS f(f)
WHERE f.f IS NOT NULL
GROUP BY 1, 2;
