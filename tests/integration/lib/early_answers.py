#!/usr/bin/python3
"""Early answers through real clients that send their whole body before reading
(no Expect: 100-continue): Python's http.client and requests. Each case must get
its HTTP answer (401/413/400), never ECONNRESET/EPIPE. Prints TAP lines; the
caller counts them. Usage: early_answers.py BASE_URL TOKEN BIG_BYTES ROUNDS"""
import http.client
import json
import sys
import urllib.parse

import requests

base, token, big, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
u = urllib.parse.urlsplit(base)
body = b"z" * big
small = b"s" * (900 << 10)  # under the limits of the test gateway (1 MiB)
n = 0
failed = 0


def check(name, fn, want_status, want_code=None):
    global n, failed
    bad = []
    for _ in range(rounds):
        try:
            status, text = fn()
            code = None
            try:
                code = json.loads(text).get("code")
            except ValueError:
                pass
            if status != want_status or (want_code and code != want_code):
                bad.append(f"{status} {text[:120]!r}")
        except Exception as e:  # ECONNRESET, EPIPE, ...
            bad.append(f"{type(e).__name__}: {e}")
    n += 1
    if bad:
        failed += 1
        print(f"not ok {n} - {name}")
        for b in bad[:3]:
            print(f"#   {b}")
    else:
        print(f"ok {n} - {name} ({rounds} times)")


def hc(method, path, headers, data):
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    try:
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def rq(method, path, headers, data):
    r = requests.request(method, base + path, headers=headers, data=data, timeout=30)
    return r.status_code, r.text


def chunks():
    for i in range(0, len(body), 65536):
        yield body[i:i + 65536]


auth = {"Authorization": "Bearer " + token}
for lib, call in (("http.client", hc), ("requests", rq)):
    check(f"{lib}: upload of {big} bytes without a token: 401",
          lambda: call("POST", "/upload", {"Content-Type": "application/octet-stream"}, body), 401)
    check(f"{lib}: upload over PGPOD_UPLOAD_MAX (Content-Length): 413",
          lambda: call("POST", "/upload", dict(auth, **{"Content-Type": "application/octet-stream"}), body), 413)
    check(f"{lib}: upload ({len(small)} bytes, under the limit) with a bad filename: 400",
          lambda: call("POST", "/upload?filename=a%2Fb", dict(auth, **{"Content-Type": "application/octet-stream"}), small), 400)
    check(f"{lib}: upload ({len(small)} bytes) with a bad token: 401",
          lambda: call("POST", "/upload", {"Content-Type": "application/octet-stream", "Authorization": "Bearer x.y.z"}, small), 401)
    check(f"{lib}: API body over PGPOD_BODY_MAX: 413",
          lambda: call("POST", "/rpc/gw_echo", {"Content-Type": "application/json"}, body), 413)
check("requests: chunked upload over PGPOD_UPLOAD_MAX (no Content-Length): 413",
      lambda: rq("POST", "/upload", dict(auth, **{"Content-Type": "application/octet-stream"}), chunks()), 413)
check("requests: chunked API body over PGPOD_BODY_MAX: 413",
      lambda: rq("POST", "/rpc/gw_echo", {"Content-Type": "application/json"}, chunks()), 413)
print(f"# {n} cases, {failed} failed")
sys.exit(1 if failed else 0)
