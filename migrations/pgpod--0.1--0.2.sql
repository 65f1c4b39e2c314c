-- pgpod 0.1 -> 0.2. Every change to sql/*.sql after 0.1 also goes here, in the
-- same order, so that a walked-up database equals a fresh one
-- (tests/integration/030_migrations.t compares their schemas).
\echo Use "ALTER EXTENSION pgpod UPDATE TO '0.2'" to load this file. \quit

-- 00_base: pod.setting in PL/pgSQL (its plan is kept; a SQL body was planned per call).
CREATE OR REPLACE FUNCTION pod.setting(setting_name text) RETURNS jsonb
  LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
BEGIN
  RETURN (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
            LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = setting_name);
END $$;

-- 60_queue: room on each page for a job's later versions; job_complete keeps its plan;
-- jobs_prune reads the policy per kind, not per row.
ALTER TABLE pod.jobs SET (fillfactor = 40);
CREATE OR REPLACE FUNCTION pod.job_complete(job_ids bigint[], worker text) RETURNS integer
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE n integer;
BEGIN
  UPDATE pod.jobs SET state = 'done', finished_at = now()
   WHERE id = ANY (job_ids) AND state = 'running' AND jobs.worker = job_complete.worker;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END $$;

CREATE OR REPLACE FUNCTION pod.jobs_prune() RETURNS integer
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
  UPDATE pod.jobs j
     SET state = 'dead', finished_at = now(),
         last_error = 'lease expired on the last attempt (the worker stopped or crashed)'
    FROM (SELECT (pod.setting('queue.retries'))::integer AS retries) d
   WHERE j.state = 'running' AND j.run_at < now()
     AND j.attempts > coalesce((SELECT k.retries FROM pod.job_kinds k WHERE k.kind = j.kind), d.retries);
  WITH d AS MATERIALIZED (
    SELECT (pod.setting('queue.retention') #>> '{}')::interval AS retention,
           (pod.setting('queue.dead_retention') #>> '{}')::interval AS dead_retention),
  bound AS MATERIALIZED (
    SELECT now() - least(d.retention, d.dead_retention,
                         (SELECT min(k.retention) FROM pod.job_kinds k)) AS newest
      FROM d),
  gone AS (
    DELETE FROM pod.jobs j
     USING d, bound
     WHERE j.state IN ('done', 'dead') AND j.finished_at < bound.newest
       AND ((j.state = 'done'
             AND j.finished_at < now() - coalesce((SELECT k.retention FROM pod.job_kinds k WHERE k.kind = j.kind),
                                                  d.retention))
         OR (j.state = 'dead' AND j.finished_at < now() - d.dead_retention))
    RETURNING 1)
  SELECT count(*)::integer FROM gone
$$;
