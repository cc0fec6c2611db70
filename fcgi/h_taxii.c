/* The read-only TAXII 2.1 server (docs/SPEC.md §8; README "TAXII 2.1 server"):
 *
 *   GET /taxii2/                                       discovery (§4.1)
 *   GET /taxii2/root/                                  the one API root (§4.2)
 *   GET /taxii2/root/collections/                      one per feed + one of all (§5.1)
 *   GET /taxii2/root/collections/{id}/                 (§5.2)
 *   GET /taxii2/root/collections/{id}/manifest/        (§5.3)
 *   GET /taxii2/root/collections/{id}/objects/         (§5.4)
 *   GET /taxii2/root/collections/{id}/objects/{obj}/   (§5.5)
 *   GET /taxii2/root/collections/{id}/objects/{obj}/versions/   (§5.7)
 *
 * A collection's id is its feed's id; TF_TAXII_ALL_COLLECTION holds every
 * feed. Its objects are the feed's stored STIX records (a record whose key
 * is a STIX id: taxii21 and stix_bundle feeds), served verbatim in
 * date-added order (lib/records.h): a record's date added is when its
 * current version was stored, unique across feeds, so added_after and the
 * `next` token (the date added of the page's last entry) page exactly and
 * never expire. Only the latest version of an object is kept, so
 * match[version] first, last and all are the same.
 *
 * Pages are written while they are read, in one snapshot, through a fixed
 * buffer (exports do the same: fcgi/h_export.c). */
#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "feed.h"
#include "handlers.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "records.h"
#include "util.h"

#define TAXII_MEDIA "application/taxii+json;version=2.1"
#define STIX_MEDIA "application/stix+json;version=2.1"
#define ROOT_PATH "/taxii2/root/"
/* Bytes gathered before one write to the web server. */
#define OUT_BUF (64 * 1024)

/* ---- requests ------------------------------------------------------------------ */

int tf_taxii_valid_id(const char *s)
{
	size_t n = s ? strlen(s) : 0, t = n > 38 ? n - 38 : 0;

	/* as the consumer reads ids (worker/feeds/stix.c): the UUID of any
	 * version, in either case */
	if (!t || t > 250 || s[t] != '-' || s[t + 1] != '-')
		return 0;
	for (size_t i = 0; i < t; i++)
		if (!islower((unsigned char)s[i]) && !isdigit((unsigned char)s[i]) && s[i] != '-')
			return 0;
	for (size_t i = 0; i < 36; i++) {
		int dash = i == 8 || i == 13 || i == 18 || i == 23;
		if (dash ? s[t + 2 + i] != '-' : !isxdigit((unsigned char)s[t + 2 + i]))
			return 0;
	}
	return 1;
}

/* One media range of Accept against ours: type/subtype with an optional
 * version parameter (TAXII 2.1 §1.6.8); q=0 refuses. */
static int range_ok(const char *r, size_t n)
{
	char buf[160];
	size_t k = 0;
	const char *ver = NULL;

	for (size_t i = 0; i < n && k + 1 < sizeof buf; i++)
		if (r[i] != ' ' && r[i] != '\t')
			buf[k++] = (char)tolower((unsigned char)r[i]);
	buf[k] = '\0';
	for (char *p = strchr(buf, ';'); p; p = strchr(p + 1, ';')) {
		*p = '\0';
		if (!strncmp(p + 1, "version=", 8))
			ver = p + 9;
		else if (!strcmp(p + 1, "q=0") || !strncmp(p + 1, "q=0.0", 5))
			return 0;
	}
	if (!strcmp(buf, "*/*") || !strcmp(buf, "application/*"))
		return 1;
	return !strcmp(buf, "application/taxii+json") && (!ver || !strcmp(ver, "2.1"));
}

/* 406 unless Accept allows our media type (absent Accept allows anything). */
static int accept_check(const tf_req *req, tf_resp *resp)
{
	const char *a = tf_req_env(req, "HTTP_ACCEPT");

	if (!a || !*a)
		return 0;
	for (const char *p = a; *p;) {
		size_t n = strcspn(p, ",");
		if (range_ok(p, n))
			return 0;
		p += n;
		if (*p)
			p++;
	}
	return tf_resp_error(resp, 406, "not_acceptable",
	                     "this server answers " TAXII_MEDIA " only (the Accept header allows "
	                     "neither it nor */*)");
}

/* A filter: the values of one match[...] parameter. */
struct list {
	const char *v[TF_MAX_TAXII_MATCH];
	size_t n;
	char buf[TF_MAX_QUERY + 1];
};

static int split(const tf_req *req, const char *name, struct list *l, tf_resp *resp)
{
	const tf_qparam *q = tf_req_query(req, name);

	l->n = 0;
	if (!q)
		return 0;
	snprintf(l->buf, sizeof l->buf, "%s", q->value);
	for (char *p = l->buf, *c; p; p = c) {
		if ((c = strchr(p, ',')))
			*c++ = '\0';
		if (!*p)
			return tf_resp_error(resp, 400, "invalid_parameter", "%s: an empty value", name);
		if (l->n == TF_MAX_TAXII_MATCH)
			return tf_resp_error(resp, 400, "invalid_parameter", "%s: more than %d values",
			                     name, TF_MAX_TAXII_MATCH);
		l->v[l->n++] = p;
	}
	return 0;
}

static int has(const struct list *l, const char *s, size_t n)
{
	for (size_t i = 0; i < l->n; i++)
		if (strlen(l->v[i]) == n && !memcmp(l->v[i], s, n))
			return 1;
	return 0;
}

/* What a listing asks for (TAXII 2.1 §3.4, §3.5). */
struct query {
	int64_t after;          /* strictly after this date added; -1: from the start */
	int64_t limit;
	struct list ids, types, versions, specs;
	int any_version;        /* match[version] absent, or first/last/all in it */
	int64_t at[TF_MAX_TAXII_MATCH]; /* match[version] timestamps */
	size_t nat;
};

static int parse_query(const tf_req *req, struct query *q, tf_resp *resp)
{
	const tf_qparam *p;

	q->after = (p = tf_req_query(req, "added_after")) ? p->num : -1;
	q->limit = (p = tf_req_query(req, "limit")) ? p->num : TF_MAX_TAXII_LIMIT;
	if ((p = tf_req_query(req, "next"))) {
		int64_t n;
		/* our token: the date added of the last entry of the page before */
		if (tf_parse_i64(p->value, 0, INT64_MAX, &n))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "next: not a token of this server");
		if (n > q->after)
			q->after = n;
	}
	if (split(req, "match[id]", &q->ids, resp) || split(req, "match[type]", &q->types, resp) ||
	    split(req, "match[version]", &q->versions, resp) ||
	    split(req, "match[spec_version]", &q->specs, resp))
		return -1;
	for (size_t i = 0; i < q->ids.n; i++)
		if (!tf_taxii_valid_id(q->ids.v[i]))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "match[id]: not a STIX identifier (type--UUID)");
	for (size_t i = 0; i < q->types.n; i++)
		for (const char *c = q->types.v[i]; *c; c++)
			if (!islower((unsigned char)*c) && !isdigit((unsigned char)*c) && *c != '-')
				return tf_resp_error(resp, 400, "invalid_parameter",
				                     "match[type]: not a STIX type name");
	q->any_version = q->versions.n == 0;
	for (size_t i = 0; i < q->versions.n; i++) {
		const char *v = q->versions.v[i];
		if (!strcmp(v, "first") || !strcmp(v, "last") || !strcmp(v, "all"))
			q->any_version = 1;
		else if (tf_time_parse(v, &q->at[q->nat++]))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "match[version]: must be first, last, all or a timestamp");
	}
	for (size_t i = 0; i < q->specs.n; i++) {
		const char *v = q->specs.v[i];
		size_t d = strspn(v, "0123456789");
		if (!d || v[d] != '.' || !v[d + 1] || v[d + 1 + strspn(v + d + 1, "0123456789")])
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "match[spec_version]: must be versions such as 2.1");
	}
	return 0;
}

/* The absolute URL of the API root when the request names a clean Host
 * (TAXII 2.1 §4.1: api_roots are URLs), else the path alone. A Host
 * without a port (nginx's Debian fastcgi_params pass $host, which drops
 * it) gets the port the server listens on, when that is not the scheme's. */
static void root_url(const tf_req *req, char *out, size_t len)
{
	const char *host = tf_req_env(req, "HTTP_HOST"), *https = tf_req_env(req, "HTTPS");
	const char *scheme = tf_req_env(req, "REQUEST_SCHEME"), *port = tf_req_env(req, "SERVER_PORT");
	int tls = (https && (!strcmp(https, "on") || !strcmp(https, "1"))) ||
	          (scheme && !strcmp(scheme, "https"));
	const char *rb, *def = tls ? "443" : "80";
	char hp[300];

	if (!host || !*host || strlen(host) >= 256 ||
	    strspn(host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") !=
	        strlen(host)) {
		snprintf(out, len, "%s" ROOT_PATH, req->prefix);
		return;
	}
	rb = strrchr(host, ']');
	if (!strchr(rb ? rb : host, ':') && port && *port && strlen(port) <= 5 &&
	    strspn(port, "0123456789") == strlen(port) && strcmp(port, def))
		snprintf(hp, sizeof hp, "%s:%s", host, port);
	else
		snprintf(hp, sizeof hp, "%s", host);
	snprintf(out, len, "%s://%s%s" ROOT_PATH, tls ? "https" : "http", hp, req->prefix);
}

static int answer(tf_resp *resp, json_object *o)
{
	char *text = NULL;
	size_t len = 0;
	int rc = o ? tf_json_dup_text(o, &text, &len) : TF_ENOMEM;

	json_object_put(o);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	return tf_resp_text(resp, 200, text, len, TAXII_MEDIA);
}

/* ---- discovery, API root, collections --------------------------------------- */

int tf_h_taxii_discovery(tf_app *app, tf_req *req, tf_resp *resp)
{
	char url[TF_MAX_PATH + 400];
	json_object *o = json_object_new_object(), *roots = json_object_new_array();
	(void)app;

	if (accept_check(req, resp))
		return json_object_put(o), json_object_put(roots), -1;
	root_url(req, url, sizeof url);
	json_object_object_add(o, "title", json_object_new_string("threatfeed TAXII 2.1 server"));
	json_object_object_add(o, "description",
	                       json_object_new_string("Read-only: what threatfeed's feeds ingested, "
	                                              "one collection per feed."));
	json_object_object_add(o, "default", json_object_new_string(url));
	json_object_array_add(roots, json_object_new_string(url));
	json_object_object_add(o, "api_roots", roots);
	return answer(resp, o);
}

int tf_h_taxii_root(tf_app *app, tf_req *req, tf_resp *resp)
{
	json_object *o = json_object_new_object(), *v = json_object_new_array();
	(void)app;

	if (accept_check(req, resp))
		return json_object_put(o), json_object_put(v), -1;
	json_object_object_add(o, "title", json_object_new_string("threatfeed"));
	json_object_object_add(o, "description",
	                       json_object_new_string("Every feed's stored STIX objects; read-only."));
	json_object_array_add(v, json_object_new_string(TAXII_MEDIA));
	json_object_object_add(o, "versions", v);
	/* nothing can be posted here; the API's body limit is the truth */
	json_object_object_add(o, "max_content_length", json_object_new_int(TF_MAX_BODY));
	return answer(resp, o);
}

static json_object *collection(const char *id, const char *title, const char *desc)
{
	json_object *c = json_object_new_object(), *m = json_object_new_array();

	json_object_object_add(c, "id", json_object_new_string(id));
	json_object_object_add(c, "title", json_object_new_string(title));
	json_object_object_add(c, "description", json_object_new_string(desc));
	json_object_object_add(c, "can_read", json_object_new_boolean(1));
	json_object_object_add(c, "can_write", json_object_new_boolean(0));
	json_object_array_add(m, json_object_new_string(STIX_MEDIA));
	json_object_object_add(c, "media_types", m);
	return c;
}

/* The collections, one per feed (id = feed id, title = its name) after the
 * one of every feed; only id when one is wanted (NULL when not found). */
static int collections(tf_app *app, const char *only, json_object **out, tf_resp *resp)
{
	json_object *feeds = NULL, *arr, *list = json_object_new_array();
	char *text = NULL, desc[TF_MAX_FEED_ID + 80];
	size_t len;
	int rc;

	*out = list;
	if (tf_app_store(app, resp))
		return -1;
	if (!only || !strcmp(only, TF_TAXII_ALL_COLLECTION))
		json_object_array_add(list, collection(TF_TAXII_ALL_COLLECTION, "All feeds",
		                                       "Every feed's STIX objects."));
	if ((rc = tf_feed_list(app->st, &text, &len)) ||
	    (rc = tf_json_parse(text, len, TF_MAX_FEED_JSON_DEPTH, &feeds, NULL, 0)))
		goto out;
	if (!json_object_object_get_ex(feeds, "feeds", &arr))
		goto out;
	for (size_t i = 0, n = json_object_array_length(arr); i < n; i++) {
		json_object *f = json_object_array_get_idx(arr, i);
		const char *id = tf_json_str(f, "id"), *name = tf_json_str(f, "name");
		if (!id || (only && strcmp(only, id)))
			continue;
		snprintf(desc, sizeof desc, "The STIX objects of feed %s (%s).", id,
		         tf_json_str(f, "type") ? tf_json_str(f, "type") : "?");
		json_object_array_add(list, collection(id, name ? name : id, desc));
	}
out:
	free(text);
	json_object_put(feeds);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	return 0;
}

int tf_h_taxii_collections(tf_app *app, tf_req *req, tf_resp *resp)
{
	json_object *list = NULL, *o;

	if (accept_check(req, resp) || collections(app, NULL, &list, resp))
		return json_object_put(list), -1;
	o = json_object_new_object();
	json_object_object_add(o, "collections", list);
	return answer(resp, o);
}

/* 404 for a collection that is no feed's (TAXII 2.1 §5.2). */
static int find_collection(tf_app *app, tf_req *req, tf_resp *resp, json_object **one)
{
	json_object *list = NULL;

	*one = NULL;
	if (collections(app, req->feed_id, &list, resp))
		return json_object_put(list), -1;
	if (json_object_array_length(list) != 1) {
		json_object_put(list);
		return tf_resp_error(resp, 404, "not_found", "no such collection");
	}
	*one = json_object_get(json_object_array_get_idx(list, 0));
	json_object_put(list);
	return 0;
}

int tf_h_taxii_collection(tf_app *app, tf_req *req, tf_resp *resp)
{
	json_object *one;

	if (accept_check(req, resp) || find_collection(app, req, resp, &one))
		return -1;
	return answer(resp, one);
}

/* ---- pages of objects --------------------------------------------------------- */

enum kind { K_OBJECTS, K_MANIFEST, K_OBJECT, K_VERSIONS };

struct entry {
	char feed[TF_MAX_FEED_ID + 1];
	char key[TF_MAX_RECORD_KEY + 1];
	int64_t added;
};

struct page {
	tf_req *req;
	tf_resp *resp;
	enum kind kind;
	const char *feed;         /* NULL: every feed */
	struct query q;
	struct entry *e;          /* up to limit + 1 */
	size_t n;
	int more;
	char *buf;
	size_t used;
	int failed;
	/* objects/{id}/ and versions/: the feeds to look in */
	char **feeds, *one[1];
	size_t nfeeds;
	int own_feeds, missing;
};

/* A record key that is a STIX object's id (other feed types key theirs
 * "otx:…", "vt:…"; those are not STIX objects). */
static int stix_key(const char *key)
{
	return tf_taxii_valid_id(key);
}

static int type_matches(const struct query *q, const char *key)
{
	return !q->types.n || has(&q->types, key, strlen(key) - 38); /* "--" and the UUID */
}

static int gather(const char *feed, const char *key, int64_t added, void *vctx)
{
	struct page *pg = vctx;
	struct entry *e;

	if (!stix_key(key) || !type_matches(&pg->q, key) ||
	    (pg->q.ids.n && !has(&pg->q.ids, key, strlen(key))))
		return TF_OK;
	if (pg->n == (size_t)pg->q.limit) {
		pg->more = 1; /* one more exists */
		return 1;
	}
	e = &pg->e[pg->n++];
	snprintf(e->feed, sizeof e->feed, "%s", feed);
	snprintf(e->key, sizeof e->key, "%s", key);
	e->added = added;
	return TF_OK;
}

/* The spec_version of an object (STIX 2.1 §3.2: absent on a 2.0 object,
 * which has created/modified; absent on a 2.1 SCO, which has neither). */
static void spec_of(const tf_stored_object *o, char *out, size_t len)
{
	json_object *obj = NULL, *v;

	snprintf(out, len, "2.1");
	if (tf_json_parse(o->object, o->object_len, TF_MAX_FEED_JSON_DEPTH, &obj, NULL, 0))
		return;
	if (json_object_object_get_ex(obj, "spec_version", &v) &&
	    json_object_is_type(v, json_type_string))
		snprintf(out, len, "%.15s", json_object_get_string(v));
	else if (json_object_object_get_ex(obj, "created", NULL) ||
	         json_object_object_get_ex(obj, "modified", NULL))
		snprintf(out, len, "2.0");
	json_object_put(obj);
}

/* TAXII 2.1 §3.2 version: modified, else created (the record's version),
 * else the date added. */
static int64_t version_of(const tf_stored_object *o)
{
	return o->modified_us ? o->modified_us : o->added_us;
}

static int post_filter(const struct query *q, const tf_stored_object *o, char *spec, size_t slen)
{
	int64_t v = version_of(o);
	int ok = q->any_version;

	for (size_t i = 0; !ok && i < q->nat; i++)
		ok = q->at[i] == v;
	if (!ok)
		return 0;
	spec[0] = '\0';
	if (q->specs.n) {
		spec_of(o, spec, slen);
		return has(&q->specs, spec, strlen(spec));
	}
	return 1;
}

static int out_flush(struct page *pg)
{
	int rc = pg->used ? tf_resp_stream(pg->resp, pg->buf, pg->used) : 0;

	pg->used = 0;
	if (rc)
		pg->failed = 1;
	return rc ? TF_ESYS : TF_OK;
}

static int out(struct page *pg, const char *s, size_t n)
{
	if (pg->used + n > OUT_BUF && out_flush(pg))
		return TF_ESYS;
	if (n > OUT_BUF) /* a large object goes out as it is */
		return tf_resp_stream(pg->resp, s, n) ? (pg->failed = 1, TF_ESYS) : TF_OK;
	memcpy(pg->buf + pg->used, s, n);
	pg->used += n;
	return TF_OK;
}

static int outs(struct page *pg, const char *s)
{
	return out(pg, s, strlen(s));
}

static int out_time(struct page *pg, const char *before, int64_t us)
{
	char ts[TF_TIME_LEN + 1];

	tf_time_format(us, ts, sizeof ts);
	return outs(pg, before) || outs(pg, "\"") || outs(pg, ts) || outs(pg, "\"") ? TF_ESYS : TF_OK;
}

/* One object of the page in its form: the object, its manifest record, or
 * its version. */
static int out_one(struct page *pg, const struct entry *e, const tf_stored_object *o,
                   const char *spec, int first)
{
	char quoted[TF_JSON_QUOTED_MAX(TF_MAX_RECORD_KEY)], sv[16];
	int rc;

	if (!first && (rc = outs(pg, ",")))
		return rc;
	switch (pg->kind) {
	case K_MANIFEST:
		if (!spec[0])
			spec_of(o, sv, sizeof sv), spec = sv;
		quoted[tf_json_quote(quoted, e->key)] = '\0';
		if (outs(pg, "{\"id\":") || outs(pg, quoted) ||
		    out_time(pg, ",\"date_added\":", e->added) ||
		    out_time(pg, ",\"version\":", version_of(o)) ||
		    outs(pg, ",\"media_type\":\"application/stix+json;version=") || outs(pg, spec) ||
		    outs(pg, "\"}"))
			return TF_ESYS;
		return TF_OK;
	case K_VERSIONS:
		return out_time(pg, "", version_of(o));
	default:
		return out(pg, o->object, o->object_len);
	}
}

/* The page, once its entries are known: their records in one read, the
 * filters that need the object, the date-added headers of what is served,
 * then the body. */
static int write_page(tf_txn *txn, struct page *pg)
{
	const char **feeds = malloc((pg->n ? pg->n : 1) * sizeof *feeds);
	const char **keys = malloc((pg->n ? pg->n : 1) * sizeof *keys);
	tf_stored_object *objs = calloc(pg->n ? pg->n : 1, sizeof *objs);
	char (*specs)[16] = calloc(pg->n ? pg->n : 1, sizeof *specs);
	char ts[TF_TIME_LEN + 1], next[24];
	int64_t first = 0, last = 0;
	size_t served = 0;
	int rc = feeds && keys && objs && specs ? TF_OK : TF_ENOMEM;

	for (size_t i = 0; !rc && i < pg->n; i++)
		feeds[i] = pg->e[i].feed, keys[i] = pg->e[i].key;
	if (!rc)
		rc = tf_records_objects(txn, pg->n, feeds, keys, objs);
	for (size_t i = 0; !rc && i < pg->n; i++) {
		/* an entry without its record cannot be: the snapshot has both */
		if (!objs[i].object || !post_filter(&pg->q, &objs[i], specs[i], sizeof specs[i])) {
			objs[i].object = NULL;
			continue;
		}
		if (!served++)
			first = pg->e[i].added;
		last = pg->e[i].added;
	}
	if (rc)
		goto done;
	if (served) {
		tf_time_format(first, ts, sizeof ts);
		tf_resp_header(pg->resp, "X-TAXII-Date-Added-First", ts);
		tf_time_format(last, ts, sizeof ts);
		tf_resp_header(pg->resp, "X-TAXII-Date-Added-Last", ts);
	}
	/* From here the answer is on its way: a failure can only cut it short. */
	if (tf_resp_stream_begin(pg->resp, TAXII_MEDIA) || pg->resp->head_only)
		goto done;
	snprintf(next, sizeof next, "%lld", pg->n ? (long long)pg->e[pg->n - 1].added : 0LL);
	if (outs(pg, pg->more ? "{\"more\":true,\"next\":\"" : "{\"more\":false") ||
	    (pg->more && (outs(pg, next) || outs(pg, "\""))))
		goto cut;
	if (served && outs(pg, pg->kind == K_VERSIONS ? ",\"versions\":[" : ",\"objects\":["))
		goto cut;
	for (size_t i = 0, k = 0; i < pg->n; i++)
		if (objs[i].object && out_one(pg, &pg->e[i], &objs[i], specs[i], !k++))
			goto cut;
	if ((served && outs(pg, "]")) || outs(pg, "}\n") || out_flush(pg))
		goto cut;
	goto done;
cut:
	if (!pg->failed)
		tf_err("taxii: the answer was cut short");
done:
	free(feeds), free(keys), free(objs), free(specs);
	return rc;
}

static int by_added(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	return (x->added > y->added) - (x->added < y->added);
}

/* One object's entries: its record in each feed of the collection (only the
 * latest version is kept per feed), by date added. missing when no feed of
 * the collection has it (TAXII 2.1 §5.5: 404). */
static int gather_one(tf_txn *txn, struct page *pg)
{
	tf_stored_object *objs = calloc(pg->nfeeds ? pg->nfeeds : 1, sizeof *objs);
	const char **keys = malloc((pg->nfeeds ? pg->nfeeds : 1) * sizeof *keys);
	size_t found = 0;
	int rc = objs && keys ? TF_OK : TF_ENOMEM;

	for (size_t i = 0; !rc && i < pg->nfeeds; i++)
		keys[i] = pg->req->obj_id;
	if (!rc)
		rc = tf_records_objects(txn, pg->nfeeds, (const char *const *)pg->feeds, keys, objs);
	for (size_t i = 0; !rc && i < pg->nfeeds; i++) {
		if (!objs[i].object)
			continue;
		found++;
		if (objs[i].added_us > pg->q.after) {
			struct entry *e = &pg->e[pg->n++];
			snprintf(e->feed, sizeof e->feed, "%s", pg->feeds[i]);
			snprintf(e->key, sizeof e->key, "%s", pg->req->obj_id);
			e->added = objs[i].added_us;
		}
	}
	pg->missing = !rc && !found;
	qsort(pg->e, pg->n, sizeof *pg->e, by_added);
	if (pg->n > (size_t)pg->q.limit) {
		pg->n = (size_t)pg->q.limit;
		pg->more = 1;
	}
	free(objs);
	free(keys);
	return rc;
}

static int page_txn(tf_txn *txn, void *vctx)
{
	struct page *pg = vctx;
	int rc;

	if (pg->resp->streamed) /* a replayed view: the answer went out already */
		return TF_OK;
	pg->n = 0;
	pg->more = 0;
	if (pg->kind == K_OBJECT || pg->kind == K_VERSIONS)
		rc = gather_one(txn, pg);
	else
		rc = tf_records_walk_added(txn, pg->feed, pg->q.after, gather, pg);
	return rc || pg->missing ? rc : write_page(txn, pg);
}

static int serve(tf_app *app, tf_req *req, tf_resp *resp, enum kind kind)
{
	struct page *pg = calloc(1, sizeof *pg);
	json_object *one = NULL;
	size_t cap;
	int rc = TF_OK;

	if (!pg)
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	pg->req = req;
	pg->resp = resp;
	pg->kind = kind;
	pg->feed = strcmp(req->feed_id, TF_TAXII_ALL_COLLECTION) ? req->feed_id : NULL;
	if (accept_check(req, resp) || parse_query(req, &pg->q, resp) ||
	    find_collection(app, req, resp, &one)) {
		free(pg);
		return -1;
	}
	json_object_put(one);
	if (kind == K_OBJECT || kind == K_VERSIONS) {
		if (pg->feed) {
			pg->one[0] = (char *)pg->feed;
			pg->feeds = pg->one;
			pg->nfeeds = 1;
		} else {
			rc = tf_feed_ids(app->st, &pg->feeds, &pg->nfeeds);
			pg->own_feeds = 1;
		}
	}
	cap = (size_t)pg->q.limit + 1 > pg->nfeeds ? (size_t)pg->q.limit + 1 : pg->nfeeds;
	if (!rc && (!(pg->e = malloc(cap * sizeof *pg->e)) || !(pg->buf = malloc(OUT_BUF))))
		rc = TF_ENOMEM;
	if (!rc)
		rc = tf_store_view(app->st, page_txn, pg);
	if (!rc && !resp->streamed && !pg->missing)
		rc = TF_ESYS;
	for (size_t i = 0; pg->own_feeds && i < pg->nfeeds; i++)
		free(pg->feeds[i]);
	if (pg->own_feeds)
		free(pg->feeds);
	free(pg->e);
	free(pg->buf);
	if (pg->missing && !rc) {
		free(pg);
		return tf_resp_error(resp, 404, "not_found", "no such object in this collection");
	}
	free(pg);
	if (resp->streamed)
		return 0;
	return tf_resp_fail(resp, rc, NULL);
}

int tf_h_taxii_objects(tf_app *app, tf_req *req, tf_resp *resp)
{
	return serve(app, req, resp, K_OBJECTS);
}

int tf_h_taxii_manifest(tf_app *app, tf_req *req, tf_resp *resp)
{
	return serve(app, req, resp, K_MANIFEST);
}

int tf_h_taxii_object(tf_app *app, tf_req *req, tf_resp *resp)
{
	return serve(app, req, resp, K_OBJECT);
}

int tf_h_taxii_versions(tf_app *app, tf_req *req, tf_resp *resp)
{
	return serve(app, req, resp, K_VERSIONS);
}

/* ---- errors (TAXII 2.1 §3.6.1) ------------------------------------------------ */

void tf_taxii_error(tf_resp *resp)
{
	json_object *in = NULL, *o;
	const char *text, *code;
	char status[8];
	char *body = NULL;
	size_t len = 0;

	if (!resp->body || tf_json_parse(resp->body, resp->len, 4, &in, NULL, 0))
		return;
	text = tf_json_str(in, "error");
	code = tf_json_str(in, "code");
	snprintf(status, sizeof status, "%d", resp->status);
	if ((o = json_object_new_object())) {
		json_object_object_add(o, "title", json_object_new_string(tf_http_reason(resp->status)));
		json_object_object_add(o, "description", json_object_new_string(text ? text : ""));
		json_object_object_add(o, "error_code", json_object_new_string(code ? code : ""));
		json_object_object_add(o, "http_status", json_object_new_string(status));
		if (!tf_json_dup_text(o, &body, &len)) {
			int st = resp->status;
			tf_resp_text(resp, st, body, len, TAXII_MEDIA);
		}
	}
	json_object_put(o);
	json_object_put(in);
}
