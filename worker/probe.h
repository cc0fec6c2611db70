/* `threatfeed test-connection FEED` (docs/SPEC.md §2 test_connection): one short
 * request to the feed's upstream with its credentials, answered as
 * {"ok":bool,"detail":"…"} — without starting a run or storing anything. */
#ifndef TF_PROBE_H
#define TF_PROBE_H

#include <json-c/json.h>
#include <stddef.h>

/* Probes the feed described by its stored form. Returns 1 when the upstream
 * answered as expected with the credentials, 0 otherwise; detail gets one
 * line for a human (never the secret). */
int tf_probe_feed(json_object *feed, char *detail, size_t len);

#endif
