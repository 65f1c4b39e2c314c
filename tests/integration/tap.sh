# tap.sh — a few TAP helpers for the bash integration tests (sourced, not run).
# Each test prints a plan, "ok N - name" / "not ok N - name", and exits non-zero on failure.
tap_n=0
tap_failed=0
plan() { echo "1..$1"; }
ok() { # ok CONDITION-EXIT-STATUS NAME
  tap_n=$((tap_n + 1))
  if [[ $1 -eq 0 ]]; then echo "ok $tap_n - $2"; else echo "not ok $tap_n - $2"; tap_failed=$((tap_failed + 1)); fi
  [[ $1 -eq 0 ]] # the status is the test's, so a test can stop when nothing after it could pass
}
is() { # is GOT WANT NAME
  tap_n=$((tap_n + 1))
  if [[ "$1" == "$2" ]]; then echo "ok $tap_n - $3"
  else echo "not ok $tap_n - $3"; printf "#   got:  %s\n#   want: %s\n" "$1" "$2" >&2; tap_failed=$((tap_failed + 1)); fi
}
# wait_for SECONDS COMMAND...: polls COMMAND every 0.1 s until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do ((SECONDS < deadline)) || return 1; sleep 0.1; done
}
done_testing() { exit $((tap_failed > 0)); }
q() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
