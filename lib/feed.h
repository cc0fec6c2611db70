/* Feeds (docs/SPEC.md §2 `feed`): validation of API bodies, the stored form (which
 * keeps the secret), and the API form (which never carries it). */
#ifndef TF_FEED_H
#define TF_FEED_H

#include <json-c/json.h>
#include <stddef.h>

#include "store.h"

/* Creates a feed from an API body (id optional: generated from the name when
 * absent). Returns its API JSON (caller frees). TF_EINVAL with err filled
 * ("url: must be an http or https URL"), TF_EEXIST. */
int tf_feed_create(tf_store *st, json_object *body, char **json, size_t *len, char *err,
                   size_t errlen);
/* Changes the fields present in body. TF_ENOTFOUND, TF_EINVAL (err),
 * TF_ECONFLICT while a run of the feed is active. */
int tf_feed_patch(tf_store *st, const char *id, json_object *body, char **json, size_t *len,
                  char *err, size_t errlen);
/* Removes the feed with its records, cursor and counts (its finished task
 * history stays). TF_ENOTFOUND, TF_ECONFLICT while a run is active. */
int tf_feed_delete(tf_store *st, const char *id);
/* API JSON of one feed / {"feeds":[…]} sorted by id (caller frees). */
int tf_feed_read(tf_store *st, const char *id, char **json, size_t *len);
int tf_feed_list(tf_store *st, char **json, size_t *len);
/* One page of the list in id order: at most limit (>= 1) feeds after the
 * feed id `after` (NULL: from the first), {"feeds":[…],"next_cursor"}, the
 * cursor being the last id listed when more follow, else null. TF_EINVAL
 * when after is not a feed id. (1,000 feeds are a 650 KB answer: issue 14 §4.) */
int tf_feed_page(tf_store *st, const char *after, int limit, char **json, size_t *len);

/* Stored form, secret included, for the worker: owned by the caller
 * (json_object_put). TF_ENOTFOUND. */
int tf_feed_load(tf_txn *txn, const char *id, json_object **out);
/* Feed ids whose type is `type` (NULL: all) — for `tick`. Caller frees each
 * and the array. */
int tf_feed_ids(tf_store *st, char ***ids, size_t *n);

/* The feed's incremental cursor (e.g. {"added_after":"…"}), an empty object
 * when none. Caller owns it. */
int tf_feed_cursor(tf_txn *txn, const char *id, json_object **out);

/* The run-end webhook of a feed (its stored form; NULL: none): its own
 * options.webhook_url and options.webhook_secret, each falling back to the
 * global one (empty: none). *url is NULL when no webhook applies; the
 * pointers are borrowed from feed or the globals. */
void tf_feed_webhook(json_object *feed, const char *global_url, const char *global_secret,
                     const char **url, const char **secret);

/* How a feed's requests reach its upstream (README "Proxies, private CAs
 * and client certificates"); pointers borrowed from the feed or the
 * globals. */
typedef struct tf_feed_net {
	/* NULL: no proxy configured (libcurl's environment variables apply, with
	 * loopback always direct); "": none, direct even if the environment
	 * names one; else the proxy URL. */
	const char *proxy;
	const char *no_proxy;        /* with a proxy: hosts reached directly ("" none) */
	const char *proxy_username;  /* the feed's own proxy only; NULL: none */
	const char *proxy_secret;
	const char *ca_pem;          /* NULL: the system's CAs; else only these */
	const char *client_cert_pem; /* NULL: no client certificate */
	const char *client_key_pem;
	/* Which addresses may be connected to (config.h; the caller sets it,
	 * tf_feed_net_of leaves it NULL: no check). */
	const struct tf_addr_policy *upstream;
} tf_feed_net;

/* The feed's network settings: its own proxy (or "" for none) overrides the
 * global one (config `proxy`, `no_proxy`; empty: none); its own no_proxy
 * overrides the global no_proxy. */
void tf_feed_net_of(json_object *feed, const char *global_proxy, const char *global_no_proxy,
                    tf_feed_net *net);
/* NULL when url is a proxy URL we accept (http, https, socks4, socks4a,
 * socks5, socks5h; scheme://[user:pass@]host[:port]; userinfo only when
 * allow_userinfo), else why not ("must be …"). */
const char *tf_feed_proxy_problem(const char *url, int allow_userinfo);
/* Whether s is a no_proxy list we accept (libcurl's CURLOPT_NOPROXY form). */
int tf_feed_valid_no_proxy(const char *s);

/* After a run ends: remember its id, status and start time for the feed. */
int tf_feed_note_run(tf_txn *txn, const char *id, const char *task_id, const char *status,
                     const char *started_at);

#endif
