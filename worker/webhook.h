/* Run-end webhooks (issue 15 §3; README "Webhooks"): when a run reaches its
 * terminal state, its task JSON — exactly what GET task-status answers
 * (docs/SPEC.md §2 task) — is POSTed to the feed's options.webhook_url or the
 * global webhook_url, signed with HMAC-SHA256 of the body, and retried with
 * backoff a bounded number of times.
 *
 * Sent by `threatfeed-worker notify TASK`, a process of its own started after
 * the terminal state is committed (lib/runctl.h tf_runctl_notify): the
 * supervisor becomes it once its worker has exited and its slot is released,
 * a reaper that ended a run starts one detached. Nothing else ever waits for
 * it: not a request, not a cancel, not the next queued run. */
#ifndef TF_WEBHOOK_H
#define TF_WEBHOOK_H

#include <stddef.h>

#include "config.h"

#define TF_WEBHOOK_SIG_HEADER   "X-Threatfeed-Signature"  /* sha256=<hex HMAC of the body> */
#define TF_WEBHOOK_EVENT_HEADER "X-Threatfeed-Event"      /* run.finished */
#define TF_WEBHOOK_ID_HEADER    "X-Threatfeed-Delivery"   /* the task id: same on every attempt */
#define TF_WEBHOOK_TS_HEADER    "X-Threatfeed-Timestamp"  /* unix seconds of the attempt */
#define TF_WEBHOOK_TRY_HEADER   "X-Threatfeed-Attempt"    /* 1, 2, … */

/* hex = lowercase hex of HMAC-SHA256(secret, body): 64 characters and NUL. */
int tf_webhook_sign(const char *secret, const void *body, size_t len, char hex[65]);

/* Whether a failed attempt is worth another: no answer at all (curl_failed:
 * connection refused, timeout, reset), a 5xx, or a 429. Any other answer is
 * final: 2xx delivered, a 3xx or 4xx will not change by asking again. */
int tf_webhook_retryable(int curl_failed, long http_status);

/* Seconds to wait after failed attempt n (1-based): TF_WEBHOOK_BACKOFF_S
 * doubled each time, at most TF_WEBHOOK_MAX_BACKOFF_S. */
int tf_webhook_backoff_s(int attempt);

/* `threatfeed-worker notify TASK`: sends task_id's run-end webhook if one
 * applies and the task is terminal. 0 delivered (or nothing to send), 1 given
 * up, 2 bad usage. */
int tf_webhook_notify_main(const tf_config *cfg, const char *task_id);

#endif
