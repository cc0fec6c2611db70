/* The route table (docs/SPEC.md §2): one static array of {methods, pattern, query
 * validators, handler}. Path parameters are validated by type while matching
 * ({feed} by tf_valid_feed_id, {task} by tf_valid_uuid), so a handler never
 * sees — and the store is never asked about — an invalid id: such paths are
 * 404. A known path with the wrong method is 405 with Allow. */
#ifndef TF_ROUTER_H
#define TF_ROUTER_H

#include <stddef.h>

#include "handlers.h"
#include "request.h"
#include "respond.h"

/* Types of query parameters; each has one validator in router.c. */
typedef enum tf_qtype {
	TF_Q_BOOL,    /* 1/0/true/false → num 1/0 */
	TF_Q_LIMIT,   /* 1..TF_MAX_LIST_LIMIT → num */
	TF_Q_FEED,    /* a valid feed id */
	TF_Q_TIME,    /* RFC 3339 → num (µs since the epoch) */
	TF_Q_CURSOR,  /* opaque paging token: printable ASCII, no spaces */
	TF_Q_VALUE,   /* an observable value: 1..TF_MAX_OBS_VALUE bytes */
	TF_Q_KINDS,   /* observable types, comma-separated → num (bit per kind) */
	TF_Q_FORMAT,  /* export format: txt, csv or stix → num (tf_export_format) */
	TF_Q_COUNT,   /* 1..TF_MAX_EXPORT_LIMIT → num */
	TF_Q_PAGE     /* TAXII limit: a positive integer → num, capped at TF_MAX_TAXII_LIMIT */
} tf_qtype;

/* Export formats (TF_Q_FORMAT). */
enum tf_export_format { TF_FMT_TXT, TF_FMT_CSV, TF_FMT_STIX };

typedef struct tf_qspec {
	const char *name;
	tf_qtype type;
} tf_qspec;

#define TF_ROUTE_MAX_QUERY 8

typedef struct tf_route {
	unsigned methods;            /* TF_M_* bits; GET implies HEAD */
	const char *pattern;         /* "/api/threat-feeds/{feed}/consume" */
	tf_handler handler;
	const char *name;            /* for logs and tests */
	tf_qspec query[TF_ROUTE_MAX_QUERY];   /* known parameters; others are ignored */
	size_t max_body;             /* request body limit; 0: TF_MAX_BODY */
	int export_token;            /* the export token may read it (auth.h) */
	int role;                    /* the least tf_role that may call it (README "Roles") */
} tf_route;

/* The table, for tests and docs. */
const tf_route *tf_router_table(size_t *n);

/* Matches req's segments and method. Returns the route with req->feed_id /
 * req->task_id / req->obj_id set ({coll}, a TAXII collection: a feed id or
 * TF_TAXII_ALL_COLLECTION, sets feed_id), or NULL with resp set to 404 not_found or 405
 * method_not_allowed (+ Allow). */
const tf_route *tf_router_match(tf_req *req, tf_resp *resp);

/* Runs the route's query validators, storing numbers in tf_qparam.num.
 * 0, or -1 with a 400 invalid_parameter in resp. */
int tf_router_check_query(const tf_route *rt, tf_req *req, tf_resp *resp);

/* The route req's path and method match (no answer written), or NULL: auth
 * asks whether the export token may read it before routing answers. */
const tf_route *tf_router_peek(const tf_req *req);

/* The kinds (bit per observable.h kind) of a comma-separated type list:
 * STIX names ("ipv4-addr", "file:hashes.SHA-256") and the short forms ip,
 * ipv4, ipv6, domain, url, email, md5, sha1, sha256, sha512, hash.
 * TF_EINVAL when a name is unknown. */
int tf_router_kinds(const char *list, unsigned *kinds);

/* "GET, HEAD, POST" for a method mask, into buf. */
void tf_router_allow(unsigned methods, char *buf, size_t len);

#endif
