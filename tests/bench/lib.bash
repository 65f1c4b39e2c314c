# Shared by the benchmarks (sourced). nginx_start WORKERS CONNECTIONS CHECK_URL HTTP_LINES
# writes an nginx configuration under $work/nginx whose http block holds HTTP_LINES
# (directives and the server block), starts nginx in the foreground of a background
# job, sets nginx_pid, and returns once CHECK_URL answers 2xx (1 when it never does).
nginx_start() {
  local workers=$1 conns=$2 check=$3 http_lines=$4 i
  mkdir -p "$work/nginx"
  cat >"$work/nginx.conf" <<CONF
worker_processes $workers;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
$( [[ $(id -u) -eq 0 ]] && echo "user root;" )
events { worker_connections $conns; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
$http_lines
}
CONF
  nginx -p "$work/nginx" -c "$work/nginx.conf" >"$work/nginx/out.log" 2>&1 &
  nginx_pid=$!
  for ((i = 0; i < 200; i++)); do
    curl -sf -o /dev/null "$check" && return 0
    kill -0 "$nginx_pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "nginx did not start: $(tail -3 "$work/nginx/error.log" "$work/nginx/out.log" 2>/dev/null)" >&2
  return 1
}

# CPU ticks (user + system) of process $1 and its children, live and reaped.
cpu_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v root="$1" '{
    pid = $1; sub(/^[^(]*\(.*\) /, "")
    if (pid == root) t += $12 + $13 + $14 + $15
    else if ($2 == root) t += $12 + $13
  } END { printf "%d\n", t }'
}
