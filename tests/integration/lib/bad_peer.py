#!/usr/bin/python3
"""Hostile and well-behaved peers against the seeder: garbage, an unknown info hash,
an oversized message, requests beyond the file, a bad ut_metadata request; then a
good peer gets a block (compared with the file) and the metadata (whose SHA-1 must be
the info hash). One TAP line per case on stdout ("ok"/"not ok" + name).
  bad_peer.py PEER_PORT INFO_HASH_HEX FILE PIECE_LENGTH"""
import hashlib
import socket
import struct
import sys

port, ih, path, plen = int(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3], int(sys.argv[4])
data = open(path, 'rb').read()
npieces = (len(data) + plen - 1) // plen
failed = 0


def report(cond, name):
    global failed
    print(('ok' if cond else 'not ok') + ' - ' + name)
    failed += 0 if cond else 1


def connect():
    s = socket.create_connection(('127.0.0.1', port), 5)
    s.settimeout(5)
    return s


def handshake(s, h=ih, ext=True):
    reserved = bytearray(8)
    if ext:
        reserved[5] = 0x10
    s.sendall(b'\x13BitTorrent protocol' + bytes(reserved) + h + b'-TS0001-abcdefghijkl')


def recv_exact(s, n):
    b = b''
    while len(b) < n:
        k = s.recv(n - len(b))
        if not k:
            raise EOFError('closed after %d of %d bytes' % (len(b), n))
        b += k
    return b


def read_msg(s):
    n = struct.unpack('>I', recv_exact(s, 4))[0]
    return recv_exact(s, n) if n else b''


def closed_by_peer(s):
    """True when the seeder closes the connection (reads until EOF or timeout)."""
    try:
        while True:
            if not s.recv(65536):
                return True
    except socket.timeout:
        return False
    except ConnectionResetError:
        return True


def bencode(v):
    if isinstance(v, int):
        return b'i%de' % v
    if isinstance(v, bytes):
        return b'%d:%s' % (len(v), v)
    if isinstance(v, str):
        return bencode(v.encode())
    if isinstance(v, dict):
        return b'd' + b''.join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b'e'
    raise TypeError(v)


def session():
    """A handshaken, unchoked peer: returns (socket, our ut_metadata id on the seeder)."""
    s = connect()
    handshake(s)
    hs = recv_exact(s, 68)
    assert hs[28:48] == ih, 'handshake echoes the info hash'
    ut = None
    s.sendall(struct.pack('>IBB', 2 + len(bencode({'m': {'ut_metadata': 3}})), 20, 0) + bencode({'m': {'ut_metadata': 3}}))
    s.sendall(struct.pack('>IB', 1, 2))  # interested
    while True:
        m = read_msg(s)
        if m and m[0] == 20 and m[1] == 0:
            d = m[2:]
            i = d.find(b'11:ut_metadatai')
            ut = int(d[i + 15:d.index(b'e', i + 15)])
        if m and m[0] == 1:  # unchoke
            return s, ut


# 1. garbage instead of a handshake
s = connect()
s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' + bytes(100))
report(closed_by_peer(s), 'garbage instead of a handshake: disconnected')
# 2. an info hash the pod does not seed
s = connect()
handshake(s, h=bytes(20))
report(closed_by_peer(s), 'an unknown info hash: disconnected without a handshake')
# 3. an oversized message
s, ut = session()
s.sendall(struct.pack('>I', 0xfffffff0) + b'\x07')
report(closed_by_peer(s), 'a 4 GiB message length: disconnected')
# 4. a request beyond the last piece
s, ut = session()
s.sendall(struct.pack('>IBIII', 13, 6, npieces, 0, 16384))
report(closed_by_peer(s), 'a request for piece %d of %d: disconnected' % (npieces, npieces))
# 5. a request past the end of the last piece
s, ut = session()
last = len(data) - (npieces - 1) * plen
s.sendall(struct.pack('>IBIII', 13, 6, npieces - 1, max(last - 8, 0), 16))
report(closed_by_peer(s), 'a request past the end of the file: disconnected')
# 6. a bad ut_metadata piece is rejected (msg_type 2), the connection stays
s, ut = session()
req = bencode({'msg_type': 0, 'piece': 99})
s.sendall(struct.pack('>IBB', 2 + len(req), 20, ut) + req)
m = read_msg(s)
while m and m[0] != 20:
    m = read_msg(s)
report(m[0] == 20 and m[1] == 3 and b'8:msg_typei2e' in m, 'ut_metadata for a piece that does not exist: rejected')
# 7. a good peer on the same connection: a block of the last piece and all metadata
off = (npieces - 1) * plen
n = min(16384, len(data) - off)
s.sendall(struct.pack('>IBIII', 13, 6, npieces - 1, 0, n))
m = read_msg(s)
while m and m[0] != 7:
    m = read_msg(s)
report(m[0] == 7 and struct.unpack('>II', m[1:9]) == (npieces - 1, 0) and m[9:] == data[off:off + n],
       'after all that, a block of the last piece equals the file')
meta, piece = b'', 0
while True:
    req = bencode({'msg_type': 0, 'piece': piece})
    s.sendall(struct.pack('>IBB', 2 + len(req), 20, ut) + req)
    m = read_msg(s)
    while m and m[0] != 20:
        m = read_msg(s)
    body = m[2:]
    end = body.index(b'ee') + 2  # the dictionary ends with total_size's "e" and its own
    total = int(body[body.index(b'10:total_sizei') + 14:body.index(b'e', body.index(b'10:total_sizei') + 14)])
    meta += body[end:]
    piece += 1
    if len(meta) >= total:
        break
report(hashlib.sha1(meta).digest() == ih, 'ut_metadata gives the info dictionary (SHA-1 = info hash, %d bytes)' % len(meta))
# 8. cancel: a queued request cancelled before it is served is not answered... at least
# the connection survives it
s.sendall(struct.pack('>IBIII', 13, 8, 0, 0, 16384))
s.sendall(struct.pack('>I', 0))  # keep-alive
s.sendall(struct.pack('>IBIII', 13, 6, 0, 0, 16384))
m = read_msg(s)
while m and m[0] != 7:
    m = read_msg(s)
report(m[9:] == data[:16384], 'cancel and keep-alive accepted; the next block is served')
sys.exit(1 if failed else 0)
