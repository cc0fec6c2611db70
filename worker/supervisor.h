/* `threatfeed supervise TASK`: the parent of one run's worker. It claims a
 * run slot, starts the worker in its own process group, forwards cancels,
 * kills a worker that outlives the grace period, records how the worker
 * ended, and starts the next queued run when it is done (docs/SPEC.md §3). */
#ifndef TF_SUPERVISOR_H
#define TF_SUPERVISOR_H

#include "config.h"

int tf_supervise_main(const tf_config *cfg, const char *task_id);

#endif
