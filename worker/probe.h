/* `threatfeed test-connection FEED` (docs/SPEC.md §2 test_connection): what a
 * run of the feed would find at its upstream, with its credentials, answered
 * as {"ok":bool,"detail":"…"} (and "api_root" for a taxii21 feed) — without
 * starting a run or storing anything. */
#ifndef TF_PROBE_H
#define TF_PROBE_H

#include <json-c/json.h>
#include <stddef.h>

#include "feed.h"
#include "tf_limits.h"

/* Holds any detail: a run's longest error text. */
#define TF_PROBE_DETAIL (TF_MAX_ERROR_LEN + 1)

/* Probes the feed described by its stored form, sending the URL and the
 * credentials its run would send. A taxii21 feed gets the run's own
 * discovery and search for its collection through the API roots
 * (taxii_find.h), each request asked once, all within TF_PROBE_TIMEOUT_S;
 * another type one request. Returns 1 when a run would get going (for
 * taxii21: the collection is found and readable), 0 otherwise; detail gets
 * one line for a human (never the secret): where the collection is, or the
 * error a run would fail with. *api_root (caller frees) is the taxii21 API
 * root that lists the collection, readable or not, else NULL. net: the
 * proxy and TLS settings the run would use (feed.h tf_feed_net_of). */
int tf_probe_feed(json_object *feed, const tf_feed_net *net, char *detail, size_t len,
                  char **api_root);

#endif
