/* The HTTP policy of the feed drivers (docs/SPEC.md §4): how a request to
 * an upstream is retried and backed off, and how an answer that is not what
 * a driver asked for is described in a run's error. The transfer itself is
 * worker/fetch.c's. */
#ifndef TF_UPSTREAM_H
#define TF_UPSTREAM_H

#include <stddef.h>

#include "fetch.h"
#include "run.h"

/* One GET with the retry policy of every upstream: a cancel check first;
 * 429 and 503 wait for Retry-After (seconds or an HTTP date, at most
 * TF_MAX_BACKOFF_S; else 1, 2, 4 … s) in stage rate_limited, other 5xx back
 * off likewise, at most TF_MAX_RETRIES times, a warning each; the run's
 * stage is then set back to `stage`. Adds the body bytes to bytes_received.
 * TF_OK with *resp the answer, of any status but those retried (caller
 * frees: tf_fetch_resp_free); TF_ECANCELLED; or, after tf_run_fail(r,
 * "<what>: …"), TF_EUPSTREAM when the retries ran out and the fetch's error
 * (TF_ENETWORK, TF_ELIMIT, …) when the transfer failed — network errors are
 * not retried. */
int tf_upstream_get(tf_run *r, const tf_fetch_req *req, tf_fetch_resp *resp, tf_stage stage,
                    const char *what);
/* A one-line description of a non-2xx answer for an error text: "HTTP 500",
 * with the TAXII error's title and description when the body carries one
 * (never the raw body: it may be an HTML page). */
void tf_upstream_error(const tf_fetch_resp *resp, char *buf, size_t len);
/* What an answer's status means for a run, the same for every driver (the
 * words of the error are the driver's): TF_OK for a 2xx; else buf gets
 * tf_upstream_error's words and the return is TF_EPERM for 401 and 403 (the
 * credentials), TF_ENOTFOUND for 404 (a wrong URL or id), TF_EUPSTREAM for
 * any other status. */
int tf_upstream_failure(const tf_fetch_resp *resp, char *buf, size_t len);
/* Nonzero when a 2xx answer claims (or, without a Content-Type, looks like)
 * JSON; else buf gets the media type for "expected JSON, got text/html". */
int tf_upstream_is_json(const tf_fetch_resp *resp, char *buf, size_t len);

#endif
