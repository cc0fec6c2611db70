/* One API request, parsed strictly from its CGI/FastCGI parameters (an envp
 * array of "NAME=value" strings, so tests need no FastCGI) and its body.
 * Every limit comes from tf_limits.h and is checked while reading: a body over
 * TF_MAX_BODY is refused before one byte of it is read. */
#ifndef TF_REQUEST_H
#define TF_REQUEST_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"
#include "respond.h"

/* Methods as bits, so a route can name several. */
enum {
	TF_M_GET = 1 << 0,
	TF_M_HEAD = 1 << 1,
	TF_M_POST = 1 << 2,
	TF_M_PUT = 1 << 3,
	TF_M_PATCH = 1 << 4,
	TF_M_DELETE = 1 << 5,
	TF_M_OPTIONS = 1 << 6,
	TF_M_OTHER = 1 << 7
};
/* Methods that change state: they need CSRF checks and may carry JSON. */
#define TF_M_WRITE (TF_M_POST | TF_M_PUT | TF_M_PATCH | TF_M_DELETE)


/* Reads up to len bytes; returns the count, 0 at end of input, -1 on error. */
typedef long (*tf_read_fn)(void *ctx, char *buf, size_t len);

typedef struct tf_qparam {
	const char *name, *value;   /* decoded, point into tf_req.qbuf */
	int64_t num;                /* set by the route's validator (router.c) */
} tf_qparam;

typedef struct tf_req {
	char **envp;                /* not owned; outlives the request */
	unsigned method;            /* one TF_M_* bit */
	const char *method_name;
	/* The raw mount prefix before the "/api" (or "/taxii2") segment ("" at
	 * the root); kept raw so status_url / Location point back through the
	 * same mount. */
	char prefix[TF_MAX_PATH + 1];
	/* Decoded segments from "api" on: seg[0] is "api" — or "taxii2" for the
	 * TAXII server (taxii set), whichever comes first. */
	char pathbuf[2 * TF_MAX_PATH + 2];
	const char *seg[TF_MAX_SEGMENTS];
	size_t nseg;
	int too_deep;               /* more than TF_MAX_SEGMENTS segments */
	char qbuf[TF_MAX_QUERY + 1];
	tf_qparam query[TF_MAX_QUERY_PARAMS];
	size_t nquery;
	char *body;                 /* owned, NUL-terminated */
	size_t body_len;
	json_object *json;          /* the body of a write, {} when empty; owned */
	size_t max_body;            /* the route's body limit; 0: TF_MAX_BODY */
	/* Path parameters, validated by the router before any handler runs. */
	const char *feed_id, *task_id;
	const char *obj_id;         /* {obj}: a STIX id (the TAXII routes) */
	int taxii;                  /* under /taxii2/: TAXII errors and auth */
	/* Set by the auth check (auth.c). */
	const char *auth;           /* "none", "token" or "remote_user" */
	char requested_by[128];     /* who: token name, remote user, "api-token" */
	int role;                   /* tf_role of the caller */
} tf_req;

void tf_req_init(tf_req *r, char **envp);
void tf_req_free(tf_req *r);

/* The value of CGI parameter name, or NULL. Points into envp. */
const char *tf_req_env(const tf_req *r, const char *name);

/* Method, path and query. 0, or -1 with resp set to a 400 (malformed or over
 * a limit) — the route is not known yet. */
int tf_req_parse(tf_req *r, tf_resp *resp);
/* Content-Length (400 malformed, 413 over r->max_body, else TF_MAX_BODY), the body (400 when
 * shorter than announced), Content-Type (415 unless application/json when
 * there is a body) and the JSON (400 with the parser's reason; must be an
 * object). 0 or -1 with resp set. */
int tf_req_read_body(tf_req *r, tf_read_fn rd, void *ctx, tf_resp *resp);

/* A decoded query parameter, or NULL when absent. Empty values count as
 * absent (docs/SPEC.md §2 shows "?active=1&feed_id=&limit="). */
const tf_qparam *tf_req_query(const tf_req *r, const char *name);

/* A list's paging parameters, as the route table checked them (router.c):
 * ?limit= (TF_DEFAULT_LIST_LIMIT when absent) and the ?cursor= page token
 * (NULL when absent). */
typedef struct tf_req_paging {
	int limit;
	const char *cursor;
} tf_req_paging;
tf_req_paging tf_req_page(const tf_req *r);

/* Percent-decodes src[0..n) into out (outsz bytes, NUL-terminated); '+' is a
 * space when plus_is_space (query strings only). TF_OK; TF_EINVAL on a bad
 * escape or an encoded NUL; TF_ELIMIT when out is too small. *outlen (may be
 * NULL) gets the decoded length. Decodes exactly once. */
int tf_pct_decode(const char *src, size_t n, char *out, size_t outsz, int plus_is_space,
                  size_t *outlen);

/* Method name → TF_M_* bit (TF_M_OTHER when unknown). */
unsigned tf_method_bit(const char *name);
/* True when Content-Type is application/json, with optional parameters of
 * which charset, if present, must be utf-8. */
int tf_content_type_is_json(const char *ct);

#endif
