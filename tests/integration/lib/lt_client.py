#!/usr/bin/python3
"""A libtorrent client for the seeder tests (Debian's python3-libtorrent): downloads
a magnet link or a .torrent into a directory with DHT, local discovery, UPnP/NAT-PMP
and uTP off, listening on 127.0.0.1 only, and prints what it used.
  lt_client.py SOURCE OUTDIR LISTEN_PORT [TIMEOUT_S [rc4]]
With "rc4", encryption is forced both ways (pe_forced) at RC4 only: libtorrent then
makes no plain connection at all.
Exit status 0 once the download is complete (libtorrent checked every piece against
the torrent's hashes), 1 on timeout or error."""
import sys
import time

import libtorrent as lt

source, outdir, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 60.0
forced_rc4 = len(sys.argv) > 5 and sys.argv[5] == 'rc4'

ses = lt.session({
    'listen_interfaces': '127.0.0.1:%d' % port,
    'enable_dht': False, 'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
    'enable_outgoing_utp': False, 'enable_incoming_utp': False,
    'enable_outgoing_tcp': True, 'enable_incoming_tcp': True,
    'announce_to_all_trackers': True, 'announce_to_all_tiers': True,
    'allow_multiple_connections_per_ip': True,
    'alert_mask': lt.alert.category_t.error_notification | lt.alert.category_t.tracker_notification
                  | lt.alert.category_t.peer_notification | lt.alert.category_t.status_notification,
})
if forced_rc4:
    ses.apply_settings({'out_enc_policy': int(lt.enc_policy.forced), 'in_enc_policy': int(lt.enc_policy.forced),
                        'allowed_enc_level': int(lt.enc_level.rc4), 'prefer_rc4': True})
if source.startswith('magnet:'):
    atp = lt.parse_magnet_uri(source)
else:
    atp = lt.add_torrent_params()
    atp.ti = lt.torrent_info(source)
atp.save_path = outdir
h = ses.add_torrent(atp)

start = time.time()
events = []
while time.time() - start < timeout:
    for a in ses.pop_alerts():
        if isinstance(a, (lt.tracker_reply_alert, lt.tracker_error_alert, lt.metadata_received_alert,
                          lt.peer_connect_alert, lt.torrent_error_alert, lt.url_seed_alert)):
            events.append(type(a).__name__ + ': ' + a.message())
    st = h.status()
    if st.is_seeding or st.state == lt.torrent_status.seeding:
        print('complete in %.2f s: %d bytes, peers seen %d' % (time.time() - start, st.total_wanted, st.num_peers))
        for e in events:
            print('  ' + e)
        sys.exit(0)
    time.sleep(0.05)
st = h.status()
print('timed out: state %s, progress %.3f, peers %d, has metadata %s'
      % (st.state, st.progress, st.num_peers, st.has_metadata), file=sys.stderr)
for e in events:
    print('  ' + e, file=sys.stderr)
sys.exit(1)
