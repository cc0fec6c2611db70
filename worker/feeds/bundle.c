/* The stix_bundle feed driver (docs/SPEC.md §4): one STIX 2.x bundle
 * {"type":"bundle","objects":[…]} at a URL, fetched once (at most
 * TF_MAX_PAGE_BYTES), stored in batches of BUNDLE_BATCH objects with a
 * commit each. A bundle has no cursor: every run reads it whole, and objects
 * whose version is already stored are counted as skipped by the store.
 *
 * Fails the run: the download (after retries), a body that is HTML or not
 * JSON, a document that is not a bundle, `objects` not an array, more than
 * TF_STIX_MAX_BUNDLE_OBJECTS objects. Skipped with a warning: single
 * malformed objects (see stix.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "run.h"
#include "bundle.h"
#include "stix.h"
#include "upstream.h"

#define BUNDLE_BATCH 1000
#define BUNDLE_ACCEPT "application/stix+json;version=2.1, application/json;q=0.9, */*;q=0.5"

/* Raw files are often served as text/plain or octet-stream (e.g. from a Git
 * host), so only a media type that is surely not a bundle is refused. */
static int surely_not_json(const tf_fetch_resp *resp)
{
	const char *ct = resp->content_type;

	return ct && (!strncasecmp(ct, "text/html", 9) || !strncasecmp(ct, "application/xhtml", 17) ||
	              !strncasecmp(ct, "text/xml", 8) || !strncasecmp(ct, "application/xml", 15));
}

int tf_bundle_run(tf_run *r)
{
	json_object *feed = tf_run_feed(r), *doc = NULL, *objs = NULL;
	tf_progress *p = tf_run_progress(r);
	tf_fetch_req req = {0};
	tf_fetch_resp resp = {0};
	tf_stix_stats st = {0};
	tf_stix_span *spans = NULL;
	const char *type;
	char buf[400];
	size_t n = 0;
	int rc;

	p->percent = -1;
	p->pages_total = -1;
	req.url = tf_json_str(feed, "url");
	req.accept = BUNDLE_ACCEPT;
	tf_fetch_basic(&req, tf_json_str(feed, "username"), tf_json_str(feed, "secret"));
	if (!req.url || !*req.url) {
		tf_run_fail(r, "feed has no url");
		return TF_EINVAL;
	}
	if ((rc = tf_run_stage(r, TF_SG_FETCHING, "downloading the bundle")))
		return rc;
	if ((rc = tf_upstream_get(r, &req, &resp, TF_SG_FETCHING, "bundle")))
		return rc;
	if ((rc = tf_upstream_failure(&resp, buf, sizeof buf))) {
		if (rc == TF_EPERM)
			tf_run_fail(r, "authentication failed (HTTP %ld)%s", resp.status,
			            buf + strcspn(buf, ":"));
		else if (rc == TF_ENOTFOUND)
			tf_run_fail(r, "bundle not found (HTTP 404)");
		else
			tf_run_fail(r, "bundle: %s", buf);
		goto out;
	}
	if (surely_not_json(&resp)) {
		tf_upstream_is_json(&resp, buf, sizeof buf);
		tf_run_fail(r, "bundle: expected STIX JSON, got %s", buf);
		rc = TF_EPARSE;
		goto out;
	}
	if ((rc = tf_run_stage(r, TF_SG_PROCESSING, "parsing %zu bytes", resp.len)))
		goto out;
	if (tf_json_parse(resp.body, resp.len, TF_MAX_FEED_JSON_DEPTH, &doc, buf, sizeof buf)) {
		tf_run_fail(r, "bundle: %s", buf);
		rc = TF_EPARSE;
		goto out;
	}
	if (!json_object_is_type(doc, json_type_object) || tf_json_get_str(doc, "type", &type) ||
	    strcmp(type, "bundle")) {
		tf_run_fail(r, "bundle: not a STIX bundle (expected {\"type\":\"bundle\",…})");
		rc = TF_EPARSE;
		goto out;
	}
	if (json_object_object_get_ex(doc, "objects", &objs) &&
	    !json_object_is_type(objs, json_type_null)) {
		if (!json_object_is_type(objs, json_type_array)) {
			tf_run_fail(r, "bundle: \"objects\" is not an array");
			rc = TF_EPARSE;
			goto out;
		}
		n = json_object_array_length(objs);
	}
	if (n > TF_STIX_MAX_BUNDLE_OBJECTS) {
		tf_run_fail(r, "bundle has %zu objects, limit %d", n, TF_STIX_MAX_BUNDLE_OBJECTS);
		rc = TF_ELIMIT;
		goto out;
	}
	if (n) {
		/* Each object's own bytes when they can be located, else the
		 * parsed objects serialized again. */
		size_t ns = 0;
		rc = tf_stix_spans(resp.body, resp.len, &spans, &ns);
		if (rc == TF_ENOMEM) {
			tf_run_fail(r, "bundle: out of memory");
			goto out;
		}
		if (rc || ns != n) {
			free(spans);
			spans = NULL;
		}
	}
	/* The total is known now: percent and pages (batches) are real. */
	p->pages_total = (int64_t)((n + BUNDLE_BATCH - 1) / BUNDLE_BATCH);
	p->percent = 0;
	for (size_t from = 0; from < n || (n == 0 && from == 0); from += BUNDLE_BATCH) {
		size_t count = n - from < BUNDLE_BATCH ? n - from : BUNDLE_BATCH;
		int64_t snap_objects = p->objects_processed, snap_pages = p->pages_done;
		int snap_percent = p->percent;
		char what[64];

		snprintf(what, sizeof what, "bundle batch %zu", from / BUNDLE_BATCH + 1);
		rc = n ? tf_run_stage(r, TF_SG_PROCESSING, "objects %zu-%zu of %zu", from + 1,
		                      from + count, n)
		       : tf_run_stage(r, TF_SG_PROCESSING, "the bundle has no objects");
		if (rc)
			goto out;
		rc = count ? tf_stix_ingest(r, objs, from, count, resp.body, spans, what, &st) : TF_OK;
		if (!rc) {
			if (count)
				p->pages_done++;
			p->percent = n ? (int)((from + count) * 100 / n) : 100;
			rc = tf_run_commit(r, NULL);
			if (rc && rc != TF_ECANCELLED)
				tf_run_fail(r, "%s: storing failed: %s", what, tf_strerror(rc));
		}
		if (rc) {
			/* Counts stay exact: nothing of this batch was kept. */
			p->objects_processed = snap_objects;
			p->pages_done = snap_pages;
			p->percent = snap_percent;
			goto out;
		}
		if (n == 0)
			break;
	}
	rc = TF_OK;
out:
	tf_stix_summary(r, &st);
	tf_stix_stats_free(&st);
	free(spans);
	tf_fetch_resp_free(&resp);
	json_object_put(doc);
	return rc;
}
