#include "probe.h"
#include "err.h"
#include "fetch.h"
#include "json.h"
#include "tf_limits.h"
#include "run.h"
#include "taxii_find.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- taxii21: the run's own search for the collection ------------------------- */

typedef struct probe_ctx {
	tf_fetch *f;
	int64_t deadline_us; /* tf_mono_us() when every request must be over */
} probe_ctx;

/* The probe's requests: each asked once (a run's retries could take
 * minutes), all of them within TF_PROBE_TIMEOUT_S; a request the time does
 * not allow is reported, not sent. */
static int probe_get(void *ctx, const tf_fetch_req *req, tf_fetch_resp *resp, const char *what,
                     char *err, size_t errlen)
{
	probe_ctx *p = ctx;
	tf_fetch_req timed = *req;
	int64_t left = p->deadline_us - tf_mono_us();
	char why[256] = "";
	int rc;

	memset(resp, 0, sizeof *resp);
	if (left <= 0) {
		tf_set_err(err, errlen, "%s: not asked, the test's %d s were up", what,
		           TF_PROBE_TIMEOUT_S);
		return TF_ENETWORK;
	}
	timed.timeout_s = (long)((left + 999999) / 1000000);
	if ((rc = tf_fetch_get(p->f, &timed, resp, NULL, why, sizeof why)))
		tf_set_err(err, errlen, "%s: %s", what, *why ? why : tf_strerror(rc));
	return rc;
}

static void say_found(const tf_taxii_found *found, const char *collection, char *detail,
                      size_t len)
{
	char where[96];

	if (found->where == TF_TAXII_AT_URL)
		snprintf(where, sizeof where, "the feed's url");
	else if (found->where == TF_TAXII_AT_DEFAULT)
		snprintf(where, sizeof where, "the discovery document's default");
	else
		snprintf(where, sizeof where, "not the default: %zu other root%s searched first",
		         found->before, found->before == 1 ? "" : "s");
	snprintf(detail, len, "collection %s \"%s\" is readable in API root %s (%s)", collection,
	         found->title, found->root, where);
}

/* What a run would find (docs/SPEC.md §2 test_connection, "As implemented"):
 * discovery and the search through the API roots, by the run's code. */
static int probe_taxii(json_object *feed, tf_fetch *f, char *detail, size_t len, char **api_root)
{
	probe_ctx ctx = {.f = f, .deadline_us = tf_mono_us() + TF_PROBE_TIMEOUT_S * 1000000LL};
	tf_taxii_client client;
	tf_taxii_found found;
	int rc;

	tf_taxii_client_init(&client, feed, probe_get, &ctx);
	rc = tf_taxii_find(&client, feed, &found, detail, len);
	if (!rc)
		say_found(&found, tf_json_str(feed, "collection"), detail, len);
	/* listed but not readable: the root is still where it is */
	*api_root = found.root;
	return rc == TF_OK;
}

/* ---- the other types: one request, as the run sends it ------------------------ */

/* What to ask each feed type: the cheapest request that proves the URL and
 * the credentials work, with the URL and credentials the run would use.
 * TF_OK, or an error with detail saying what the run would fail with. */
static int build(json_object *feed, tf_fetch_req *req, char **url, char *hdr, size_t hlen,
                 char *detail, size_t len)
{
	const char *type = tf_json_str(feed, "type");
	const char *path = NULL, *header = NULL, *example = NULL;
	char *base;

	req->max_bytes = 1024 * 1024;
	if (!strcmp(type, "otx")) {
		path = "/api/v1/pulses/subscribed?limit=1";
		header = "X-OTX-API-KEY";
		example = "https://otx.alienvault.com";
	} else if (!strcmp(type, "virustotal")) {
		/* A lookup that exists everywhere; costs one request of the budget. */
		path = "/api/v3/domains/example.com";
		header = "x-apikey";
		example = "https://www.virustotal.com";
	} else {
		/* stix_bundle: the bundle itself, with Basic as its run sends it */
		req->max_bytes = TF_MAX_PAGE_BYTES;
		tf_fetch_basic(req, tf_json_str(feed, "username"), tf_json_str(feed, "secret"));
		*url = strdup(tf_json_str(feed, "url"));
		return *url ? TF_OK : (snprintf(detail, len, "out of memory"), TF_ENOMEM);
	}
	if (!(base = tf_feed_base_url(feed, example, detail, len)))
		return TF_EINVAL;
	if (tf_feed_key_header(feed, header, hdr, hlen, detail, len)) {
		free(base);
		return TF_EINVAL;
	}
	req->headers[0] = hdr;
	*url = malloc(strlen(base) + strlen(path) + 1);
	if (*url)
		sprintf(*url, "%s%s", base, path);
	free(base);
	return *url ? TF_OK : (snprintf(detail, len, "out of memory"), TF_ENOMEM);
}

static int probe_once(json_object *feed, tf_fetch *f, char *detail, size_t len)
{
	tf_fetch_req req = {0};
	tf_fetch_resp resp = {0};
	char hdr[TF_MAX_FIELD + 32], err[256], *url = NULL;
	int rc, ok;

	if (build(feed, &req, &url, hdr, sizeof hdr, detail, len))
		return 0;
	req.url = url;
	req.timeout_s = TF_PROBE_TIMEOUT_S;
	rc = tf_fetch_get(f, &req, &resp, NULL, err, sizeof err);
	free(url);
	if (rc) {
		snprintf(detail, len, "%s", rc == TF_ENOMEM ? "out of memory" : err);
		ok = 0;
	} else if (resp.status == 401 || resp.status == 403) {
		snprintf(detail, len, "credentials rejected (HTTP %ld)", resp.status);
		ok = 0;
	} else if (resp.status < 200 || resp.status > 299) {
		snprintf(detail, len, "upstream answered HTTP %ld", resp.status);
		ok = 0;
	} else {
		json_object *doc = NULL;
		ok = tf_json_parse(resp.body, resp.len, TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0) == TF_OK;
		if (ok)
			snprintf(detail, len, "upstream reached (HTTP %ld)", resp.status);
		else
			snprintf(detail, len, "HTTP %ld but the answer is not JSON", resp.status);
		json_object_put(doc);
	}
	tf_fetch_resp_free(&resp);
	return ok;
}

int tf_probe_feed(json_object *feed, const tf_feed_net *net, char *detail, size_t len,
                  char **api_root)
{
	const char *type = tf_json_str(feed, "type");
	tf_fetch *f;
	int ok;

	*api_root = NULL;
	if (!type || !tf_json_str(feed, "url")) {
		snprintf(detail, len, "feed has no type or url");
		return 0;
	}
	/* No wake-up fd and no cancel: plain bounded GETs (fetch.h). */
	if (tf_fetch_new(&f, -1, NULL, NULL)) {
		snprintf(detail, len, "out of memory");
		return 0;
	}
	if (tf_fetch_set_net(f, net)) {
		tf_fetch_free(f);
		snprintf(detail, len, "out of memory");
		return 0;
	}
	if (!strcmp(type, "taxii21"))
		ok = probe_taxii(feed, f, detail, len, api_root);
	else
		ok = probe_once(feed, f, detail, len);
	tf_fetch_free(f);
	return ok;
}
