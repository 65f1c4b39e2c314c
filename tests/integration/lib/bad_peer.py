#!/usr/bin/python3
"""Hostile and well-behaved peers against the seeder: garbage, an unknown info hash,
an oversized message, requests beyond the file, a bad ut_metadata request; then a
good peer gets a block (compared with the file) and the metadata (whose SHA-1 must be
the info hash). Then the encrypted handshake (MSE, written here from its
specification): invalid keys, no synchronisation, an unknown info hash, a wrong
verification constant, and good ones that select plaintext and RC4 and get a block;
peers that stop half-way are dropped at the handshake deadline
(PGPOD_SEEDER_HANDSHAKE_MS, read from the environment, default 10 s).
One TAP line per case on stdout ("ok"/"not ok" + name).
  bad_peer.py PEER_PORT INFO_HASH_HEX FILE PIECE_LENGTH"""
import hashlib
import os
import secrets
import socket
import struct
import sys
import time

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


# Peers that stop half-way: checked at the end, after the handshake deadline.
deadline_s = int(os.environ.get('PGPOD_SEEDER_HANDSHAKE_MS', '10000')) / 1000.0
opened = time.time()
silent = connect()  # connects and sends nothing
short_garbage = connect()
short_garbage.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' + bytes(100))  # 127 bytes: could be an MSE key
half_plain = connect()
half_plain.sendall(b'\x13BitTorrent protocol' + bytes(8) + ih[:10])  # a plain handshake cut short

# 1. garbage instead of a handshake (not the plain handshake, so taken for an encrypted
# one, which finds no synchronisation in 1 KiB)
s = connect()
s.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n' + bytes(1000))
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

# --- the encrypted handshake (MSE) -----------------------------------------------------
P = int('FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563', 16)


class RC4:
    def __init__(self, key):
        S, j = list(range(256)), 0
        for i in range(256):
            j = (j + S[i] + key[i % len(key)]) % 256
            S[i], S[j] = S[j], S[i]
        self.S, self.i, self.j = S, 0, 0
        self.crypt(bytes(1024))

    def crypt(self, data):
        S, i, j, out = self.S, self.i, self.j, bytearray(data)
        for k in range(len(out)):
            i = (i + 1) & 255
            j = (j + S[i]) & 255
            S[i], S[j] = S[j], S[i]
            out[k] ^= S[(S[i] + S[j]) & 255]
        self.i, self.j = i, j
        return bytes(out)


def sha1(*parts):
    return hashlib.sha1(b''.join(parts)).digest()


def mse_start(pad=b''):
    """Sends Ya + PadA, reads Yb (and PadB, as far as it came): (socket, S as bytes)."""
    s = connect()
    x = secrets.randbits(160)
    s.sendall(pow(2, x, P).to_bytes(96, 'big') + pad)
    yb = recv_exact(s, 96)
    return s, pow(int.from_bytes(yb, 'big'), x, P).to_bytes(96, 'big')


def mse_step3(s, S, skey, provide, vc=bytes(8), ia=b''):
    """Sends step 3; returns the two RC4 streams (to the seeder, from it)."""
    out, inn = RC4(sha1(b'keyA', S, skey)), RC4(sha1(b'keyB', S, skey))
    req = sha1(b'req1', S) + bytes(a ^ b for a, b in zip(sha1(b'req2', skey), sha1(b'req3', S)))
    padc = secrets.token_bytes(secrets.randbelow(64))
    body = vc + struct.pack('>IH', provide, len(padc)) + padc + struct.pack('>H', len(ia)) + ia
    s.sendall(req + out.crypt(body))
    return out, inn


def mse_step4(s, inn):
    """Finds the seeder's VC (after PadB, up to 512 bytes) and reads crypto_select."""
    want, buf = inn.crypt(bytes(8)), b''  # what 8 zero bytes look like under keyB
    while want not in buf:
        if len(buf) > 512 + 8:
            raise EOFError('no VC from the seeder')
        buf += s.recv(1)
    rest = recv_exact(s, 6)
    return inn.crypt(rest)


def mse_session(provide):
    """A full encrypted handshake + BitTorrent handshake + interested; returns a reader
    and a writer of the payload stream and the crypto_select the seeder chose."""
    s, S = mse_start(secrets.token_bytes(100))
    hs = b'\x13BitTorrent protocol' + bytes(8) + ih + b'-TS0001-mseabcdefghi'
    out, inn = mse_step3(s, S, ih, provide, ia=hs)
    sel = struct.unpack('>IH', mse_step4(s, inn))[0]
    rc4 = sel == 2
    rd = (lambda n: inn.crypt(recv_exact(s, n))) if rc4 else (lambda n: recv_exact(s, n))
    wr = (lambda b: s.sendall(out.crypt(b))) if rc4 else s.sendall
    got = rd(68)
    wr(struct.pack('>IB', 1, 2))  # interested
    return s, rd, wr, sel, got


def block_over(rd, wr):
    n = min(16384, len(data))
    wr(struct.pack('>IBIII', 13, 6, 0, 0, n))
    while True:
        m = rd(struct.unpack('>I', rd(4))[0])
        if m and m[0] == 7:
            return m[9:] == data[:n]


# 9. an invalid key (Ya = 0) and (10.) no synchronisation hash within 512 bytes of padding
s = connect()
s.sendall(bytes(96))
report(closed_by_peer(s), 'MSE: Ya = 0: disconnected')
s, S = mse_start()
s.sendall(secrets.token_bytes(600))
report(closed_by_peer(s), 'MSE: no HASH(req1, S) within 512 bytes of padding: disconnected')
# 11. an info hash the pod does not seed, 12. a wrong verification constant,
# 13. neither plaintext nor RC4 offered
s, S = mse_start()
mse_step3(s, S, bytes(20), 3)
report(closed_by_peer(s), 'MSE: an unknown info hash: disconnected')
s, S = mse_start()
mse_step3(s, S, ih, 3, vc=b'\x01' * 8)
report(closed_by_peer(s), 'MSE: a wrong verification constant: disconnected')
s, S = mse_start()
mse_step3(s, S, ih, 4)
report(closed_by_peer(s), 'MSE: crypto_provide without plaintext or RC4: disconnected')
# 14./15. good encrypted handshakes: plaintext when offered, RC4 when it alone is
for provide, want in ((3, 1), (2, 2)):
    s, rd, wr, sel, got = mse_session(provide)
    report(sel == want and got[28:48] == ih and block_over(rd, wr),
           'MSE offering %s: %s selected, a block equals the file' % (
               'plaintext and RC4' if provide == 3 else 'RC4 only', 'plaintext' if want == 1 else 'RC4'))
    s.close()

# The ones that stopped half-way: dropped once the handshake deadline passed.
for sock, name in ((silent, 'a peer that sends nothing'),
                   (short_garbage, '127 bytes of garbage then silence'),
                   (half_plain, 'a plain handshake cut short')):
    sock.settimeout(max(deadline_s + 5 - (time.time() - opened), 1))
    report(closed_by_peer(sock), '%s: disconnected at the handshake deadline' % name)
sys.exit(1 if failed else 0)
