-- 99_privileges: the last word on function privileges. PostgreSQL lets PUBLIC execute
-- every new function (and default privileges do not apply inside an extension
-- script), so this takes EXECUTE back on all of pod and api, leaving only the grants
-- each file made to named roles, plus the helpers row-level security policies and
-- invoker triggers call (pure functions that reveal nothing).

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA pod FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA api FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    pod.jwt_claims(), pod.current_user_id(), pod.is_admin(), pod.setting(text),
    pod.room_affiliation(uuid), pod.can_read_room(uuid), pod.can_moderate_room(uuid),
    pod.can_read_file(uuid), pod.owns_channel(bigint),
    pod.email_is_valid(text), pod.validate_chat_options(jsonb), pod.base64url(bytea), pod.base64url_decode(text)
  TO pgpod_anon, pgpod_user, pgpod_admin, pgpod_worker;
