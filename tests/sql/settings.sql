-- settings: pod settings are SQL; each change is checked against its default.
\set ON_ERROR_STOP 1
\set QUIET 1
BEGIN;
SELECT plan(11);
-- Overrides the instance already has (scripts/pgpod sets torrent.tracker_port).
SELECT count(*)::int AS overrides_before FROM pod.setting_overrides WHERE name <> 'session.lifetime' \gset

SELECT is(pod.setting('session.lifetime'), '"30 days"'::jsonb, 'a default');
SELECT lives_ok($$SELECT pod.set_setting('session.lifetime', '"7 days"')$$, 'change an interval setting');
SELECT is((SELECT value FROM pod.settings WHERE name = 'session.lifetime'), '"7 days"'::jsonb, 'the change is what pod.settings shows');
SELECT throws_ok($$SELECT pod.set_setting('session.lifetime', '"soon"')$$, '22023', NULL, 'a non-interval refused');
SELECT throws_ok($$SELECT pod.set_setting('queue.lease', '"-5 seconds"')$$, '22023', NULL, 'a negative interval refused');
SELECT throws_ok($$SELECT pod.set_setting('queue.retries', '"ten"')$$, '22023', NULL, 'wrong JSON type refused');
SELECT throws_ok($$SELECT pod.set_setting('queue.factor', '0.5')$$, '22023', NULL, 'a number out of its bounds refused');
SELECT throws_ok($$SELECT pod.set_setting('federation.inbox_reject_mode', '"shrug"')$$, '22023', NULL, 'a value not in the allowed list refused');
SELECT throws_ok($$SELECT pod.set_setting('nope', '1')$$, '22023', 'unknown setting "nope"', 'an unknown setting refused');
SELECT is((SELECT count(*)::int FROM pod.setting_overrides), :overrides_before + 1, 'refused changes changed nothing');
SET LOCAL ROLE pgpod_user;
SELECT throws_ok($$SELECT pod.set_setting('session.lifetime', '"1 year"')$$, '42501', NULL, 'a user cannot change settings');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
