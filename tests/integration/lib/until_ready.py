#!/usr/bin/env python3
"""until_ready.py LOG COMMAND...: runs COMMAND with NOTIFY_SOCKET set to a socket of
our own (as systemd's Type=notify does), waits for its READY=1, sends it SIGTERM and
waits for it to exit; its stderr (and stdout) go to LOG. Exit status: 0 when it said
READY=1 and stopped, 1 when it never said it (30 s) or did not stop (20 s)."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

log, cmd = sys.argv[1], sys.argv[2:]
d = tempfile.mkdtemp(prefix="notify.")
path = os.path.join(d, "notify")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
sock.settimeout(0.2)
env = dict(os.environ, NOTIFY_SOCKET=path)
with open(log, "wb") as out:
    p = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    ready, deadline = False, time.monotonic() + 30
    try:
        while not ready and time.monotonic() < deadline and p.poll() is None:
            try:
                msg = sock.recv(4096).decode(errors="replace")
            except socket.timeout:
                continue
            ready = "READY=1" in msg.split("\n")
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            print("until_ready: %s did not stop within 20 s of SIGTERM" % cmd[0], file=sys.stderr)
            ready = False
    finally:
        if p.poll() is None:
            p.kill()
        sock.close()
        os.unlink(path)
        os.rmdir(d)
if not ready:
    print("until_ready: %s never said READY=1 (exit status %s)" % (cmd[0], p.returncode), file=sys.stderr)
sys.exit(0 if ready else 1)
