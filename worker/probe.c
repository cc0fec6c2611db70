#include "probe.h"
#include "err.h"
#include "fetch.h"
#include "json.h"
#include "limits.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int never_cancel(void *ctx)
{
	(void)ctx;
	return 0;
}

/* What to ask each feed type: the cheapest request that proves the URL and
 * the credentials work. */
static void build(json_object *feed, tf_fetch_req *req, char *url, size_t ulen, char *hdr,
                  size_t hlen)
{
	const char *type = tf_json_str(feed, "type"), *base = tf_json_str(feed, "url");
	const char *secret = tf_json_str(feed, "secret");

	snprintf(url, ulen, "%s", base ? base : "");
	req->url = url;
	req->max_bytes = 1024 * 1024;
	req->timeout_s = TF_PROBE_TIMEOUT_S;
	if (!strcmp(type, "taxii21")) {
		req->accept = "application/taxii+json;version=2.1";
		req->username = tf_json_str(feed, "username");
		req->password = secret;
	} else if (!strcmp(type, "otx")) {
		snprintf(url, ulen, "%s/api/v1/pulses/subscribed?limit=1", base);
		snprintf(hdr, hlen, "X-OTX-API-KEY: %s", secret ? secret : "");
		req->headers[0] = hdr;
	} else if (!strcmp(type, "virustotal")) {
		/* A lookup that exists everywhere; costs one request of the budget. */
		snprintf(url, ulen, "%s/api/v3/domains/example.com", base);
		snprintf(hdr, hlen, "x-apikey: %s", secret ? secret : "");
		req->headers[0] = hdr;
	} else {
		req->max_bytes = TF_MAX_PAGE_BYTES;
	}
}

int tf_probe_feed(json_object *feed, char *detail, size_t len)
{
	tf_fetch_req req = {0};
	tf_fetch_resp resp = {0};
	tf_fetch *f;
	char url[TF_MAX_URL + 64], hdr[TF_MAX_FIELD + 32], err[256];
	int never[2], rc, ok;

	if (!tf_json_str(feed, "type") || !tf_json_str(feed, "url")) {
		snprintf(detail, len, "feed has no type or url");
		return 0;
	}
	if (pipe(never)) {
		snprintf(detail, len, "cannot set up the request");
		return 0;
	}
	build(feed, &req, url, sizeof url, hdr, sizeof hdr);
	rc = tf_fetch_new(&f, never[0], never_cancel, NULL);
	if (!rc)
		rc = tf_fetch_get(f, &req, &resp, NULL, err, sizeof err);
	close(never[0]);
	close(never[1]);
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
	tf_fetch_free(f);
	return ok;
}
