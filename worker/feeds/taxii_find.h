/* Finding a taxii21 feed's collection (docs/FEEDS.md "TAXII 2.1"): the feed's
 * url is a discovery document or an API root; from a discovery document its
 * default API root is searched first, then every listed root once, and the
 * first root whose collection list has the collection is the one.
 *
 * One search for both a run (taxii.c) and test_connection (probe.c), so that
 * the probe reports what a run will find. Only how a request goes out is the
 * caller's (tf_taxii_client): a run retries and wakes on a cancel, the probe
 * asks once within its deadline. */
#ifndef TF_TAXII_FIND_H
#define TF_TAXII_FIND_H

#include <json-c/json.h>
#include <stddef.h>

#include "fetch.h"

#define TF_TAXII_MEDIA "application/taxii+json;version=2.1"

/* One GET: TF_OK with *resp (any HTTP status; the search frees it), or an
 * error code with a line for the error text in err ("<what>: …").
 * TF_ECANCELLED and TF_ENOMEM end the search at once. */
typedef int (*tf_taxii_get_fn)(void *ctx, const tf_fetch_req *req, tf_fetch_resp *resp,
                               const char *what, char *err, size_t errlen);

typedef struct tf_taxii_client {
	tf_taxii_get_fn get;
	void *ctx;
	const char *username; /* HTTP Basic as tf_fetch_basic() decides */
	const char *password;
} tf_taxii_client;

/* The client for a feed's stored settings: its credentials, get and ctx. */
void tf_taxii_client_init(tf_taxii_client *c, json_object *feed, tf_taxii_get_fn get, void *ctx);

/* The request sent for url: Accept TAXII 2.1, the client's credentials, a
 * body cap of max_bytes (0: TF_MAX_PAGE_BYTES). A run's prefetch builds its
 * request here too, so that it equals the get that continues it. */
void tf_taxii_req(const tf_taxii_client *c, const char *url, size_t max_bytes, tf_fetch_req *req);

enum { TF_TAXII_ALLOW_404 = 1, TF_TAXII_ALLOW_400 = 2 };

/* GETs url and parses a JSON object from it. TF_OK with *doc (caller puts)
 * and, when keep is not NULL, the response in *keep (caller frees: its body
 * and X-TAXII-Date-Added-Last). TF_ENOTFOUND with *status set and err
 * untouched when the status is one that allow lets the caller handle. Else
 * an error with err set: TF_EPERM ("authentication failed (HTTP 401)…") on
 * 401/403, TF_EUPSTREAM on another status, TF_EPARSE, or the client's. */
int tf_taxii_get_json(const tf_taxii_client *c, const char *url, const char *what, size_t max_bytes,
                      int allow, json_object **doc, long *status, tf_fetch_resp *keep, char *err,
                      size_t errlen);

/* Where the collection was found. */
typedef enum tf_taxii_where {
	TF_TAXII_AT_URL = 1,   /* the feed's url is the API root */
	TF_TAXII_AT_DEFAULT,   /* discovery's default API root */
	TF_TAXII_AT_LISTED     /* another root that discovery lists */
} tf_taxii_where;

typedef struct tf_taxii_found {
	char *root;             /* the API root (ending in '/') listing the
	                         * collection, or NULL; tf_taxii_found_free */
	tf_taxii_where where;
	char title[80];         /* the collection's title there, printable */
	size_t before;          /* roots searched before that one */
} tf_taxii_found;

/* Validates the feed's url and collection and searches for the collection.
 * TF_OK: found and readable, *out filled. TF_EPERM with out->root set: the
 * root lists it with can_read false. Else out->root is NULL: TF_ENOTFOUND or
 * TF_EUPSTREAM (in no root: err names every root searched, what happened
 * there and up to TF_MAX_ROOT_NOTE_COLLECTIONS readable collections of
 * each), TF_EINVAL (the feed's settings), TF_ECANCELLED, or the first
 * request's error. In every case but TF_OK err holds the run's error text;
 * errlen TF_MAX_ERROR_LEN + 1 keeps all a run keeps. */
int tf_taxii_find(const tf_taxii_client *c, json_object *feed, tf_taxii_found *out, char *err,
                  size_t errlen);
void tf_taxii_found_free(tf_taxii_found *f);

#endif
