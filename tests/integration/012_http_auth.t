#!/bin/bash
# The foundation's auth over HTTP, as a client uses it: register, login (the session
# records the client's address and user agent), the token reads /me, a wrong
# password and a duplicate email get PostgREST-style errors, and after logout the
# same token is refused with 401 at once.
. "$(dirname "$0")/tap.sh"
plan 9
url=$PGPOD_URL
post() { curl -s -o /tmp/pgpod-auth.$$ -w '%{http_code}' -X POST "$url$1" -H 'Content-Type: application/json' -A 'pgpod-test/1' "${@:3}" -d "$2"; }
body() { cat /tmp/pgpod-auth.$$; }
trap 'rm -f /tmp/pgpod-auth.$$' EXIT
email="http-$$@auth.test"

is "$(post /rpc/register "{\"email\":\"$email\",\"password\":\"http password\"}")" "200" "register over HTTP"
is "$(post /rpc/register "{\"email\":\"${email^^}\",\"password\":\"http password\"}") $(body | grep -o '"code":"23505"')" \
   '409 "code":"23505"' "the same email in other case: 409 with the SQLSTATE"
is "$(post /rpc/login "{\"email\":\"$email\",\"password\":\"wrong password\"}") $(body | grep -o '"message":"[^"]*"')" \
   '403 "message":"invalid email or password"' "a wrong password: 403 with a plain message"
is "$(post /rpc/login "{\"email\":\"$email\",\"password\":\"http password\"}")" "200" "login over HTTP"
token=$(body | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
sid=$(body | sed -n 's/.*"session_id" *: *"\([^"]*\)".*/\1/p')
is "$(q -c "SELECT ip || ' ' || user_agent FROM pod.sessions WHERE id = '$sid'")" "127.0.0.1/32 pgpod-test/1" \
   "the session records the client's address and user agent"
is "$(curl -s "$url/me?select=email" -H "Authorization: Bearer $token")" "[{\"email\":\"$email\"}]" "the token reads /me"
is "$(post /rpc/logout '{}' -H "Authorization: Bearer $token")" "200" "logout"
code=$(curl -s -o /tmp/pgpod-auth.$$ -w '%{http_code}' "$url/me" -H "Authorization: Bearer $token")
is "$code $(body | grep -o '"message":"[^"]*"')" '401 "message":"session has ended"' "the logged-out token is refused with 401 at once"
is "$(q -c "SELECT revoked_at IS NOT NULL FROM pod.sessions WHERE id = '$sid'")" "t" "the session is revoked"
done_testing
