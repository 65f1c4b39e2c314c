#!/usr/bin/python3
"""lt_swarm.py — libtorrent (Debian's python3-libtorrent) for the tracker tests: make a
torrent, seed it, or run a seeder and a leecher that can find each other only through
the given tracker (DHT, LSD, UPnP, NAT-PMP, uTP off; no web seed).
  make DIR SIZE TRACKER_URL        -> prints the info hash (hex) of DIR/video.torrent
  seed DIR TRACKER_URL PORT        -> seeds DIR/video.mp4 until killed ("seeding" once announced)
  swarm DIR TRACKER_URL SEED_PORT LEECH_PORT TIMEOUT -> JSON outcome of one download"""
import hashlib, json, os, sys, time
import libtorrent as lt


def settings(port):
    return {
        'listen_interfaces': '127.0.0.1:%d' % port,
        'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'enable_outgoing_utp': False, 'enable_incoming_utp': False,
        'allow_multiple_connections_per_ip': True,
        'alert_mask': lt.alert.category_t.all_categories,
        'announce_to_all_trackers': True,
        'user_agent': 'pgpod-test',
    }


def make(d, size, url):
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, 'video.mp4')
    with open(path, 'wb') as f:
        f.write(os.urandom(size))
    fs = lt.file_storage()
    lt.add_files(fs, path)
    # v1 only (libtorrent 2 makes hybrid torrents by default); no tracker inside: the
    # tests add the one they test, so nothing else can give the peers away.
    t = lt.create_torrent(fs, 16384 * 4, flags=lt.create_torrent.v1_only)
    lt.set_piece_hashes(t, d)
    data = lt.bencode(t.generate())
    with open(os.path.join(d, 'video.torrent'), 'wb') as f:
        f.write(data)
    print(str(lt.torrent_info(data).info_hashes().v1))


def add(ses, d, url, save):
    ti = lt.torrent_info(os.path.join(d, 'video.torrent'))
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = save
    p.trackers = [url]
    return ses.add_torrent(p)


def drain(ses, log):
    for a in ses.pop_alerts():
        if isinstance(a, (lt.tracker_reply_alert, lt.tracker_error_alert, lt.tracker_warning_alert,
                          lt.peer_connect_alert, lt.scrape_reply_alert, lt.tracker_announce_alert)):
            log.append(a.message())


def seed(d, url, port):
    ses = lt.session(settings(port))
    h = add(ses, d, url, d)
    log = []
    announced = False
    while True:
        drain(ses, log)
        if not announced and any('received peers' in m for m in log):
            print('seeding', flush=True)
            announced = True
        if h.status().num_peers and log:
            log.clear()
        time.sleep(0.1)


def swarm(d, url, seed_port, leech_port, timeout):
    seeder = lt.session(settings(seed_port))
    leecher = lt.session(settings(leech_port))
    hs = add(seeder, d, url, d)
    dest = os.path.join(d, 'leech')
    os.makedirs(dest, exist_ok=True)
    # The seeder announces first, so that the leecher's announce finds it.
    log_s, log_l = [], []
    t0 = time.time()
    while time.time() - t0 < timeout and not any('received peers' in m for m in log_s):
        drain(seeder, log_s)
        time.sleep(0.05)
    hl = add(leecher, d, url, dest)
    while time.time() - t0 < timeout:
        drain(seeder, log_s)
        drain(leecher, log_l)
        if hl.status().is_seeding:
            break
        time.sleep(0.05)
    # Let the leecher announce its completion (event=completed) before leaving.
    n = sum('received peers' in m for m in log_l)
    t1 = time.time()
    while time.time() - t1 < 5 and sum('received peers' in m for m in log_l) == n:
        drain(leecher, log_l)
        time.sleep(0.05)
    st = hl.status()
    got = os.path.join(dest, 'video.mp4')
    same = os.path.exists(got) and hashlib.sha256(open(got, 'rb').read()).hexdigest() == \
        hashlib.sha256(open(os.path.join(d, 'video.mp4'), 'rb').read()).hexdigest()
    print(json.dumps({'finished': st.is_seeding, 'identical': same, 'seconds': round(time.time() - t0, 1),
                      'peers_from_tracker': st.list_peers, 'seeder_log': log_s[-3:], 'leecher_log': log_l[-5:]}))


if __name__ == '__main__':
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == 'make':
        make(a[0], int(a[1]), a[2])
    elif cmd == 'seed':
        seed(a[0], a[1], int(a[2]))
    elif cmd == 'swarm':
        swarm(a[0], a[1], int(a[2]), int(a[3]), float(a[4]))
