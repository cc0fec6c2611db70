/* The search for a taxii21 feed's collection through the API roots, shared
 * by a run and test_connection (taxii_find.h). Every message here is a
 * run's error text, word for word what test_connection reports. */
#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "upstream.h"
#include "taxii_find.h"
#include "util.h"

/* ---- small helpers ---------------------------------------------------------- */

static char *cat3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	if (s) {
		memcpy(s, a, la);
		memcpy(s + la, b, lb);
		memcpy(s + la + lb, c, lc + 1);
	}
	return s;
}

/* A URL with a trailing '/' (TAXII 2.1 §1.6.3: every URL ends in one). */
static char *with_slash(const char *url)
{
	size_t n = strlen(url);

	if ((n && url[n - 1] == '/') || strchr(url, '?') || strchr(url, '#'))
		return strdup(url);
	return cat3(url, "/", "");
}

/* Resolves ref (absolute, or relative as discovery's api_roots may be)
 * against base. A root longer than TF_MAX_URL is no URL of ours (a feed's
 * own url is held to it too). */
static char *resolve(const char *base, const char *ref)
{
	CURLU *u = curl_url();
	char *out = NULL, *res = NULL;

	if (!u)
		return NULL;
	if (!curl_url_set(u, CURLUPART_URL, base, 0) && !curl_url_set(u, CURLUPART_URL, ref, 0) &&
	    !curl_url_get(u, CURLUPART_URL, &out, 0) && strlen(out) < TF_MAX_URL)
		res = with_slash(out);
	curl_free(out);
	curl_url_cleanup(u);
	return res;
}

static int valid_collection_id(const char *s)
{
	size_t n = 0;

	for (; s[n]; n++)
		if (!isalnum((unsigned char)s[n]) && !strchr("-._~", s[n]))
			return 0;
	return n > 0 && n <= TF_MAX_FIELD;
}

static int media_is_taxii21(const char *v)
{
	char buf[128];
	size_t k = 0;

	for (; *v && k + 1 < sizeof buf; v++)
		if (*v != ' ' && *v != '\t')
			buf[k++] = (char)tolower((unsigned char)*v);
	buf[k] = '\0';
	return !strcmp(buf, TF_TAXII_MEDIA);
}

/* ---- requests ------------------------------------------------------------------ */

void tf_taxii_client_init(tf_taxii_client *c, json_object *feed, tf_taxii_get_fn get, void *ctx)
{
	tf_fetch_req creds = {0};

	tf_fetch_basic(&creds, tf_json_str(feed, "username"), tf_json_str(feed, "secret"));
	c->get = get;
	c->ctx = ctx;
	c->username = creds.username;
	c->password = creds.password;
}

void tf_taxii_req(const tf_taxii_client *c, const char *url, size_t max_bytes, tf_fetch_req *req)
{
	memset(req, 0, sizeof *req);
	req->url = url;
	req->accept = TF_TAXII_MEDIA;
	req->username = c->username;
	req->password = c->password;
	req->max_bytes = max_bytes;
}

int tf_taxii_get_json(const tf_taxii_client *c, const char *url, const char *what, size_t max_bytes,
                      int allow, json_object **doc, long *status, tf_fetch_resp *keep, char *err,
                      size_t errlen)
{
	tf_fetch_req req;
	tf_fetch_resp resp = {0};
	char buf[400];
	int rc;

	*doc = NULL;
	if (status)
		*status = 0;
	tf_taxii_req(c, url, max_bytes, &req);
	if ((rc = c->get(c->ctx, &req, &resp, what, err, errlen)))
		return rc;
	if (status)
		*status = resp.status;
	if (((allow & TF_TAXII_ALLOW_404) && resp.status == 404) ||
	    ((allow & TF_TAXII_ALLOW_400) && resp.status == 400)) {
		tf_fetch_resp_free(&resp);
		return TF_ENOTFOUND;
	}
	if ((rc = tf_upstream_failure(&resp, buf, sizeof buf))) {
		if (rc == TF_EPERM) {
			/* buf starts with "HTTP 401": keep what follows (a TAXII title) */
			tf_set_err(err, errlen, "authentication failed (HTTP %ld)%s", resp.status,
			           buf + strcspn(buf, ":"));
		} else {
			tf_set_err(err, errlen, "%s: %s", what, buf);
			rc = TF_EUPSTREAM;
		}
		goto out;
	}
	if (!tf_upstream_is_json(&resp, buf, sizeof buf)) {
		tf_set_err(err, errlen, "%s: expected TAXII JSON, got %s", what, buf);
		rc = TF_EPARSE;
		goto out;
	}
	if (tf_json_parse(resp.body, resp.len, TF_MAX_FEED_JSON_DEPTH, doc, buf, sizeof buf)) {
		tf_set_err(err, errlen, "%s: %s", what, buf);
		rc = TF_EPARSE;
		goto out;
	}
	if (!json_object_is_type(*doc, json_type_object)) {
		json_object_put(*doc);
		*doc = NULL;
		tf_set_err(err, errlen, "%s: expected a JSON object", what);
		rc = TF_EPARSE;
		goto out;
	}
	if (keep) {
		*keep = resp;
		memset(&resp, 0, sizeof resp);
	}
	rc = TF_OK;
out:
	tf_fetch_resp_free(&resp);
	return rc;
}

/* ---- the search (TAXII 2.1 §4) ------------------------------------------------ */

/* One search: its client and what it found out, for the error that names
 * every root tried when none has the collection. */
typedef struct search {
	const tf_taxii_client *c;
	const char *collection;
	tf_taxii_found *out;
	char notes[TF_MAX_ROOT_NOTES];
	size_t len;
} search;

static void note(search *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(search *s, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (s->len >= sizeof s->notes - 1)
		return;
	va_start(ap, fmt);
	w = vsnprintf(s->notes + s->len, sizeof s->notes - s->len, fmt, ap);
	va_end(ap);
	if (w > 0)
		s->len += (size_t)w < sizeof s->notes - s->len ? (size_t)w : sizeof s->notes - 1 - s->len;
}

static int check_versions(json_object *root, const char *url, char *err, size_t errlen)
{
	json_object *v;
	size_t n;

	if (!json_object_object_get_ex(root, "versions", &v) ||
	    !json_object_is_type(v, json_type_array)) {
		tf_set_err(err, errlen, "API root %s: not a TAXII 2.1 API root (no versions)", url);
		return TF_EPARSE;
	}
	n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(v, i);
		if (json_object_is_type(e, json_type_string) &&
		    media_is_taxii21(json_object_get_string(e)))
			return TF_OK;
	}
	tf_set_err(err, errlen, "API root %s does not offer TAXII 2.1 (%s)", url, TF_TAXII_MEDIA);
	return TF_EUPSTREAM;
}

/* Records where the collection is; the root then belongs to s->out. */
static void found_at(search *s, char *root, json_object *coll)
{
	const char *title = tf_json_str(coll, "title");

	s->out->root = root;
	tf_printable(s->out->title, sizeof s->out->title, title ? title : "", 64, '?');
}

/* Looks for the collection in root's collection list. TF_OK: found and
 * readable; TF_EPERM: listed with can_read false (err says so) — in both
 * cases root now belongs to s->out. TF_ENOTFOUND: not there (the readable
 * ones are noted); another code: the root failed (err says why). */
static int collection_in(search *s, char *root, char *err, size_t errlen)
{
	json_object *doc = NULL, *list = NULL, *found = NULL;
	char *url = cat3(root, "collections/", "");
	int rc, can_read = 0, listed = 0;
	long status;

	if (!url) {
		tf_set_err(err, errlen, "out of memory");
		return TF_ENOMEM;
	}
	rc = tf_taxii_get_json(s->c, url, "collections", TF_TAXII_MAX_META_BYTES, TF_TAXII_ALLOW_404,
	                       &doc, &status, NULL, err, errlen);
	free(url);
	if (rc == TF_ENOTFOUND) {
		note(s, "; %s: no collections (HTTP 404)", root);
		return TF_ENOTFOUND;
	}
	if (rc)
		return rc;
	if (json_object_object_get_ex(doc, "collections", &list) &&
	    !json_object_is_type(list, json_type_array)) {
		tf_set_err(err, errlen, "collections: \"collections\" is not an array");
		json_object_put(doc);
		return TF_EPARSE;
	}
	note(s, "; %s: ", root);
	for (size_t i = 0; list && i < json_object_array_length(list) && !found; i++) {
		json_object *c = json_object_array_get_idx(list, i);
		const char *id = tf_json_str(c, "id"), *title = tf_json_str(c, "title");
		char pid[80], ptitle[80];
		if (id && !strcmp(id, s->collection)) {
			found = c;
			break;
		}
		if (id && listed < TF_MAX_ROOT_NOTE_COLLECTIONS &&
		    (tf_json_get_bool(c, "can_read", &can_read) != TF_OK || can_read)) {
			tf_printable(pid, sizeof pid, id, 64, '?');
			tf_printable(ptitle, sizeof ptitle, title ? title : "", 64, '?');
			note(s, "%s%s \"%s\"", listed++ ? ", " : "readable collections ", pid, ptitle);
		}
	}
	if (!found) {
		if (!listed)
			note(s, "no readable collections");
		json_object_put(doc);
		return TF_ENOTFOUND;
	}
	can_read = 0;
	rc = TF_OK;
	if (tf_json_get_bool(found, "can_read", &can_read) == TF_OK && !can_read) {
		tf_set_err(err, errlen, "collection %s in API root %s is not readable with these "
		                        "credentials (can_read is false)", s->collection, root);
		rc = TF_EPERM;
	}
	found_at(s, root, found);
	json_object_put(doc);
	return rc;
}

/* One API root: it must offer TAXII 2.1 and list the collection. */
static int try_root(search *s, char *root, char *err, size_t errlen)
{
	json_object *doc = NULL;
	int rc = tf_taxii_get_json(s->c, root, "API root", TF_TAXII_MAX_META_BYTES, 0, &doc, NULL,
	                           NULL, err, errlen);

	if (!rc)
		rc = check_versions(doc, root, err, errlen);
	json_object_put(doc);
	return rc ? rc : collection_in(s, root, err, errlen);
}

/* The roots to search: the default first, then each listed root, once.
 * *has_default: out[0] is the default. */
static size_t root_candidates(json_object *doc, const char **out, size_t max, int *has_default)
{
	json_object *roots;
	size_t n = 0;
	const char *def = tf_json_str(doc, "default");

	*has_default = def && *def;
	if (*has_default)
		out[n++] = def;
	if (!json_object_object_get_ex(doc, "api_roots", &roots) ||
	    !json_object_is_type(roots, json_type_array))
		return n;
	for (size_t i = 0; i < json_object_array_length(roots) && n < max; i++) {
		const char *r = json_object_get_string(json_object_array_get_idx(roots, i));
		int dup = !r || !*r;
		for (size_t j = 0; j < n && !dup; j++)
			dup = !strcmp(out[j], r);
		if (!dup)
			out[n++] = r;
	}
	return n;
}

/* Searches the roots in order and keeps the first that has the collection.
 * A root that fails (refused, unreachable, not TAXII 2.1) is noted and the
 * search goes on; a cancel ends it at once. */
static int search_roots(search *s, const char *url, json_object *doc, char *err, size_t errlen)
{
	const char *cand[TF_MAX_API_ROOTS];
	int has_default;
	size_t n = root_candidates(doc, cand, TF_MAX_API_ROOTS, &has_default);
	int rc = TF_ENOTFOUND, failed_any = 0;
	char why[TF_MAX_ERROR_LEN + 1];

	if (!n) {
		tf_set_err(err, errlen, "%s is neither a TAXII 2.1 discovery document with an API "
		                        "root nor an API root", url);
		return TF_EPARSE;
	}
	for (size_t i = 0; i < n; i++) {
		char *root = resolve(url, cand[i]);
		if (!root) {
			note(s, "; \"%.100s\": not a valid URL", cand[i]);
			continue;
		}
		why[0] = '\0';
		rc = try_root(s, root, why, sizeof why);
		if (s->out->root) { /* found there, readable or not: the answer */
			s->out->where = i == 0 && has_default ? TF_TAXII_AT_DEFAULT : TF_TAXII_AT_LISTED;
			s->out->before = i;
			if (rc)
				tf_set_err(err, errlen, "%s", why);
			return rc;
		}
		/* a cancel ends the search; a refused root is only noted */
		if (rc == TF_ECANCELLED || rc == TF_ENOMEM) {
			free(root);
			tf_set_err(err, errlen, "%s", why);
			return rc;
		}
		if (rc != TF_ENOTFOUND) {
			note(s, "; %s: %s", root, why);
			failed_any = 1;
		}
		free(root);
	}
	tf_set_err(err, errlen, "collection %s not found in the %zu API root%s searched%s",
	           s->collection, n, n == 1 ? "" : "s", s->notes);
	return failed_any ? TF_EUPSTREAM : TF_ENOTFOUND;
}

int tf_taxii_find(const tf_taxii_client *c, json_object *feed, tf_taxii_found *out, char *err,
                  size_t errlen)
{
	search s = {.c = c, .collection = tf_json_str(feed, "collection"), .out = out};
	const char *feed_url = tf_json_str(feed, "url");
	json_object *doc = NULL;
	char *url;
	int rc;

	memset(out, 0, sizeof *out);
	if (!feed_url || !*feed_url) {
		tf_set_err(err, errlen, "feed has no url");
		return TF_EINVAL;
	}
	if (!s.collection || !valid_collection_id(s.collection)) {
		tf_set_err(err, errlen, "feed has no valid collection id");
		return TF_EINVAL;
	}
	if (!(url = with_slash(feed_url))) {
		tf_set_err(err, errlen, "out of memory");
		return TF_ENOMEM;
	}
	if ((rc = tf_taxii_get_json(c, url, "discovery", TF_TAXII_MAX_META_BYTES, 0, &doc, NULL, NULL,
	                            err, errlen)))
		goto out;
	if (!json_object_object_get_ex(doc, "versions", NULL)) {
		rc = search_roots(&s, url, doc, err, errlen);
		goto out;
	}
	/* The feed's URL is an API root already. */
	if (!(rc = check_versions(doc, url, err, errlen))) {
		rc = collection_in(&s, url, err, errlen);
		if (rc == TF_ENOTFOUND)
			tf_set_err(err, errlen, "collection %s not found in API root %s%s", s.collection,
			           url, s.notes);
	}
	if (out->root) {
		out->where = TF_TAXII_AT_URL;
		url = NULL; /* it is out->root */
	}
out:
	json_object_put(doc);
	free(url);
	return rc;
}

void tf_taxii_found_free(tf_taxii_found *f)
{
	free(f->root);
	f->root = NULL;
}
