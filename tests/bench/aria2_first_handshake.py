#!/usr/bin/python3
"""Which handshake does aria2c send first to a peer? A fake HTTP tracker names this
script's listener as the only peer of a torrent; the listener records the first bytes
of each connection (plain: 0x13 'BitTorrent protocol'; MSE: 96+ random bytes, a DH key)
and closes it, until a plain one came. usage: aria2_first_handshake.py TRACKER_PORT PEER_PORT TORRENT_OUT SECONDS"""
import hashlib, os, socket, struct, sys, threading, time
from http.server import BaseHTTPRequestHandler, HTTPServer
tport, pport, out, secs = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
def b(x):
    if isinstance(x, int): return b'i%de' % x
    if isinstance(x, bytes): return b'%d:%s' % (len(x), x)
    if isinstance(x, str): return b(x.encode())
    if isinstance(x, list): return b'l' + b''.join(map(b, x)) + b'e'
    return b'd' + b''.join(b(k) + b(v) for k, v in sorted(x.items())) + b'e'
data = b'x' * 40000
info = {'name': 'probe.bin', 'length': len(data), 'piece length': 16384,
        'pieces': b''.join(hashlib.sha1(data[i:i + 16384]).digest() for i in range(0, len(data), 16384))}
class T(BaseHTTPRequestHandler):
    def do_GET(self):
        body = b({'interval': 60, 'peers': socket.inet_aton('127.0.0.1') + struct.pack('>H', pport)})
        self.send_response(200); self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
srv = HTTPServer(('127.0.0.1', tport), T)
threading.Thread(target=srv.serve_forever, daemon=True).start()
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); ls.bind(('127.0.0.1', pport)); ls.listen(8)
# the torrent last: once it exists, the tracker and the listener are up
open(out + '.tmp', 'wb').write(b({'announce': 'http://127.0.0.1:%d/announce' % tport, 'info': info}))
os.rename(out + '.tmp', out)
ls.settimeout(0.2); t0 = time.time(); seen = []
while time.time() - t0 < secs and len(seen) < 3:
    try: c, _ = ls.accept()
    except socket.timeout: continue
    c.settimeout(2); first = b''
    try:
        while len(first) < 68:
            k = c.recv(68 - len(first))
            if not k: break
            first += k
    except OSError: pass
    kind = 'plain' if first.startswith(b'\x13BitTorrent protocol') else 'MSE (%d bytes, not the plain header)' % len(first)
    seen.append(kind); print('%.2f s: connection %d: %s' % (time.time() - t0, len(seen), kind), flush=True)
    c.close()
    if kind == 'plain':
        break
