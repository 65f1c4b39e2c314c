/* The gateway process's settings and globals (see settings.h); main.c fills them. */
#include "settings.h"

gw_settings gw_cfg;
struct ev_loop *gw_loop;
int gw_process_index;
volatile int gw_draining;
