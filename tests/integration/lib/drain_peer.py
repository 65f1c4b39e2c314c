#!/usr/bin/python3
"""SIGTERM drains: a peer queues N block requests, SIGTERM goes to the seeder, and
every queued block must still arrive before the seeder closes the connection.
Prints "<blocks received> <connection closed: 1/0>".
  drain_peer.py PEER_PORT INFO_HASH_HEX SEEDER_PID N"""
import os
import signal
import socket
import struct
import sys

port, ih, pid, n = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection(('127.0.0.1', port), 5)
s.settimeout(10)
s.sendall(b'\x13BitTorrent protocol' + bytes(8) + ih + b'-TS0001-drainingpeer')


def recv_exact(k):
    b = b''
    while len(b) < k:
        x = s.recv(k - len(b))
        if not x:
            raise EOFError
        b += x
    return b


recv_exact(68)
s.sendall(struct.pack('>IB', 1, 2))
while True:
    ln = struct.unpack('>I', recv_exact(4))[0]
    m = recv_exact(ln) if ln else b''
    if m and m[0] == 1:
        break
# One write, no Nagle: every request has left this socket (and, on loopback, reached
# the seeder's) before the signal is sent.
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(b''.join(struct.pack('>IBIII', 13, 6, i, 0, 16384) for i in range(n)))
os.kill(pid, signal.SIGTERM)
got, closed = 0, 0
try:
    while True:
        ln = struct.unpack('>I', recv_exact(4))[0]
        m = recv_exact(ln) if ln else b''
        if m and m[0] == 7:
            got += 1
except (EOFError, ConnectionResetError):
    closed = 1
except socket.timeout:
    pass
print(got, closed)
