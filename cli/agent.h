/* `threatfeed agent`: the long-running process of a worker host. It waits
 * for queued runs (woken by the store: LISTEN on PostgreSQL, not polling),
 * starts the same supervisor + worker pair `consume` starts on one host, and
 * ends runs whose processes are gone on any host — so a run on a host that
 * died ends without anyone logging into it (docs/SPEC.md §3, README "Scaling
 * out"). Claims keep max_concurrent_runs across every host, since they
 * count live runs in the shared store. */
#ifndef TF_AGENT_H
#define TF_AGENT_H

#include "config.h"

/* Runs until SIGTERM or SIGINT; runs already started go on (they are
 * detached, and any agent or handler judges them by their leases). */
int tf_agent_main(const tf_config *cfg);

#endif
