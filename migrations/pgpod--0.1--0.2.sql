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

-- 60_queue: room on each page for a job's later versions; job_claim reads the policy in
-- one statement; job_complete keeps its plan;
-- jobs_prune reads the policy per kind, not per row.
ALTER TABLE pod.jobs SET (fillfactor = 40);
CREATE OR REPLACE FUNCTION pod.job_claim(job_kind text, worker text, max_jobs integer DEFAULT 100, lease interval DEFAULT NULL)
  RETURNS SETOF pod.jobs
  LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pod AS $$
DECLARE
  lease_end timestamptz;
  last_attempt integer;
BEGIN
  IF worker IS NULL OR worker = '' THEN
    RAISE EXCEPTION 'worker id is required' USING ERRCODE = '22023';
  END IF;
  IF max_jobs IS NULL OR max_jobs < 1 OR max_jobs > 10000 THEN
    RAISE EXCEPTION 'max_jobs must be between 1 and 10000, not %', max_jobs USING ERRCODE = '22023';
  END IF;
  -- The policy as pod.job_policy gives it, read in this one statement (its plan is
  -- kept for the session) rather than through nested pod.setting calls.
  SELECT now() + coalesce(job_claim.lease, k.lease,
                          (SELECT coalesce(o.value, d.value) #>> '{}' FROM pod.setting_defaults d
                             LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.lease')::interval),
         coalesce(k.retries,
                  (SELECT coalesce(o.value, d.value) FROM pod.setting_defaults d
                     LEFT JOIN pod.setting_overrides o USING (name) WHERE d.name = 'queue.retries')::integer) + 1
    INTO lease_end, last_attempt
    FROM (SELECT job_kind) q LEFT JOIN pod.job_kinds k ON k.kind = q.job_kind;
  IF lease_end <= now() THEN
    RAISE EXCEPTION 'lease must be positive' USING ERRCODE = '22023';
  END IF;
  RETURN QUERY
    UPDATE pod.jobs j
       SET state = 'running', attempts = j.attempts + 1, worker = job_claim.worker, run_at = lease_end
      FROM (SELECT c.id FROM pod.jobs c
             WHERE c.kind = job_kind AND c.state IN ('waiting', 'running') AND c.run_at <= now()
               AND (c.state = 'waiting' OR c.attempts < last_attempt)
             ORDER BY c.run_at
             LIMIT max_jobs
             FOR UPDATE SKIP LOCKED) claimed
     WHERE j.id = claimed.id
    RETURNING j.*;
END $$;

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
