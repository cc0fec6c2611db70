/* The taxii21 feed driver (docs/SPEC.md §4, docs/FEEDS.md "TAXII 2.1"): discovery → API
 * root → collection → objects/ paged with limit, next/more and added_after.
 *
 * One page = one batch = one commit, and the feed's cursor (the page's
 * X-TAXII-Date-Added-Last) is written with it: the cursor never runs ahead
 * of what is stored (docs/SPEC.md §3 stop_now), and the next run starts from it.
 *
 * What fails the run: any request that still fails after the retries of
 * tf_upstream_get, a non-JSON or unparsable page, a wrong envelope (objects
 * not an array, more not a boolean, next not a string), a page over
 * TF_MAX_PAGE_OBJECTS, paging that loops or makes no progress, more than
 * TF_MAX_PAGES pages or TF_MAX_RUN_S seconds. What is skipped with a
 * warning: single malformed objects (see stix.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "run.h"
#include "taxii.h"
#include "taxii_find.h"
#include "stix.h"
#include "upstream.h"
#include "util.h"

#define TAXII_DEFAULT_LIMIT 1000   /* objects per page we ask for; servers may cap it */

typedef struct taxii {
	tf_run *r;
	tf_taxii_client client;     /* its get: run_get, in stage `stage` */
	tf_stage stage;
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

/* ---- requests ------------------------------------------------------------------ */

/* The run's way to send the requests of the search and of paging: the
 * upstream retry policy, woken by a cancel (tf_upstream_get). Its failure
 * text goes to err and the run's error is left clear: the caller decides
 * what fails the run (a failing API root does not, when another root has
 * the collection). */
static int run_get(void *ctx, const tf_fetch_req *req, tf_fetch_resp *resp, const char *what,
                   char *err, size_t errlen)
{
	taxii *t = ctx;
	int rc = tf_upstream_get(t->r, req, resp, t->stage, what);

	if (rc) {
		tf_set_err(err, errlen, "%s", tf_run_error(t->r));
		tf_run_fail(t->r, "%s", "");
	}
	return rc;
}

/* tf_taxii_get_json for paging: a failure (but those allow lets the caller
 * handle, and a cancel) fails the run with its text. */
static int get_json(taxii *t, const char *url, const char *what, size_t max_bytes, int allow,
                    json_object **doc, long *status, tf_fetch_resp *keep)
{
	char err[TF_MAX_ERROR_LEN + 1] = "";
	int rc = tf_taxii_get_json(&t->client, url, what, max_bytes, allow, doc, status, keep, err,
	                           sizeof err);

	if (rc && rc != TF_ENOTFOUND && rc != TF_ECANCELLED)
		tf_run_fail(t->r, "%s", err);
	return rc;
}

/* ---- discovery (TAXII 2.1 §4): taxii_find.h, shared with test_connection --- */

static int discover(taxii *t)
{
	tf_taxii_found found;
	char err[TF_MAX_ERROR_LEN + 1] = "";
	int rc;

	if ((rc = tf_run_stage(t->r, TF_SG_DISCOVERING, "looking for the collection's API root")))
		return rc;
	t->stage = TF_SG_DISCOVERING;
	rc = tf_taxii_find(&t->client, tf_run_feed(t->r), &found, err, sizeof err);
	if (!rc) {
		t->root = found.root;
		return TF_OK;
	}
	tf_taxii_found_free(&found);
	if (rc != TF_ECANCELLED)
		tf_run_fail(t->r, "%s", err);
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
	tf_taxii_req(&t->client, url, 0, &req);
	tf_fetch_prefetch(tf_run_fetch(t->r), &req);
	free(url);
}

int tf_taxii_page_read(json_object *doc, tf_taxii_page *pg, char *why, size_t whylen)
{
	json_object *v;

	*pg = (tf_taxii_page){0};
	if (json_object_object_get_ex(doc, "objects", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_array)) {
			tf_set_err(why, whylen, ": \"objects\" is not an array");
			return TF_EPARSE;
		}
		pg->objects = v;
		pg->n = json_object_array_length(v);
	}
	if (pg->n > TF_MAX_PAGE_OBJECTS) {
		tf_set_err(why, whylen, " has %zu objects, limit %d", pg->n, TF_MAX_PAGE_OBJECTS);
		return TF_ELIMIT;
	}
	if (tf_json_get_bool(doc, "more", &pg->more) == TF_EINVAL) {
		tf_set_err(why, whylen, ": \"more\" is not a boolean");
		return TF_EPARSE;
	}
	if (json_object_object_get_ex(doc, "next", &v) && !json_object_is_type(v, json_type_null)) {
		if (!json_object_is_type(v, json_type_string)) {
			tf_set_err(why, whylen, ": \"next\" is not a string");
			return TF_EPARSE;
		}
		pg->next = json_object_get_string(v);
		if (!*pg->next) {
			pg->next = NULL;
		} else if (strlen(pg->next) > TF_MAX_URL) {
			tf_set_err(why, whylen, ": next token longer than %d bytes", TF_MAX_URL);
			return TF_ELIMIT;
		}
	}
	return TF_OK;
}

/* Page page's n objects → one batch → one commit with the cursor (the
 * page's date added dal, when usable). TF_OK; else the run failed (or was
 * cancelled) and the progress counts are those before the page. */
static int store_page(taxii *t, json_object *objs, size_t n, const tf_fetch_resp *body,
                      const char *dal, const char *what, int page)
{
	tf_progress *p = tf_run_progress(t->r);
	tf_stix_span *spans = NULL;
	json_object *cursor = NULL;
	int64_t snap_objects, snap_pages;
	int rc;

	if ((rc = tf_run_stage(t->r, TF_SG_PROCESSING, "page %d: %zu objects", page + 1, n)))
		return rc;
	snap_objects = p->objects_processed;
	snap_pages = p->pages_done;
	if (n) {
		/* Store each object's own bytes when they can be located (one
		 * span per element); else serialize the parsed objects. */
		size_t ns = 0;
		rc = tf_stix_spans(body->body, body->len, &spans, &ns);
		if (rc == TF_ENOMEM)
			goto nomem;
		if (rc || ns != n) {
			free(spans);
			spans = NULL;
		}
		rc = tf_stix_ingest(t->r, objs, 0, n, body->body, spans, what, &t->st);
	}
	if (!rc) {
		p->pages_done++;
		if (dal && (!(cursor = json_object_new_object()) ||
		            json_object_object_add(cursor, "added_after", json_object_new_string(dal))))
			goto nomem;
		rc = tf_run_commit(t->r, cursor);
		json_object_put(cursor);
		if (rc && rc != TF_ECANCELLED)
			tf_run_fail(t->r, "page %d: storing failed: %s", page + 1, tf_strerror(rc));
	}
	if (rc) {
		/* Counts stay exact: nothing of this page was kept. */
		p->objects_processed = snap_objects;
		p->pages_done = snap_pages;
	}
	free(spans);
	return rc;
nomem:
	json_object_put(cursor);
	free(spans);
	tf_run_fail(t->r, "out of memory");
	return TF_ENOMEM;
}

static int fetch_objects(taxii *t)
{
	char *after = NULL, *next = NULL, *url = NULL;
	json_object *doc = NULL;
	tf_fetch_resp body = {0};
	int rc = TF_OK, page = 0, empty = 0, fallback_armed = 1, dal_warned = 0;
	uint64_t prev_digest = 0;
	int prev_had_objects = 0;

	if (set_str(&after, t->committed))
		goto nomem;
	for (;;) {
		tf_taxii_page pg;
		json_object *objs;
		const char *token, *dal_raw = NULL, *dal;
		size_t n;
		int more, no_progress;
		long status;
		char what[48], why[96];

		json_object_put(doc);
		doc = NULL;
		if ((rc = tf_run_page_budget(t->r, page)))
			goto out;
		snprintf(what, sizeof what, "page %d", page + 1);
		free(url);
		if (!(url = page_url(t, after, next)))
			goto nomem;
		if ((rc = tf_run_stage(t->r, TF_SG_FETCHING, "page %d: fetching", page + 1)))
			goto out;
		tf_fetch_resp_free(&body);
		t->stage = TF_SG_FETCHING;
		rc = get_json(t, url, what, 0,
		              next ? TF_TAXII_ALLOW_400 | TF_TAXII_ALLOW_404 : TF_TAXII_ALLOW_404, &doc,
		              &status, &body);
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
		dal_raw = body.date_added_last;

		if ((rc = tf_taxii_page_read(doc, &pg, why, sizeof why))) {
			tf_run_fail(t->r, "page %d%s", page + 1, why);
			goto out;
		}
		objs = pg.objects;
		n = pg.n;
		more = pg.more;
		token = pg.next;
		dal = usable_date(t->r, dal_raw, page + 1, &dal_warned);
		if (more && (token || dal))
			prefetch_next(t, token ? after : dal, token);

		if ((rc = store_page(t, objs, n, &body, dal, what, page)))
			goto out;
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
	tf_fetch_resp_free(&body);
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
	const char *after;
	int64_t limit = TAXII_DEFAULT_LIMIT, us;
	int rc;

	t.r = r;
	p->percent = -1;      /* TAXII gives no total */
	p->pages_total = -1;
	t.collection = tf_json_str(feed, "collection"); /* checked by discover() */
	tf_taxii_client_init(&t.client, feed, run_get, &t);
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

	if ((rc = discover(&t)))
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
