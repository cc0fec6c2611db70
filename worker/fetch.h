/* HTTP for feed drivers: libcurl's multi interface, so a transfer waits in
 * curl_multi_poll together with the run's wake-up fd and a cancel ends even a
 * stalled transfer in milliseconds. Every transfer is bounded: http/https
 * only, TLS verified, TF_MAX_REDIRECTS, connect and low-speed timeouts, a body
 * size cap checked while receiving. */
#ifndef TF_FETCH_H
#define TF_FETCH_H

#include <stddef.h>

#include "config.h"
#include "feed.h"

typedef struct tf_fetch tf_fetch;

/* Returns nonzero when the run must stop (called when wake_fd is readable). */
typedef int (*tf_fetch_cancel_fn)(void *ctx);

typedef struct tf_fetch_req {
	const char *url;
	const char *accept;           /* Accept header, or NULL */
	const char *username;         /* HTTP Basic when non-NULL */
	const char *password;
	const char *headers[4];       /* extra "Name: value" lines, NULL-terminated */
	size_t max_bytes;             /* body cap; 0 = TF_MAX_PAGE_BYTES */
	long timeout_s;               /* whole request; 0 = TF_REQUEST_TIMEOUT_S */
} tf_fetch_req;

typedef struct tf_fetch_resp {
	long status;                  /* HTTP status */
	char *body;                   /* NUL-terminated, len bytes */
	size_t len;
	char *content_type;           /* or NULL */
	char *date_added_last;        /* X-TAXII-Date-Added-Last, or NULL */
	char *retry_after;            /* Retry-After, or NULL */
	char *location;               /* Location on 3xx, or NULL */
} tf_fetch_resp;

/* Sets req's HTTP Basic credentials from a feed's username and secret, the
 * one rule for every feed type that uses Basic (taxii21, stix_bundle; README
 * "Feed types"): a username is needed for auth, so an absent or empty
 * username sends none, even with a secret. */
void tf_fetch_basic(tf_fetch_req *req, const char *username, const char *secret);

/* wake_fd: an fd that becomes readable when the run may have been told to
 * stop; the fetch then calls cancel(ctx) and, if nonzero, aborts with
 * TF_ECANCELLED. The fetch never reads from wake_fd: draining is the
 * caller's (cancel's) job. Caller owns *out: tf_fetch_free(). */
int tf_fetch_new(tf_fetch **out, int wake_fd, tf_fetch_cancel_fn cancel, void *ctx);
void tf_fetch_free(tf_fetch *f);
/* Every later request of f goes as net says (a proxy, its credentials, the
 * CAs trusted instead of the system's, a client certificate); net's strings
 * are copied. Verification stays on whatever net holds: there is no
 * setting that turns it off. TF_ENOMEM. */
int tf_fetch_set_net(tf_fetch *f, const tf_feed_net *net);

/* The connect-time address check (README "Which addresses feeds may
 * reach"): every socket a curl handle opens is first checked against
 * policy, by the address actually being connected — after DNS, on every
 * redirect hop, and with a proxy the proxy's address (the proxy resolves
 * the target itself). A refused address names itself in refused[]. The
 * policy is fixed for a handle's life: a connection kept for reuse was
 * checked when it was opened. */
typedef struct tf_fetch_guard {
	const tf_addr_policy *policy;   /* NULL: everything allowed */
	char refused[64];               /* "169.254.169.254", or "" */
} tf_fetch_guard;

/* Installs g on the libcurl easy handle `easy` (after curl_easy_reset; g
 * must outlive its transfers). TF_EINVAL when libcurl refuses the option. */
int tf_fetch_guard_on(void *easy, tf_fetch_guard *g);
/* The error of a transfer that g stopped: 1 and err filled, else 0. */
int tf_fetch_guard_error(const tf_fetch_guard *g, char *err, size_t errlen);

/* Performs one GET. TF_OK for any HTTP status (resp filled; caller frees with
 * tf_fetch_resp_free), TF_ECANCELLED, TF_ENETWORK (connect/timeout/TLS/
 * protocol, err says which), TF_ELIMIT (body over the cap). bytes_received,
 * if not NULL, is increased by the bytes of the body as they arrive. */
int tf_fetch_get(tf_fetch *f, const tf_fetch_req *req, tf_fetch_resp *resp, long long *bytes_received,
                 char *err, size_t errlen);
void tf_fetch_resp_free(tf_fetch_resp *resp);
/* Starts req without waiting for it, so that the upstream prepares its answer
 * while the caller works: the next tf_fetch_get of the very same request
 * (every field equal) continues this transfer instead of sending another; a
 * get of any other request drops it. Errors surface in that get. */
int tf_fetch_prefetch(tf_fetch *f, const tf_fetch_req *req);

#endif
