/* The feed drivers, one per feed type, reached through one table so that the
 * run engine (worker/run.c) knows none of them by name. Adding a feed type is
 * a driver file in worker/feeds/ and one row in drivers.c. */
#ifndef TF_DRIVERS_H
#define TF_DRIVERS_H

#include "run.h"

typedef struct tf_driver {
	const char *type; /* the feed's `type` (docs/SPEC.md §4) */
	/* Runs a whole feed: TF_OK when it is done, TF_ECANCELLED, or an error
	 * after tf_run_fail(). */
	int (*run)(tf_run *r);
} tf_driver;

/* The driver of a feed type, or NULL when there is none. */
const tf_driver *tf_driver_find(const char *type);

#endif
