#!/usr/bin/python3
"""Seeder restart for make bench: starts the seeder binary (environment as
scripts/pgpod gives it) and measures the time until it answers a BitTorrent
handshake for every probe info hash; prints the seconds. Writes the seeder's pid
to PIDFILE so that scripts/pgpod stops it.
  seeder_restart.py SEEDER_BIN LOGFILE PIDFILE PEER_PORT HASH..."""
import os
import socket
import subprocess
import sys
import time

binary, logfile, pidfile, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
probes = [bytes.fromhex(h) for h in sys.argv[5:]]


def answers(h):
    try:
        s = socket.create_connection(('127.0.0.1', port), 1)
    except OSError:
        return False
    try:
        s.settimeout(1)
        s.sendall(b'\x13BitTorrent protocol' + bytes(8) + h + b'-BN0001-benchbenchbe')
        got = b''
        while len(got) < 68:
            k = s.recv(68 - len(got))
            if not k:
                return False
            got += k
        return got[28:48] == h
    except OSError:
        return False
    finally:
        s.close()


log = open(logfile, 'ab')
t0 = time.monotonic()
p = subprocess.Popen([binary], stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
open(pidfile, 'w').write('%d\n' % p.pid)
pending = list(probes)
while pending and time.monotonic() - t0 < 30:
    if answers(pending[0]):
        pending.pop(0)
    else:
        time.sleep(0.002)
print('%.3f' % (time.monotonic() - t0) if not pending else 'timeout')
