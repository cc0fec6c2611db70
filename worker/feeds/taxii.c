/* The taxii21 feed driver (docs/SPEC.md §4, docs/FEEDS.md "TAXII 2.1"): discovery → API
 * root → collection → objects/ paged with limit, next/more and added_after.
 *
 * One page = one batch = one commit, and the feed's cursor (the page's
 * X-TAXII-Date-Added-Last) is written with it: the cursor never runs ahead
 * of what is stored (docs/SPEC.md §3 stop_now), and the next run starts from it.
 *
 * What fails the run: any request that still fails after the retries of
 * tf_stix_http_get, a non-JSON or unparsable page, a wrong envelope (objects
 * not an array, more not a boolean, next not a string), a page over
 * TF_MAX_PAGE_OBJECTS, paging that loops or makes no progress, more than
 * TF_MAX_PAGES pages or TF_MAX_RUN_S seconds. What is skipped with a
 * warning: single malformed objects (see stix.h). */
#include <ctype.h>
#include <stdarg.h>
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "limits.h"
#include "run.h"
#include "taxii.h"
#include "stix.h"
#include "util.h"

#define TAXII_MEDIA "application/taxii+json;version=2.1"
#define TAXII_DEFAULT_LIMIT 1000   /* objects per page we ask for; servers may cap it */

typedef struct taxii {
	tf_run *r;
	const char *username;
	const char *password;
	const char *collection;
	char *root;                 /* API root URL, ending in '/' */
	char *objects;              /* {root}collections/{id}/objects/ */
	long limit;
	char *committed;            /* added_after of the last committed page (or the
	                             * run's starting cursor), NULL: none */
	tf_stix_stats st;
	tf_seen seen;               /* digests of the pages read (loop guard):
	                             * one per page, so bounded by the page budget */
} taxii;

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
 * against base. */
static char *resolve(const char *base, const char *ref)
{
	CURLU *u = curl_url();
	char *out = NULL, *res = NULL;

	if (!u)
		return NULL;
	if (!curl_url_set(u, CURLUPART_URL, base, 0) && !curl_url_set(u, CURLUPART_URL, ref, 0) &&
	    !curl_url_get(u, CURLUPART_URL, &out, 0))
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
	return !strcmp(buf, TAXII_MEDIA);
}

/* ---- requests ------------------------------------------------------------------ */

enum { ALLOW_404 = 1, ALLOW_400 = 2 };

/* GETs url and parses a JSON object from it. TF_OK with *doc (caller puts);
 * TF_ENOTFOUND with *status set and no failure recorded when the status is
 * one the caller handles (allow); else an error after tf_run_fail(). */
static void taxii_req(const taxii *t, const char *url, size_t max_bytes, tf_fetch_req *req)
{
	memset(req, 0, sizeof *req);
	req->url = url;
	req->accept = TAXII_MEDIA;
	req->username = t->username;
	req->password = t->password;
	req->max_bytes = max_bytes;
}

static int get_json(taxii *t, const char *url, const char *what, tf_stage stage, size_t max_bytes,
                    int allow, json_object **doc, long *status, const char **dal, char **dal_copy,
                    tf_fetch_resp *keep)
{
	tf_fetch_req req;
	tf_fetch_resp resp;
	char buf[400];
	int rc;

	*doc = NULL;
	if (status)
		*status = 0;
	taxii_req(t, url, max_bytes, &req);
	if ((rc = tf_stix_http_get(t->r, &req, &resp, stage, what)))
		return rc;
	if (status)
		*status = resp.status;
	if (resp.status < 200 || resp.status > 299) {
		if (((allow & ALLOW_404) && resp.status == 404) ||
		    ((allow & ALLOW_400) && resp.status == 400)) {
			tf_fetch_resp_free(&resp);
			return TF_ENOTFOUND;
		}
		tf_stix_http_error(&resp, buf, sizeof buf);
		if (resp.status == 401 || resp.status == 403) {
			/* buf starts with "HTTP 401": keep what follows (a TAXII title) */
			tf_run_fail(t->r, "authentication failed (HTTP %ld)%s", resp.status,
			            buf + strcspn(buf, ":"));
			rc = TF_EPERM;
		} else {
			tf_run_fail(t->r, "%s: %s", what, buf);
			rc = TF_EUPSTREAM;
		}
		goto out;
	}
	if (!tf_stix_is_json(&resp, buf, sizeof buf)) {
		tf_run_fail(t->r, "%s: expected TAXII JSON, got %s", what, buf);
		rc = TF_EPARSE;
		goto out;
	}
	if (tf_json_parse(resp.body, resp.len, TF_MAX_FEED_JSON_DEPTH, doc, buf, sizeof buf)) {
		tf_run_fail(t->r, "%s: %s", what, buf);
		rc = TF_EPARSE;
		goto out;
	}
	if (!json_object_is_type(*doc, json_type_object)) {
		json_object_put(*doc);
		*doc = NULL;
		tf_run_fail(t->r, "%s: expected a JSON object", what);
		rc = TF_EPARSE;
		goto out;
	}
	if (dal && dal_copy) {
		*dal_copy = resp.date_added_last;
		resp.date_added_last = NULL;
		*dal = *dal_copy;
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

/* ---- discovery (TAXII 2.1 §4) ------------------------------------------------- */

static int check_versions(taxii *t, json_object *root, const char *url)
{
	json_object *v;
	size_t n;

	if (!json_object_object_get_ex(root, "versions", &v) ||
	    !json_object_is_type(v, json_type_array)) {
		tf_run_fail(t->r, "API root %s: not a TAXII 2.1 API root (no versions)", url);
		return TF_EPARSE;
	}
	n = json_object_array_length(v);
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(v, i);
		if (json_object_is_type(e, json_type_string) &&
		    media_is_taxii21(json_object_get_string(e)))
			return TF_OK;
	}
	tf_run_fail(t->r, "API root %s does not offer TAXII 2.1 (%s)", url, TAXII_MEDIA);
	return TF_EUPSTREAM;
}

/* What the search through the API roots found out, for the error that
 * names every root tried when none has the collection. */
typedef struct root_notes {
	char text[TF_MAX_ROOT_NOTES];
	size_t len;
	int unreadable; /* a root lists the collection, can_read false: the answer */
} root_notes;

static void note(root_notes *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(root_notes *n, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (n->len >= sizeof n->text - 1)
		return;
	va_start(ap, fmt);
	w = vsnprintf(n->text + n->len, sizeof n->text - n->len, fmt, ap);
	va_end(ap);
	if (w > 0)
		n->len += (size_t)w < sizeof n->text - n->len ? (size_t)w : sizeof n->text - 1 - n->len;
}

/* Looks for the collection in root's collection list. TF_OK: found and
 * readable; TF_ENOTFOUND: not there (the readable ones are noted); another
 * code: the root failed, or it lists the collection as not readable
 * (notes->unreadable is set); the run's error says which. */
static int collection_in(taxii *t, const char *root, root_notes *notes)
{
	json_object *doc = NULL, *list = NULL, *found = NULL;
	char *url = cat3(root, "collections/", "");
	int rc, can_read = 0, listed = 0;
	long status;

	if (!url) {
		tf_run_fail(t->r, "out of memory");
		return TF_ENOMEM;
	}
	rc = get_json(t, url, "collections", TF_SG_DISCOVERING, TF_TAXII_MAX_META_BYTES, ALLOW_404, &doc,
	              &status, NULL, NULL, NULL);
	free(url);
	if (rc == TF_ENOTFOUND) {
		note(notes, "; %s: no collections (HTTP 404)", root);
		return TF_ENOTFOUND;
	}
	if (rc)
		return rc;
	if (json_object_object_get_ex(doc, "collections", &list) &&
	    !json_object_is_type(list, json_type_array)) {
		tf_run_fail(t->r, "collections: \"collections\" is not an array");
		json_object_put(doc);
		return TF_EPARSE;
	}
	note(notes, "; %s: ", root);
	for (size_t i = 0; list && i < json_object_array_length(list) && !found; i++) {
		json_object *c = json_object_array_get_idx(list, i);
		const char *id = tf_json_str(c, "id"), *title = tf_json_str(c, "title");
		char pid[80], ptitle[80];
		if (id && !strcmp(id, t->collection)) {
			found = c;
			break;
		}
		if (id && listed < TF_MAX_ROOT_NOTE_COLLECTIONS &&
		    (tf_json_get_bool(c, "can_read", &can_read) != TF_OK || can_read)) {
			tf_printable(pid, sizeof pid, id, 64, '?');
			tf_printable(ptitle, sizeof ptitle, title ? title : "", 64, '?');
			note(notes, "%s%s \"%s\"", listed++ ? ", " : "readable collections ", pid, ptitle);
		}
	}
	if (!found) {
		if (!listed)
			note(notes, "no readable collections");
		json_object_put(doc);
		return TF_ENOTFOUND;
	}
	can_read = 0;
	rc = TF_OK;
	if (tf_json_get_bool(found, "can_read", &can_read) == TF_OK && !can_read) {
		notes->unreadable = 1;
		tf_run_fail(t->r, "collection %s is not readable with these credentials (can_read is "
		                  "false)", t->collection);
		rc = TF_EPERM;
	}
	json_object_put(doc);
	return rc;
}

/* One API root: it must offer TAXII 2.1 and list the collection. */
static int try_root(taxii *t, const char *root, root_notes *notes)
{
	json_object *doc = NULL;
	int rc = get_json(t, root, "API root", TF_SG_DISCOVERING, TF_TAXII_MAX_META_BYTES, 0, &doc,
	                  NULL, NULL, NULL, NULL);

	if (!rc)
		rc = check_versions(t, doc, root);
	json_object_put(doc);
	return rc ? rc : collection_in(t, root, notes);
}

/* The roots to search: the default first, then each listed root, once. */
static size_t root_candidates(json_object *doc, const char **out, size_t max)
{
	json_object *roots;
	size_t n = 0;
	const char *def = tf_json_str(doc, "default");

	if (def && *def)
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
static int search_roots(taxii *t, const char *url, json_object *doc)
{
	const char *cand[TF_MAX_API_ROOTS];
	size_t n = root_candidates(doc, cand, TF_MAX_API_ROOTS);
	root_notes notes = {.len = 0};
	int rc = TF_ENOTFOUND, failed_any = 0;

	if (!n) {
		tf_run_fail(t->r, "%s is neither a TAXII 2.1 discovery document with an API root nor "
		                  "an API root", url);
		return TF_EPARSE;
	}
	for (size_t i = 0; i < n; i++) {
		char *root = resolve(url, cand[i]);
		if (!root) {
			note(&notes, "; \"%.100s\": not a valid URL", cand[i]);
			continue;
		}
		rc = try_root(t, root, &notes);
		if (rc == TF_OK) {
			t->root = root;
			tf_run_fail(t->r, "%s", ""); /* failures of earlier roots do not count */
			return TF_OK;
		}
		/* a cancel ends the search; so does the collection found but not
		 * readable (that is the answer); a refused root is only noted */
		if (rc == TF_ECANCELLED || rc == TF_ENOMEM || notes.unreadable) {
			free(root);
			return rc;
		}
		if (rc != TF_ENOTFOUND) {
			note(&notes, "; %s: %s", root, tf_run_error(t->r));
			failed_any = 1;
		}
		free(root);
	}
	tf_run_fail(t->r, "collection %s not found in the %zu API root%s searched%s", t->collection,
	            n, n == 1 ? "" : "s", notes.text);
	return failed_any ? TF_EUPSTREAM : TF_ENOTFOUND;
}

static int discover(taxii *t, const char *feed_url)
{
	json_object *doc = NULL;
	char *url = with_slash(feed_url);
	root_notes notes = {.len = 0};
	int rc;

	if (!url) {
		tf_run_fail(t->r, "out of memory");
		return TF_ENOMEM;
	}
	if ((rc = tf_run_stage(t->r, TF_SG_DISCOVERING, "reading %s", url)))
		goto out;
	if ((rc = get_json(t, url, "discovery", TF_SG_DISCOVERING, TF_TAXII_MAX_META_BYTES, 0, &doc, NULL,
	                   NULL, NULL, NULL)))
		goto out;
	if (!json_object_object_get_ex(doc, "versions", NULL)) {
		rc = search_roots(t, url, doc);
		goto out;
	}
	/* The feed's URL is an API root already. */
	if (!(rc = check_versions(t, doc, url)) && (rc = collection_in(t, url, &notes)) == TF_ENOTFOUND)
		tf_run_fail(t->r, "collection %s not found in API root %s%s", t->collection, url,
		            notes.text);
	if (!rc) {
		t->root = url;
		url = NULL;
	}
out:
	json_object_put(doc);
	free(url);
	return rc;
}

/* ---- objects (TAXII 2.1 §5.4) ------------------------------------------------- */

static char *page_url(taxii *t, const char *after, const char *next)
{
	size_t n = strlen(t->objects) + 64 + 3 * (after ? strlen(after) : 0) +
	           3 * (next ? strlen(next) : 0);
	char *u = malloc(n);

	if (!u)
		return NULL;
	snprintf(u, n, "%s?limit=%ld", t->objects, t->limit);
	if (after) {
		strcat(u, "&added_after=");
		tf_url_enc_append(u, after);
	}
	if (next) {
		strcat(u, "&next=");
		tf_url_enc_append(u, next);
	}
	return u;
}

/* A date-added value we can send back as added_after, or NULL. */
static const char *usable_date(tf_run *r, const char *dal, int page, int *warned)
{
	int64_t us;

	if (!dal || !*dal)
		return NULL;
	if (strlen(dal) > 64 || tf_time_parse(dal, &us)) {
		if (!*warned) {
			char shown[70];
			snprintf(shown, sizeof shown, "%.64s", dal);
			for (char *c = shown; *c; c++)
				if ((unsigned char)*c < 0x20)
					*c = ' ';
			tf_run_warn(r, "page %d: ignoring X-TAXII-Date-Added-Last \"%s\" (not a timestamp)",
			            page, shown);
			*warned = 1;
		}
		return NULL;
	}
	return dal;
}

static int set_str(char **slot, const char *v)
{
	char *c = NULL;

	if (v && !(c = strdup(v)))
		return TF_ENOMEM;
	free(*slot);
	*slot = c;
	return TF_OK;
}

/* Asks for the page that follows now — the URL the loop below will build —
 * so that the upstream prepares it while this page is parsed and stored; the
 * get of that page continues this request (tf_fetch_prefetch). */
static void prefetch_next(taxii *t, const char *after, const char *next)
{
	char *url = page_url(t, after, next);
	tf_fetch_req req;

	if (!url)
		return;
	taxii_req(t, url, 0, &req);
	tf_fetch_prefetch(tf_run_fetch(t->r), &req);
	free(url);
}

static int fetch_objects(taxii *t)
{
	tf_progress *p = tf_run_progress(t->r);
	char *after = NULL, *next = NULL, *url = NULL, *dal_copy = NULL;
	json_object *doc = NULL, *cursor = NULL;
	tf_fetch_resp body = {0};
	tf_stix_span *spans = NULL;
	int rc = TF_OK, page = 0, empty = 0, fallback_armed = 1, dal_warned = 0;
	uint64_t prev_digest = 0;
	int prev_had_objects = 0;

	if (set_str(&after, t->committed))
		goto nomem;
	for (;;) {
		json_object *objs = NULL, *v;
		const char *token = NULL, *dal_raw = NULL, *dal;
		size_t n = 0;
		int more = 0, no_progress;
		long status;
		int64_t snap_objects, snap_pages;
		char what[48];

		json_object_put(doc);
		doc = NULL;
		free(dal_copy);
		dal_copy = NULL;
		if ((rc = tf_run_page_budget(t->r, page)))
			goto out;
		snprintf(what, sizeof what, "page %d", page + 1);
		free(url);
		if (!(url = page_url(t, after, next)))
			goto nomem;
		if ((rc = tf_run_stage(t->r, TF_SG_FETCHING, "page %d: fetching", page + 1)))
			goto out;
		tf_fetch_resp_free(&body);
		free(spans);
		spans = NULL;
		rc = get_json(t, url, what, TF_SG_FETCHING, 0, next ? ALLOW_400 | ALLOW_404 : ALLOW_404,
		              &doc, &status, &dal_raw, &dal_copy, &body);
		if (rc == TF_ENOTFOUND && next && fallback_armed) {
			/* docs/FEEDS.md: next tokens expire; continue from the last
			 * committed page instead, once per committed page. */
			tf_run_warn(t->r, "page %d: next token refused (HTTP %ld), probably expired; "
			                  "continuing from added_after=%s", page + 1, status,
			            t->committed ? t->committed : "(start)");
			fallback_armed = 0;
			free(next);
			next = NULL;
			if (set_str(&after, t->committed))
				goto nomem;
			rc = TF_OK;
			continue;
		}
		if (rc == TF_ENOTFOUND) {
			if (status == 404)
				tf_run_fail(t->r, "collection %s not found (HTTP 404 on page %d)",
				            t->collection, page + 1);
			else
				tf_run_fail(t->r, "page %d: HTTP %ld: the upstream refused the next token "
				                  "again", page + 1, status);
			rc = TF_EUPSTREAM;
			goto out;
		}
		if (rc)
			goto out;

		/* The envelope: every member optional (an empty result may be {}). */
		if (json_object_object_get_ex(doc, "objects", &objs) &&
		    !json_object_is_type(objs, json_type_null)) {
			if (!json_object_is_type(objs, json_type_array)) {
				tf_run_fail(t->r, "page %d: \"objects\" is not an array", page + 1);
				rc = TF_EPARSE;
				goto out;
			}
			n = json_object_array_length(objs);
		}
		if (n > TF_MAX_PAGE_OBJECTS) {
			tf_run_fail(t->r, "page %d has %zu objects, limit %d", page + 1, n,
			            TF_MAX_PAGE_OBJECTS);
			rc = TF_ELIMIT;
			goto out;
		}
		if (tf_json_get_bool(doc, "more", &more) == TF_EINVAL) {
			tf_run_fail(t->r, "page %d: \"more\" is not a boolean", page + 1);
			rc = TF_EPARSE;
			goto out;
		}
		if (json_object_object_get_ex(doc, "next", &v) && !json_object_is_type(v, json_type_null)) {
			if (!json_object_is_type(v, json_type_string)) {
				tf_run_fail(t->r, "page %d: \"next\" is not a string", page + 1);
				rc = TF_EPARSE;
				goto out;
			}
			token = json_object_get_string(v);
			if (!*token)
				token = NULL;
			else if (strlen(token) > TF_MAX_URL) {
				tf_run_fail(t->r, "page %d: next token longer than %d bytes", page + 1,
				            TF_MAX_URL);
				rc = TF_ELIMIT;
				goto out;
			}
		}
		dal = usable_date(t->r, dal_raw, page + 1, &dal_warned);
		if (more && (token || dal))
			prefetch_next(t, token ? after : dal, token);

		/* Objects → batch → one commit with the cursor. */
		if ((rc = tf_run_stage(t->r, TF_SG_PROCESSING, "page %d: %zu objects", page + 1, n)))
			goto out;
		snap_objects = p->objects_processed;
		snap_pages = p->pages_done;
		if (n) {
			/* Store each object's own bytes when they can be located (one
			 * span per element); else serialize the parsed objects. */
			size_t ns = 0;
			rc = tf_stix_spans(body.body, body.len, &spans, &ns);
			if (rc == TF_ENOMEM)
				goto nomem;
			if (rc || ns != n) {
				free(spans);
				spans = NULL;
			}
			rc = tf_stix_ingest(t->r, objs, 0, n, body.body, spans, what, &t->st);
		}
		if (!rc) {
			p->pages_done++;
			if (dal) {
				if (!(cursor = json_object_new_object()) ||
				    json_object_object_add(cursor, "added_after", json_object_new_string(dal)))
					goto nomem;
			}
			rc = tf_run_commit(t->r, cursor);
			json_object_put(cursor);
			cursor = NULL;
			if (rc && rc != TF_ECANCELLED)
				tf_run_fail(t->r, "page %d: storing failed: %s", page + 1, tf_strerror(rc));
		}
		if (rc) {
			/* Counts stay exact: nothing of this page was kept. */
			p->objects_processed = snap_objects;
			p->pages_done = snap_pages;
			goto out;
		}
		page++;
		fallback_armed = 1;
		if (dal && set_str(&t->committed, dal))
			goto nomem;

		if (!more)
			break;
		/* Loop guards. A next token may come back unchanged (the OASIS
		 * reference server keeps one per paging session: docs/FEEDS.md), so
		 * a loop is judged by what comes back: a page with objects that
		 * repeats an earlier page of this run (same ids and versions) is a
		 * loop; an empty page, or exactly the previous one, is no progress. */
		no_progress = n == 0 || (prev_had_objects && t->st.digest == prev_digest);
		prev_had_objects = n > 0;
		prev_digest = t->st.digest;
		if (n) {
			char key[24];
			int s;
			snprintf(key, sizeof key, "%016llx", (unsigned long long)t->st.digest);
			if ((s = tf_seen_add(&t->seen, key)) < 0)
				goto nomem;
			if (s) {
				tf_run_fail(t->r, "page %d: the upstream's paging loops (page %d repeats the "
				                  "objects of an earlier page)", page, page);
				rc = TF_EUPSTREAM;
				goto out;
			}
		}
		if (token) {
			if (set_str(&next, token))
				goto nomem;
		} else {
			/* more without next: the same query from the last date added. */
			if (!dal) {
				tf_run_fail(t->r, "page %d: more is true but there is neither a next token "
				                  "nor X-TAXII-Date-Added-Last to continue from", page);
				rc = TF_EUPSTREAM;
				goto out;
			}
			if (after && !strcmp(after, dal))
				no_progress = 1;
			free(next);
			next = NULL;
			if (set_str(&after, dal))
				goto nomem;
		}
		if (!no_progress)
			empty = 0;
		else if (++empty >= TF_MAX_EMPTY_PAGES) {
			tf_run_fail(t->r, "%d pages in a row brought nothing new although more is true: "
			                  "giving up", empty);
			rc = TF_EUPSTREAM;
			goto out;
		}
	}
	rc = TF_OK;
out:
	json_object_put(doc);
	json_object_put(cursor);
	tf_fetch_resp_free(&body);
	free(spans);
	free(dal_copy);
	free(url);
	free(after);
	free(next);
	return rc;
nomem:
	rc = TF_ENOMEM;
	tf_run_fail(t->r, "out of memory");
	goto out;
}

int tf_taxii_run(tf_run *r)
{
	json_object *feed = tf_run_feed(r), *opts;
	tf_progress *p = tf_run_progress(r);
	taxii t = {0};
	const char *url, *after;
	int64_t limit = TAXII_DEFAULT_LIMIT, us;
	int rc;

	t.r = r;
	p->percent = -1;      /* TAXII gives no total */
	p->pages_total = -1;
	url = tf_json_str(feed, "url");
	t.collection = tf_json_str(feed, "collection");
	t.username = tf_json_str(feed, "username");
	t.password = tf_json_str(feed, "secret");
	if (t.username && !*t.username)
		t.username = NULL;
	if (!url || !*url) {
		tf_run_fail(r, "feed has no url");
		return TF_EINVAL;
	}
	if (!t.collection || !valid_collection_id(t.collection)) {
		tf_run_fail(r, "feed has no valid collection id");
		return TF_EINVAL;
	}
	/* Page size: options.page_size (or page_size), within 1..TF_MAX_PAGE_OBJECTS.
	 * 1000 is large enough for throughput and what servers commonly allow;
	 * a server caps it silently when its maximum is lower. */
	if ((json_object_object_get_ex(feed, "options", &opts) &&
	     tf_json_get_int(opts, "page_size", &limit) == TF_OK) ||
	    tf_json_get_int(feed, "page_size", &limit) == TF_OK) {
		if (limit < 1)
			limit = TAXII_DEFAULT_LIMIT;
		if (limit > TF_MAX_PAGE_OBJECTS)
			limit = TF_MAX_PAGE_OBJECTS;
	}
	t.limit = (long)limit;
	/* Incremental: continue after the last committed page of earlier runs. */
	after = tf_json_str(tf_run_cursor(r), "added_after");
	if (after && (strlen(after) > 64 || tf_time_parse(after, &us))) {
		tf_run_warn(r, "ignoring the stored cursor (not a timestamp): starting from the "
		               "beginning");
		after = NULL;
	}
	if (after && !(t.committed = strdup(after))) {
		tf_run_fail(r, "out of memory");
		return TF_ENOMEM;
	}

	if ((rc = discover(&t, url)))
		goto out;
	if (!(t.objects = malloc(strlen(t.root) + strlen(t.collection) + 32))) {
		tf_run_fail(r, "out of memory");
		rc = TF_ENOMEM;
		goto out;
	}
	sprintf(t.objects, "%scollections/%s/objects/", t.root, t.collection);
	rc = fetch_objects(&t);
out:
	tf_stix_summary(r, &t.st);
	tf_stix_stats_free(&t.st);
	free(t.root);
	free(t.objects);
	free(t.committed);
	tf_seen_free(&t.seen);
	return rc;
}
