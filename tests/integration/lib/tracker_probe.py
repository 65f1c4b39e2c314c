#!/usr/bin/python3
"""tracker_probe.py — a small client of the pod's tracker for the tests: HTTP announce
and scrape (bencoded answers decoded to JSON), UDP (BEP 15) connect/announce/scrape,
and raw sends (garbage, floods). Prints one JSON object per request."""
import json, os, random, socket, struct, sys, urllib.parse, urllib.request


def bdecode(b, i=0):
    c = b[i:i + 1]
    if c == b'i':
        j = b.index(b'e', i)
        return int(b[i + 1:j]), j + 1
    if c == b'l':
        out, i = [], i + 1
        while b[i:i + 1] != b'e':
            v, i = bdecode(b, i)
            out.append(v)
        return out, i + 1
    if c == b'd':
        out, i = {}, i + 1
        while b[i:i + 1] != b'e':
            k, i = bdecode(b, i)
            v, i = bdecode(b, i)
            out[k.decode('latin1')] = v
        return out, i + 1
    j = b.index(b':', i)
    n = int(b[i:j])
    return b[j + 1:j + 1 + n], j + 1 + n


def jsonable(v):
    if isinstance(v, bytes):
        try:
            s = v.decode('ascii')
            if s.isprintable():
                return s
        except UnicodeDecodeError:
            pass
        return {'hex': v.hex()}
    if isinstance(v, list):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


def compact(b, each):
    out = []
    for k in range(0, len(b), each):
        ip = socket.inet_ntop(socket.AF_INET if each == 6 else socket.AF_INET6, b[k:k + each - 2])
        out.append('%s:%d' % (ip, struct.unpack('>H', b[k + each - 2:k + each])[0]))
    return out


def http_get(url, source=None):
    if source:
        # Bind the client side to another loopback address (127.0.0.2: "another client").
        u = urllib.parse.urlsplit(url)
        s = socket.create_connection((u.hostname, u.port), source_address=(source, 0))
        s.sendall(b'GET ' + (u.path + '?' + u.query).encode() + b' HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        data = b''
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        s.close()
        head, _, body = data.partition(b'\r\n\r\n')
        return int(head.split()[1]), body
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def announce(base, hash_hex, peer_id, port, left, event=None, compact_flag=1, source=None, numwant=None):
    q = 'info_hash=%s&peer_id=%s&port=%d&uploaded=0&downloaded=0&left=%d&compact=%d' % (
        urllib.parse.quote(bytes.fromhex(hash_hex)), urllib.parse.quote(peer_id.encode()), port, left, compact_flag)
    if event:
        q += '&event=' + event
    if numwant is not None:
        q += '&numwant=%d' % numwant
    status, body = http_get(base + '?' + q, source)
    d, _ = bdecode(body)
    out = {'status': status}
    out.update(jsonable({k: v for k, v in d.items() if k not in ('peers', 'peers6')}))
    if isinstance(d.get('peers'), bytes):
        out['peers'] = compact(d['peers'], 6)
    elif 'peers' in d:
        out['peers'] = ['%s:%d' % (p['ip'].decode(), p['port']) for p in d['peers']]
        out['peer_ids'] = [jsonable(p.get('peer id')) for p in d['peers']]
    if isinstance(d.get('peers6'), bytes):
        out['peers6'] = compact(d['peers6'], 18)
    return out


def scrape(base, hashes):
    q = '&'.join('info_hash=' + urllib.parse.quote(bytes.fromhex(h)) for h in hashes)
    status, body = http_get(base.replace('/announce', '/scrape') + '?' + q)
    d, _ = bdecode(body)
    out = {'status': status}
    if 'files' in d:
        out['files'] = {k.encode('latin1').hex(): v for k, v in d['files'].items()}
    else:
        out.update(jsonable(d))
    return out


def udp_request(host, port, payload_fn, timeout=3.0, bad_cid=False):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    tid = random.getrandbits(32)
    s.sendto(struct.pack('>QII', 0x41727101980, 0, tid), (host, port))
    data = s.recv(2048)
    action, rtid, cid = struct.unpack('>IIQ', data[:16])
    assert action == 0 and rtid == tid, 'bad connect reply'
    if bad_cid:
        cid ^= 1
    tid = random.getrandbits(32)
    s.sendto(struct.pack('>QII', cid, *payload_fn()[0:1], tid) + payload_fn()[1], (host, port))
    data = s.recv(4096)
    s.close()
    action, rtid = struct.unpack('>II', data[:8])
    assert rtid == tid, 'transaction id differs'
    return action, data[8:]


def udp_announce(host, port, hash_hex, peer_id, peer_port, left, event=0, bad_cid=False):
    def payload():
        return (1, bytes.fromhex(hash_hex) + peer_id.encode() +
                struct.pack('>QQQIIIiH', 0, left, 0, event, 0, 0, -1, peer_port))
    action, rest = udp_request(host, port, payload, bad_cid=bad_cid)
    if action == 3:
        return {'error': rest.decode()}
    interval, leechers, seeders = struct.unpack('>III', rest[:12])
    return {'interval': interval, 'leechers': leechers, 'seeders': seeders,
            'peers': compact(rest[12:], 6 if ':' not in host else 18)}


def udp_scrape(host, port, hashes):
    def payload():
        return (2, b''.join(bytes.fromhex(h) for h in hashes))
    action, rest = udp_request(host, port, payload)
    if action == 3:
        return {'error': rest.decode()}
    return {'files': [dict(zip(('seeders', 'completed', 'leechers'), struct.unpack('>III', rest[k:k + 12])))
                      for k in range(0, len(rest), 12)]}


class WS:
    """A minimal WebSocket client (RFC 6455) that can also send what a good one never would."""

    def __init__(self, host, port, path='/announce'):
        self.s = socket.create_connection((host, port), timeout=5)
        key = 'dGhlIHNhbXBsZSBub25jZQ=='
        self.s.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                        'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % (path, host, key)).encode())
        head = b''
        while b'\r\n\r\n' not in head:
            d = self.s.recv(1)
            if not d:
                raise EOFError('closed during the handshake')
            head += d
        self.status = int(head.split()[1])
        self.accept = [l.split(b': ')[1].decode() for l in head.split(b'\r\n') if l.lower().startswith(b'sec-websocket-accept')]
        self.buf = b''

    def send(self, payload, opcode=1, mask=True, fin=True, length=None):
        if isinstance(payload, str):
            payload = payload.encode()
        n = len(payload) if length is None else length
        h = bytes([(0x80 if fin else 0) | opcode])
        m = 0x80 if mask else 0
        if n < 126:
            h += bytes([m | n])
        elif n < 65536:
            h += bytes([m | 126]) + struct.pack('>H', n)
        else:
            h += bytes([m | 127]) + struct.pack('>Q', n)
        if mask:
            k = os.urandom(4)
            h += k
            payload = bytes(b ^ k[i % 4] for i, b in enumerate(payload))
        self.s.sendall(h + payload)

    def recv(self):
        """(opcode, payload) of the next frame, or None when the connection closed."""
        def need(n):
            while len(self.buf) < n:
                d = self.s.recv(65536)
                if not d:
                    return False
                self.buf += d
            return True
        if not need(2):
            return None
        n = self.buf[1] & 0x7f
        off = 2
        if n == 126:
            need(4)
            n, off = struct.unpack('>H', self.buf[2:4])[0], 4
        elif n == 127:
            need(10)
            n, off = struct.unpack('>Q', self.buf[2:10])[0], 10
        if not need(off + n):
            return None
        op, payload = self.buf[0] & 0x0f, self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return op, payload

    def closed(self):
        try:
            while True:
                f = self.recv()
                if f is None:
                    return True
        except (socket.timeout, ConnectionError):
            return False


def binstr(hex_or_text):
    b = bytes.fromhex(hex_or_text) if len(hex_or_text) == 40 else hex_or_text.encode()
    return b.decode('latin1')


def ws_cmd(host, port, mode, *args):
    w = WS(host, int(port))
    out = {'status': w.status}
    if mode == 'handshake':
        out['accept'] = w.accept
    elif mode == 'oversized':  # a frame header announcing far more than the tracker accepts
        w.send(b'x' * 1000, length=100 * 1024 * 1024)
        f = w.recv()
        out['close'] = f and f[0] == 8 and struct.unpack('>H', f[1][:2])[0]
        out['closed'] = w.closed()
    elif mode == 'unmasked':
        w.send('{"action":"scrape"}', mask=False)
        f = w.recv()
        out['close'] = f and f[0] == 8 and struct.unpack('>H', f[1][:2])[0]
        out['closed'] = w.closed()
    elif mode == 'messages':  # each arg a JSON text; prints each answer
        out['answers'] = []
        for a in args:
            w.send(a)
            f = w.recv()
            out['answers'].append(json.loads(f[1]) if f and f[0] == 1 else f and list(f))
        w.send(b'', opcode=9)
        f = w.recv()
        out['pong'] = f is not None and f[0] == 10
    elif mode == 'announce':  # HASH PEER_ID LEFT
        w.send(json.dumps({'action': 'announce', 'info_hash': binstr(args[0]), 'peer_id': binstr(args[1]),
                           'left': int(args[2]), 'event': 'started', 'numwant': 0, 'offers': []}))
        f = w.recv()
        d = json.loads(f[1])
        if 'info_hash' in d:
            d['info_hash'] = d['info_hash'].encode('latin1').hex()
        out.update(d)
    return out


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'announce':  # URL HASH PEER_ID PORT LEFT [EVENT] [COMPACT] [SOURCE]
        ev = args[5] if len(args) > 5 and args[5] != '-' else None
        comp = int(args[6]) if len(args) > 6 else 1
        src = args[7] if len(args) > 7 else None
        print(json.dumps(announce(args[0], args[1], args[2], int(args[3]), int(args[4]), ev, comp, src)))
    elif cmd == 'scrape':  # URL HASH...
        print(json.dumps(scrape(args[0], args[1:])))
    elif cmd == 'udp-announce':  # HOST PORT HASH PEER_ID PEER_PORT LEFT [EVENT] [badcid]
        print(json.dumps(udp_announce(args[0], int(args[1]), args[2], args[3], int(args[4]), int(args[5]),
                                      int(args[6]) if len(args) > 6 else 0, len(args) > 7)))
    elif cmd == 'udp-scrape':  # HOST PORT HASH...
        print(json.dumps(udp_scrape(args[0], int(args[1]), args[2:])))
    elif cmd == 'udp-garbage':  # HOST PORT COUNT
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for k in range(int(args[2])):
            n = random.randint(0, 1500)
            s.sendto(os.urandom(n), (args[0], int(args[1])))
        # A connect-shaped packet with a wrong protocol id, and an announce with a forged id.
        s.sendto(struct.pack('>QII', 12345, 0, 1), (args[0], int(args[1])))
        s.sendto(struct.pack('>QII', 42, 1, 1) + os.urandom(82), (args[0], int(args[1])))
        print(json.dumps({'sent': int(args[2]) + 2}))
    elif cmd == 'http-flood':  # URL COUNT: keep-alive GETs as fast as possible on one socket
        u = urllib.parse.urlsplit(args[0])
        s = socket.create_connection((u.hostname, u.port))
        req = ('GET %s?%s HTTP/1.1\r\nHost: x\r\n\r\n' % (u.path, u.query)).encode()
        n = int(args[1])
        s.sendall(req * n)
        data = b''
        while data.count(b'HTTP/1.1 ') < n:
            d = s.recv(1 << 20)
            if not d:
                break
            data += d
        s.close()
        print(json.dumps({'answers': data.count(b'HTTP/1.1 '),
                          'refused': data.count(b'too many requests')}))
    elif cmd == 'raw':  # HOST PORT: sends stdin as is, prints the answer's first line
        s = socket.create_connection((args[0], int(args[1])), timeout=10)
        try:
            s.sendall(sys.stdin.buffer.read())
        except ConnectionError:
            pass
        data = b''
        try:
            while b'\r\n' not in data:
                d = s.recv(4096)
                if not d:
                    break
                data += d
        except ConnectionError:
            pass
        print(data.split(b'\r\n')[0].decode('latin1'))
    elif cmd == 'ws':  # HOST PORT MODE [ARGS]
        print(json.dumps(ws_cmd(*args)))
    else:
        sys.exit('unknown command ' + cmd)


if __name__ == '__main__':
    main()
