/* The one place that shapes HTTP responses (docs/SPEC.md §2): a tf_resp is filled by
 * the pipeline or a handler, then written once by tf_resp_emit() as CGI
 * output ("Status:" line, fixed headers, body). Every error body goes through
 * tf_resp_error(): {"error":"human text","code":"machine_code"}. */
#ifndef TF_RESPOND_H
#define TF_RESPOND_H

#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"

/* Writes len bytes; returns 0 or -1. The FastCGI stream, stdout, or a test
 * buffer. */
typedef int (*tf_write_fn)(void *ctx, const char *buf, size_t len);

#define TF_ETAG_LEN 18                        /* '"' + 16 hex + '"' */
#define TF_LOCATION_MAX (TF_MAX_PATH + 160)   /* mount prefix + "/api/…/{id}/" */

typedef struct tf_resp {
	int status;                 /* 0 until something set it */
	char *body;                 /* owned unless body_static */
	size_t len;
	int body_static;
	char etag[TF_ETAG_LEN + 1];
	char allow[64];             /* "GET, HEAD, POST" on a 405 */
	char location[TF_LOCATION_MAX];
	int www_authenticate;       /* adds WWW-Authenticate: Bearer (1) or Basic (2) (401) */
	const char *content_type;   /* static; NULL: JSON (every error is JSON) */
	int no_etag;                /* an answer nobody asks for conditionally */
	char last_modified[40];     /* an IMF-fixdate, or empty */
	char extra[160];            /* more header lines ("Name: value\r\n"), tf_resp_header */
	/* A streamed answer (exports): the handler writes the head and the
	 * body itself through wr, in constant memory; nothing is buffered. */
	tf_write_fn wr;             /* set by the pipeline before the handler */
	void *wctx;
	int head_only;              /* HEAD: the head without the body */
	int streamed;               /* the head went out: emit nothing more */
	int stream_failed;          /* a write failed (the client went away) */
} tf_resp;

void tf_resp_init(tf_resp *r);
/* Frees the body; r can be reused after tf_resp_init(). */
void tf_resp_free(tf_resp *r);

/* Sets a JSON success body, taking over body (malloc'd; freed by
 * tf_resp_free, also when this fails). Replaces any earlier body. Returns 0,
 * or -1 after turning r into a 500 (body NULL with len > 0 is a bug). */
int tf_resp_json(tf_resp *r, int status, char *body, size_t len);
/* Same with a copy of body. */
int tf_resp_json_copy(tf_resp *r, int status, const char *body, size_t len);
/* A success body that is not JSON (the metrics' text format), taken over as
 * by tf_resp_json; content_type is a static string. */
int tf_resp_text(tf_resp *r, int status, char *body, size_t len, const char *content_type);
/* A response without a body (204). */
void tf_resp_empty(tf_resp *r, int status);

/* The error writer. Always returns -1 so callers can `return tf_resp_error(…)`.
 * fmt is the human text; it must never carry internals (paths, errno text of
 * the store, secrets). */
int tf_resp_error(tf_resp *r, int status, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Same with one extra string member, e.g. "task_id" on a 409 run_active. */
int tf_resp_error_with(tf_resp *r, int status, const char *code, const char *key,
                       const char *value, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));
/* Maps a TF_E* code (err.h, tf_rc) to its status and code (below) and writes
 * the error. detail is shown for 4xx answers only (the lib's one-line reason,
 * e.g. from feed validation); 5xx answers get a generic text. Returns -1. */
int tf_resp_fail(tf_resp *r, int err, const char *detail);
/* The mapping itself (status, machine code):
 *   TF_EINVAL     400 bad_request
 *   TF_ENOTFOUND  404 not_found
 *   TF_EEXIST     409 exists
 *   TF_ECONFLICT  409 conflict
 *   TF_ESTATE     409 conflict
 *   TF_ELIMIT     413 payload_too_large
 *   TF_ESTORE     503 store_unavailable
 *   TF_EPERM      503 store_not_writable
 *   TF_ENOSPACE   507 store_disk_full
 *   anything else 500 internal_error
 * *code (if not NULL) gets the static machine code. */
int tf_http_status_of(int err, const char **code);

/* Static reason phrase ("Not Found"); "Unknown" for unlisted codes. */
const char *tf_http_reason(int status);

/* Sets the ETag of a 200 answer (unless no_etag) from its body (FNV-1a 64,
 * strong) and, when if_none_match (the request's If-None-Match, may be NULL)
 * names it or is "*", turns the answer into a 304 without a body
 * (RFC 9110 §13.1.2). */
void tf_resp_etag(tf_resp *r, const char *if_none_match);
/* RFC 9110 weak comparison of one ETag against an If-None-Match list. */
int tf_etag_matches(const char *if_none_match, const char *etag);

/* Adds a header line to the answer (emitted or streamed). -1 when it does
 * not fit (the header is left out). */
int tf_resp_header(tf_resp *r, const char *name, const char *value);

/* Sets Last-Modified (RFC 9110 §8.8.2) from a time in µs since the epoch. */
void tf_resp_last_modified(tf_resp *r, int64_t us);
/* Does If-Modified-Since (may be NULL) say the client has what changed at
 * us? Only when the request has no If-None-Match (RFC 9110 §13.1.3). */
int tf_not_modified_since(const char *if_modified_since, int64_t us);

/* Starts a streamed 200 answer: writes the head (Status, Content-Type,
 * Cache-Control, nosniff, ETag, Last-Modified; no Content-Length: the body
 * ends with the stream) through r->wr. 0, or -1 when the write failed. */
int tf_resp_stream_begin(tf_resp *r, const char *content_type);
/* Writes len bytes of the streamed body (nothing for HEAD). 0 or -1. */
int tf_resp_stream(tf_resp *r, const char *buf, size_t len);

/* Writes the response as CGI output: Status, Content-Type, Cache-Control,
 * nosniff, optional ETag/Allow/Location/WWW-Authenticate, Content-Length,
 * then the body (left out for HEAD, 204 and 304). Returns 0 or -1 when the
 * writer failed (the client went away: nothing more to do). */
int tf_resp_emit(const tf_resp *r, int head_only, tf_write_fn w, void *ctx);

#endif
