-- pgTAP: the job queue (sql/60_queue.sql): enqueue, claim, leases, completion,
-- backoff schedule, dead jobs, per-kind overrides, release, pruning, admin views and
-- bad inputs. Claim races between sessions are in tests/integration/300_federation_queue.t.
BEGIN;
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(59);

DELETE FROM pod.jobs;
INSERT INTO pod.job_kinds (kind, retries, base_delay, factor, lease, retention, description)
  VALUES ('test_q', NULL, NULL, NULL, NULL, NULL, 'queue test'),
         ('test_fast', 2, '10 milliseconds', 2, '5 seconds', '0 seconds', 'fast backoff test'),
         ('test_sleep', NULL, NULL, NULL, NULL, NULL, 'sleep lock test');

-- Bad input changes nothing.
SELECT throws_ok($$SELECT pod.job_enqueue('no_such_kind', '{}')$$, '22023', NULL, 'unknown kind is refused');
SELECT throws_ok($$SELECT pod.job_enqueue('test_q', '[1]')$$, '22023', NULL, 'a payload that is not an object is refused');
SELECT throws_ok($$SELECT pod.job_claim('test_q', '', 10)$$, '22023', NULL, 'an empty worker id is refused');
SELECT throws_ok($$SELECT pod.job_claim('test_q', 'w', 0)$$, '22023', NULL, 'max_jobs 0 is refused');
SELECT throws_ok($$SELECT pod.job_claim('test_q', 'w', 5, '-1 second')$$, '22023', NULL, 'a negative lease is refused');
SELECT throws_ok($$SELECT pod.job_fail(ARRAY[1::bigint, 2], ARRAY['x'], 'w')$$, '22023', NULL, 'ids and errors of different lengths are refused');
SELECT is((SELECT count(*) FROM pod.jobs), 0::bigint, 'no job was made by the refused calls');

-- Enqueue and claim.
SELECT lives_ok($$SELECT pod.job_enqueue('test_q', jsonb_build_object('n', g), 'http://t.example', now() - make_interval(secs => 10 - g)) FROM generate_series(1, 5) g$$,
                'five jobs enqueued, due one second apart');
SELECT pod.job_enqueue('test_q', '{"later": true}', NULL, now() + interval '1 hour');
CREATE TEMP TABLE c1 AS SELECT * FROM pod.job_claim('test_q', 'w1', 3);
SELECT is((SELECT count(*) FROM c1), 3::bigint, 'a claim takes at most max_jobs');
SELECT ok((SELECT bool_and(state = 'running' AND attempts = 1 AND worker = 'w1' AND lease_until = now() + interval '60 seconds'
                           AND run_at < now()) FROM c1),
          'claimed jobs are running, attempt 1, leased to the worker for the default lease (60 s), due time kept');
SELECT is((SELECT array[n_tup_upd, n_tup_hot_upd] FROM pg_stat_xact_user_tables WHERE relid = 'pod.jobs'::regclass),
          ARRAY[3::bigint, 3], 'the claim was 3 HOT updates (no index entry written)');
SELECT is((SELECT array_agg((payload ->> 'n')::int ORDER BY id) FROM c1), ARRAY[1, 2, 3], 'the jobs due first are claimed first');
CREATE TEMP TABLE c2 AS SELECT * FROM pod.job_claim('test_q', 'w2', 10);
SELECT is((SELECT count(*) FROM c2), 2::bigint, 'a second claim gets only what is left (not the leased, not the delayed)');
SELECT is((SELECT count(*) FROM pod.job_claim('test_q', 'w3', 10)), 0::bigint, 'nothing left to claim');

-- Completion only by the lease holder.
SELECT is(pod.job_complete(ARRAY(SELECT id FROM c1), 'w2'), 0, 'another worker cannot complete w1''s jobs');
SELECT is(pod.job_complete(ARRAY(SELECT id FROM c1 ORDER BY id LIMIT 2), 'w1'), 2, 'the holder completes a batch');
SELECT is((SELECT count(*) FROM pod.jobs WHERE state = 'done' AND finished_at IS NOT NULL), 2::bigint, 'completed jobs are done with finished_at');
SELECT is(pod.job_complete(ARRAY(SELECT id FROM c1 ORDER BY id LIMIT 2), 'w1'), 0, 'completing twice does nothing');

-- Lease expiry: the time the lease ran out is simulated by moving lease_until back.
UPDATE pod.jobs SET lease_until = now() - interval '1 second' WHERE id = (SELECT max(id) FROM c1);
CREATE TEMP TABLE c3 AS SELECT * FROM pod.job_claim('test_q', 'w3', 10);
SELECT is((SELECT array_agg(id) FROM c3), ARRAY[(SELECT max(id) FROM c1)], 'an expired lease is claimable again');
SELECT is((SELECT attempts FROM c3), 2, 'the new claim is the second attempt');
SELECT is(pod.job_complete(ARRAY(SELECT id FROM c3), 'w1'), 0, 'the worker whose lease expired cannot complete it any more');
SELECT is(pod.job_complete(ARRAY(SELECT id FROM c3), 'w3'), 1, 'the new holder can');

-- A lease that expires on the last allowed attempt: not claimed again, declared dead
-- by pod.jobs_prune (a job that kills its worker every time must not loop forever).
SELECT pod.job_enqueue('test_fast', '{"crash": true}');
UPDATE pod.jobs SET state = 'running', attempts = 3, worker = 'gone', lease_until = now() - interval '1 second'
 WHERE payload ? 'crash';
SELECT is((SELECT count(*) FROM pod.job_claim('test_fast', 'w4', 10)), 0::bigint, 'an expired lease on the last attempt (3 of 3) is not claimed');
UPDATE pod.jobs SET attempts = 2 WHERE payload ? 'crash';
SELECT is((SELECT attempts FROM pod.job_claim('test_fast', 'w4', 10)), 3, 'with an attempt left it is claimed (attempt 3)');
UPDATE pod.jobs SET lease_until = now() - interval '1 second' WHERE payload ? 'crash';
SELECT pod.jobs_prune();
SELECT is((SELECT state::text || ': ' || last_error FROM pod.jobs WHERE payload ? 'crash'),
          'dead: lease expired on the last attempt (the worker stopped or crashed)', 'jobs_prune declares it dead');
DELETE FROM pod.jobs WHERE payload ? 'crash';

-- Release: back at once, the attempt not counted.
SELECT is(pod.job_release(ARRAY(SELECT id FROM c2), 'w2'), 2, 'release gives the jobs back');
SELECT ok((SELECT bool_and(state = 'waiting' AND attempts = 0 AND worker IS NULL AND run_at <= now() AND lease_until IS NULL)
             FROM pod.jobs WHERE id IN (SELECT id FROM c2)), 'released jobs are waiting, due, attempt uncounted');

-- Backoff schedule of the default policy: 2 s × 3^(n−1) after failed attempt n, dead
-- after the failure of attempt 11 (10 retries), about 16.4 h of waiting in all.
DELETE FROM pod.jobs;
SELECT pod.job_enqueue('test_q', '{"backoff": true}');
CREATE TEMP TABLE delays (attempt int, delay interval, state pod.job_state);
DO $$
DECLARE j pod.jobs; n int;
BEGIN
  FOR n IN 1..11 LOOP
    SELECT * INTO j FROM pod.job_claim('test_q', 'wb', 1);
    PERFORM pod.job_fail(j.id, 'boom ' || n, 'wb');
    INSERT INTO delays SELECT n, x.run_at - now(), x.state FROM pod.jobs x WHERE x.id = j.id;
    UPDATE pod.jobs SET run_at = now() WHERE id = j.id AND state = 'waiting';   -- the wait elapses
  END LOOP;
END $$;
SELECT is((SELECT array_agg(extract(epoch FROM delay)::int ORDER BY attempt) FROM delays WHERE attempt <= 10),
          ARRAY[2, 6, 18, 54, 162, 486, 1458, 4374, 13122, 39366], 'delays are 2 s × 3^(attempt−1)');
SELECT is((SELECT sum(delay) FROM delays WHERE attempt <= 10), interval '59048 seconds', 'ten waits add up to 59048 s (16.4 h)');
SELECT is((SELECT array_agg(state::text ORDER BY attempt) FROM delays),
          ARRAY['waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'waiting', 'dead'],
          'the job waits after each of 10 failures and is dead after the 11th attempt fails');
SELECT is((SELECT last_error FROM pod.queue_dead), 'boom 11', 'a dead job is kept with its last error');
SELECT is((SELECT count(*) FROM pod.job_claim('test_q', 'wb', 10)), 0::bigint, 'a dead job is never claimed');
SELECT is(pod.job_fail((SELECT id FROM pod.queue_dead), 'again', 'wb'), 0, 'failing a dead job does nothing');

-- Per-kind override (the fast-backoff setting tests use).
SELECT pod.job_enqueue('test_fast', '{}');
CREATE TEMP TABLE fast (attempt int, delay interval, state pod.job_state);
DO $$
DECLARE j pod.jobs; n int;
BEGIN
  FOR n IN 1..3 LOOP
    SELECT * INTO j FROM pod.job_claim('test_fast', 'wf', 1);
    INSERT INTO fast SELECT n, j.run_at - now(), NULL;
    PERFORM pod.job_fail(j.id, 'fast ' || n, 'wf');
    UPDATE fast SET delay = (SELECT x.run_at - now() FROM pod.jobs x WHERE x.id = j.id),
                    state = (SELECT x.state FROM pod.jobs x WHERE x.id = j.id) WHERE attempt = n;
    UPDATE pod.jobs SET run_at = now() WHERE id = j.id AND state = 'waiting';
  END LOOP;
END $$;
SELECT is((SELECT array_agg(delay ORDER BY attempt) FROM fast WHERE attempt < 3),
          ARRAY[interval '0.01 s', interval '0.02 s'], 'per-kind base delay and factor apply (10 ms, ×2)');
SELECT is((SELECT state FROM fast WHERE attempt = 3), 'dead'::pod.job_state, 'per-kind retries apply (dead after 2 retries)');
SELECT is((pod.job_policy('test_fast')).lease, interval '5 seconds', 'per-kind lease applies');
SELECT is((pod.job_policy('test_q')).retries, 10, 'a kind without overrides takes queue.retries');
SELECT pod.set_setting('queue.retries', '4');
SELECT is((pod.job_policy('test_q')).retries, 4, 'changing queue.retries changes kinds without overrides');
SELECT is((pod.job_policy('test_fast')).retries, 2, 'but not kinds with their own');

-- Admin views.
DELETE FROM pod.jobs;
INSERT INTO pod.jobs (kind, created_at, run_at) SELECT 'test_q', now() - g * interval '1 minute', now() - g * interval '1 minute' FROM generate_series(1, 4) g;
INSERT INTO pod.jobs (kind) VALUES ('test_fast');
SELECT pod.job_claim('test_q', 'wv', 1);
SELECT is((SELECT jobs FROM pod.queue_depth WHERE kind = 'test_q' AND state = 'waiting'), 3::bigint, 'queue_depth counts by kind and state');
SELECT is((SELECT jobs FROM pod.queue_depth WHERE kind = 'test_q' AND state = 'running'), 1::bigint, 'queue_depth counts running jobs');
SELECT is((SELECT age FROM pod.queue_oldest_waiting WHERE kind = 'test_q'), interval '3 minutes', 'queue_oldest_waiting shows the oldest waiting job''s age');
SELECT is((SELECT count(*) FROM pod.queue_oldest_waiting), 2::bigint, 'one row per kind');

-- Pruning: done jobs past the retention go, recent ones and dead ones within
-- queue.dead_retention stay.
DELETE FROM pod.jobs;
INSERT INTO pod.jobs (kind, state, finished_at) VALUES
  ('test_q', 'done', now() - interval '2 days'),
  ('test_q', 'done', now() - interval '1 hour'),
  ('test_q', 'dead', now() - interval '2 days'),
  ('test_q', 'dead', now() - interval '31 days'),
  ('test_fast', 'done', now() - interval '1 second'),
  ('test_q', 'waiting', NULL);
SELECT is(pod.jobs_prune(), 3, 'prune removes old done jobs (kind retention too) and dead jobs past dead_retention');
SELECT is((SELECT array_agg(state::text || ':' || coalesce(extract(epoch FROM now() - finished_at)::int, -1) ORDER BY id) FROM pod.jobs),
          ARRAY['done:3600', 'dead:172800', 'waiting:-1'], 'what remains is recent, dead within retention, or unfinished');

-- NOTIFY is a statement-level trigger (one notification per statement and kind; the
-- integration test counts the notifications themselves).
SELECT is((SELECT tgtype & 1 FROM pg_trigger WHERE tgname = 'jobs_notify')::int, 0, 'the notify trigger is FOR EACH STATEMENT');
SELECT is(pod.job_channel('deliver'), 'pod_jobs_deliver', 'channel per kind');

-- Retry of a dead job (admin).
UPDATE pod.jobs SET state = 'dead' WHERE state = 'waiting';
SELECT ok(pod.job_retry((SELECT max(id) FROM pod.jobs WHERE state = 'dead')), 'a dead job can be retried');
SELECT throws_ok($$SELECT pod.job_retry(-1)$$, 'P0002', NULL, 'retrying a job that is not dead is an error');
SELECT is((SELECT attempts FROM pod.jobs WHERE id = (SELECT max(id) FROM pod.jobs)), 0, 'a retried job starts over');

-- Sleep locks (which inserts notify is tested across sessions in 300_federation_queue.t).
CREATE FUNCTION pg_temp.sleeping(k text) RETURNS bigint LANGUAGE sql AS $$
  SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 112 AND pid = pg_backend_pid()
     AND mode = 'ShareLock' AND classid = hashtext(k)::oid AND granted $$;
SELECT throws_ok($$SELECT pod.job_sleep(NULL)$$, '22023', NULL, 'job_sleep needs a kind');
SELECT is(pod.job_sleep('test_sleep'), true, 'job_sleep takes the kind''s sleep lock');
SELECT is(pod.job_sleep('test_sleep'), false, 'a second job_sleep finds it held');
SELECT is(pg_temp.sleeping('test_sleep'), 1::bigint, 'pg_locks shows it (advisory, SHARE, objsubid 112)');
SELECT is(pod.job_wake('test_sleep'), true, 'job_wake gives it back');
SELECT is(pod.job_wake('test_sleep'), false, 'a second job_wake has nothing to give back');
SELECT is((SELECT count(*) FROM pod.job_claim('test_sleep', 'ws', 5)) || '/' || pg_temp.sleeping('test_sleep'), '0/0',
          'a first short claim takes no sleep lock (its worker claims again)');
SELECT is((SELECT count(*) FROM pod.job_claim('test_sleep', 'ws', 5)) || '/' || pg_temp.sleeping('test_sleep'), '0/1',
          'the next claim takes it before it looks: its worker may sleep');
INSERT INTO pod.jobs (kind) SELECT 'test_sleep' FROM generate_series(1, 5);
SELECT is((SELECT count(*) FROM pod.job_claim('test_sleep', 'ws', 5)) || '/' || pg_temp.sleeping('test_sleep'), '5/0',
          'a full claim gives it back: its worker claims again, inserts need not wake it');

SELECT * FROM finish();
ROLLBACK;
