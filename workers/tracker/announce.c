/*
 * announce.c — what an HTTP or UDP announce does to a swarm (the part both faces
 * share): refuse what this pod does not publish, record the peer, pick peers back.
 */
#include <string.h>

#include "tracker.h"

const char *
tk_net_announce(const tk_announce *a, tk_swarm **swarm_out, tk_peer **peers, size_t *npeers)
{
	tk_swarm *s;
	tk_peer probe;

	*npeers = 0;
	*swarm_out = NULL;
	if (!tk_ready)
		return "the tracker is starting; try again shortly";
	s = tk_swarm_find(a->hash);
	if (s == NULL)
		return "unknown info_hash: this tracker serves only this pod's published files";
	memset(&probe, 0, sizeof(probe));
	probe.kind = TK_PEER_NET;
	probe.addr = a->addr;
	memcpy(probe.id, a->peer_id, 20);
	probe.seeder = a->left == 0;
	if (!tk_swarm_announce(s, &probe, a->event, ev_now(tk_loop)))
		return "the tracker is full; try again later";
	*swarm_out = s;
	if (a->event != TK_EV_STOPPED)
		*npeers = tk_swarm_pick(s, TK_PEER_NET, &probe, (size_t)a->numwant, peers);
	return NULL;
}
