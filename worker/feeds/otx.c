/* The otx feed driver (docs/SPEC.md §4, docs/FEEDS.md "AlienVault OTX").
 *
 * Paging: GET {url}/api/v1/pulses/subscribed?limit=N[&modified_since=C] with
 * X-OTX-API-KEY, then each page's `next`: an absolute http(s) URL that must
 * stay on the feed's host and port (the API key goes with it) and must not
 * have been requested before in this run ("next loops back"). A pulse whose
 * `more_indicators` is true has its indicators read from
 * /api/v1/pulses/{id}/indicators instead (paged the same way) before its page
 * is committed.
 *
 * One page = one batch = one tf_run_commit(), with the cursor
 * {"modified_since": the newest pulse `modified` committed so far} — docs/SPEC.md §3:
 * the cursor never runs ahead of what is stored. That holds as long as the
 * upstream lists pulses oldest first (it does for modified_since queries); if
 * a pulse ever comes older than the one before it, the order is not one we
 * can resume from, so the cursor is then left alone until the last page of
 * the run is committed (a stopped run is repeated from the old cursor: the
 * store skips what it already has). modified_since is sent as given: the
 * upstream keeps pulses modified strictly later.
 *
 * Records: one per indicator, key otx:<pulse id>:<indicator id>, version =
 * the pulse's `modified` (OTX times carry no zone: UTC). See otx.h.
 *
 * What FAILS the run (nothing of the page in flight is kept):
 *  - transport errors, a body over TF_MAX_PAGE_BYTES, timeouts, redirects to
 *    a non-http(s) URL (fetch.c), 5xx/429 still failing after the retries of
 *    tf_upstream_get (which waits in stage rate_limited, honouring
 *    Retry-After);
 *  - HTTP 401/403 ("API key rejected"), any other non-2xx;
 *  - a body that is not JSON (an HTML page), invalid JSON, invalid UTF-8,
 *    nesting deeper than TF_MAX_FEED_JSON_DEPTH;
 *  - a wrong envelope: not an object, `results` absent or not an array, more
 *    than TF_MAX_PAGE_OBJECTS results, `next` neither a string nor null, a
 *    next that leaves the host, is not http(s), or loops back;
 *  - paging without progress: TF_MAX_EMPTY_PAGES empty (or repeated) pages
 *    in a row that still have a next; more than TF_MAX_PAGES pages or
 *    TF_MAX_RUN_S seconds; a pulse with more than
 *    TF_OTX_MAX_INDICATOR_PAGES pages of indicators.
 * What is SKIPPED, counted, and summed up in one warning per page (the run
 * goes on): a malformed pulse or indicator (wrong JSON type of any field we
 * read, missing id, unreadable timestamps — see otx.h), an indicator over
 * TF_MAX_OBJECT_BYTES; and — not errors, counted in indicators_skipped —
 * inactive (is_active 0) and expired indicators. `count` only feeds the
 * progress bar: when it is not an integer, percent stays unknown. */
#include "otx.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "run.h"
#include "upstream.h"
#include "util.h"

#define OTX_DEFAULT_LIMIT 50          /* the OTX SDK's page size */
#define OTX_INDICATOR_LIMIT 1000      /* per /pulses/{id}/indicators page */
#define OTX_ACCEPT "application/json"
#define OTX_SUBSCRIBED "/api/v1/pulses/subscribed"

/* ---- small helpers ---------------------------------------------------------- */

void tf_otx_format_time(int64_t us, char *buf, size_t len)
{
	int64_t secs = us / 1000000, frac = us % 1000000;
	struct tm tm;
	time_t t;

	if (frac < 0) {
		frac += 1000000;
		secs--;
	}
	t = (time_t)secs;
	/* Years 0..9999 only: four digits, as tf_time_parse reads them back
	 * (strftime's %Y would write "23" for the year 23). */
	if (!gmtime_r(&t, &tm) || tm.tm_year < -1900 || tm.tm_year > 9999 - 1900) {
		snprintf(buf, len, "1970-01-01T00:00:00.000000");
		return;
	}
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%06lld", tm.tm_year + 1900, tm.tm_mon + 1,
	         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (long long)frac);
}

/* ---- the page envelope -------------------------------------------------------- */

void tf_otx_page_free(tf_otx_page *page)
{
	if (!page)
		return;
	json_object_put(page->doc);
	memset(page, 0, sizeof *page);
	page->count = -1;
}

int tf_otx_page_parse(const char *body, size_t len, tf_otx_page *page, char *err, size_t errlen)
{
	json_object *v;
	char why[200];

	memset(page, 0, sizeof *page);
	page->count = -1;
	if (tf_json_parse(body, len, TF_MAX_FEED_JSON_DEPTH, &page->doc, why, sizeof why)) {
		tf_set_err(err, errlen, "%s", why);
		return TF_EPARSE;
	}
	if (!json_object_is_type(page->doc, json_type_object)) {
		tf_set_err(err, errlen, "expected a JSON object with \"results\"");
		goto bad;
	}
	if (!json_object_object_get_ex(page->doc, "results", &v) ||
	    !json_object_is_type(v, json_type_array)) {
		tf_set_err(err, errlen, v ? "\"results\" is not an array" : "no \"results\" array");
		goto bad;
	}
	page->results = v;
	page->n = json_object_array_length(v);
	if (page->n > TF_MAX_PAGE_OBJECTS) {
		tf_set_err(err, errlen, "%zu results in one page, limit %d", page->n,
		        TF_MAX_PAGE_OBJECTS);
		tf_otx_page_free(page);
		return TF_ELIMIT;
	}
	if (json_object_object_get_ex(page->doc, "next", &v) && v) {
		if (!json_object_is_type(v, json_type_string)) {
			tf_set_err(err, errlen, "\"next\" is neither a URL nor null");
			goto bad;
		}
		if ((size_t)json_object_get_string_len(v) > TF_MAX_URL) {
			tf_set_err(err, errlen, "\"next\" is longer than %d bytes", TF_MAX_URL);
			goto bad;
		}
		if (json_object_get_string_len(v) > 0)
			page->next = json_object_get_string(v);
		if (page->next && strlen(page->next) != (size_t)json_object_get_string_len(v)) {
			tf_set_err(err, errlen, "\"next\" contains a NUL byte");
			goto bad;
		}
	}
	/* count is informational (the progress bar): a wrong type is not fatal */
	if (json_object_object_get_ex(page->doc, "count", &v) && json_object_is_type(v, json_type_int) &&
	    json_object_get_int64(v) >= 0)
		page->count = json_object_get_int64(v);
	return TF_OK;
bad:
	tf_otx_page_free(page);
	return TF_EPARSE;
}

/* ---- pulses -------------------------------------------------------------------- */

static int valid_pulse_id(const char *s, size_t n)
{
	if (n < 1 || n > TF_OTX_MAX_ID)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
			return 0;
	return 1;
}

/* A member that is absent or null is fine; one of another type is not. */
static int wrong_type(json_object *obj, const char *key, json_type want, json_object **out)
{
	json_object *v = NULL;

	*out = NULL;
	if (!json_object_object_get_ex(obj, key, &v) || !v)
		return 0;
	if (!json_object_is_type(v, want))
		return 1;
	*out = v;
	return 0;
}

static int add_member(json_object *o, const char *key, json_object *v)
{
	/* shared, not copied: the meta lives no longer than the page */
	if (json_object_object_add(o, key, v ? json_object_get(v) : NULL)) {
		json_object_put(v);
		return TF_ENOMEM;
	}
	return TF_OK;
}

void tf_otx_pulse_free(tf_otx_pulse *p)
{
	if (!p)
		return;
	json_object_put(p->meta);
	memset(p, 0, sizeof *p);
}

int tf_otx_pulse_read(json_object *obj, tf_otx_pulse *p, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		json_type type;
	} typed[] = {{"name", json_type_string},   {"tlp", json_type_string},
	             {"tags", json_type_array},    {"indicators", json_type_array},
	             {"more_indicators", json_type_boolean}};
	json_object *v, *name = NULL, *tlp = NULL, *tags = NULL, *more = NULL;
	const char *which = "modified";
	int rc = TF_ENOTFOUND;

	memset(p, 0, sizeof *p);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		tf_set_err(err, errlen, "not a JSON object");
		return TF_EINVAL;
	}
	if (!json_object_object_get_ex(obj, "id", &v) || !json_object_is_type(v, json_type_string)) {
		tf_set_err(err, errlen, v ? "id is not a string" : "no id");
		return TF_EINVAL;
	}
	if (!valid_pulse_id(json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
		tf_set_err(err, errlen, "id is not a pulse id ([A-Za-z0-9._-], 1 to %d bytes)",
		        TF_OTX_MAX_ID);
		return TF_EINVAL;
	}
	memcpy(p->id, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
	/* The version: modified, else created; present means readable. */
	for (int k = 0; k < 2; k++, which = "created") {
		const char *s;
		char shown[48];

		rc = tf_json_get_str(obj, which, &s);
		if (rc == TF_ENOTFOUND)
			continue;
		if (rc == TF_EINVAL) {
			tf_set_err(err, errlen, "%s is not a string", which);
			return TF_EINVAL;
		}
		if (strlen(s) <= 64 && !tf_time_parse(s, &p->modified_us))
			break;
		tf_printable(shown, sizeof shown, s, 40, '?');
		tf_set_err(err, errlen, "%s is not a timestamp: \"%s\"", which, shown);
		return TF_EINVAL;
	}
	if (rc == TF_ENOTFOUND) {
		tf_set_err(err, errlen, "neither modified nor created");
		return TF_EINVAL;
	}
	for (size_t i = 0; i < sizeof typed / sizeof typed[0]; i++)
		if (wrong_type(obj, typed[i].key, typed[i].type, &v)) {
			tf_set_err(err, errlen, "%s is not %s", typed[i].key,
			        typed[i].type == json_type_string  ? "a string"
			        : typed[i].type == json_type_array ? "an array"
			                                           : "a boolean");
			return TF_EINVAL;
		}
	wrong_type(obj, "name", json_type_string, &name);
	wrong_type(obj, "tlp", json_type_string, &tlp);
	wrong_type(obj, "tags", json_type_array, &tags);
	wrong_type(obj, "indicators", json_type_array, &p->indicators);
	wrong_type(obj, "more_indicators", json_type_boolean, &more);
	for (size_t i = 0; tags && i < json_object_array_length(tags); i++)
		if (!json_object_is_type(json_object_array_get_idx(tags, i), json_type_string)) {
			tf_set_err(err, errlen, "tags[%zu] is not a string", i);
			return TF_EINVAL;
		}
	p->more_indicators = more && json_object_get_boolean(more);
	tf_otx_format_time(p->modified_us, p->modified, sizeof p->modified);
	if (!(p->meta = json_object_new_object()) ||
	    json_object_object_add(p->meta, "id", json_object_new_string(p->id)) ||
	    add_member(p->meta, "name", name) || add_member(p->meta, "tlp", tlp) ||
	    add_member(p->meta, "tags", tags) ||
	    json_object_object_add(p->meta, "modified", json_object_new_string(p->modified))) {
		tf_otx_pulse_free(p);
		return TF_ENOMEM;
	}
	return TF_OK;
}

/* ---- indicators ------------------------------------------------------------------ */

/* OTX type → the observable vocabulary of the STIX feeds (stix.h), so a
 * listing shows the same names whatever the source. */
static const char *observable_type(const char *otx_type)
{
	static const char *const map[][2] = {
		{"IPv4", "ipv4-addr"},
		{"IPv6", "ipv6-addr"},
		{"domain", "domain-name"},
		{"hostname", "domain-name"},
		{"URL", "url"},
		{"email", "email-addr"},
		{"FileHash-MD5", "file:hashes.MD5"},
		{"FileHash-SHA1", "file:hashes.SHA-1"},
		{"FileHash-SHA256", "file:hashes.SHA-256"},
		{"FileHash-SHA512", "file:hashes.SHA-512"},
	};

	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
		if (!strcmp(otx_type, map[i][0]))
			return map[i][1];
	return NULL;
}

static int valid_type(const char *s, size_t n)
{
	if (n < 1 || n > TF_OTX_MAX_TYPE)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(" ._-", s[i]))
			return 0;
	return 1;
}

void tf_otx_rec_free(tf_otx_rec *rec)
{
	if (!rec)
		return;
	json_object_put(rec->observables);
	json_object_put(rec->object);
	memset(rec, 0, sizeof *rec);
}

int tf_otx_indicator(const tf_otx_pulse *p, json_object *ind, int64_t now_us, tf_otx_rec *rec,
                     char *err, size_t errlen)
{
	json_object *v, *o = NULL;
	const char *obs;
	int64_t id, until = 0;
	int active = 1;

	memset(rec, 0, sizeof *rec);
	if (!ind || !json_object_is_type(ind, json_type_object)) {
		tf_set_err(err, errlen, "not a JSON object");
		return TF_EINVAL;
	}
	if (!json_object_object_get_ex(ind, "id", &v) || !json_object_is_type(v, json_type_int) ||
	    (id = json_object_get_int64(v)) < 0) {
		tf_set_err(err, errlen, v ? "id is not a non-negative integer" : "no id");
		return TF_EINVAL;
	}
	if (!json_object_object_get_ex(ind, "indicator", &v) ||
	    !json_object_is_type(v, json_type_string) || json_object_get_string_len(v) < 1 ||
	    strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
		tf_set_err(err, errlen, "indicator %lld: %s", (long long)id,
		        !v ? "no value (\"indicator\")"
		           : "\"indicator\" is not a non-empty string without NUL");
		return TF_EINVAL;
	}
	rec->value = json_object_get_string(v);
	if (!json_object_object_get_ex(ind, "type", &v) || !json_object_is_type(v, json_type_string) ||
	    !valid_type(json_object_get_string(v), (size_t)json_object_get_string_len(v))) {
		tf_set_err(err, errlen, "indicator %lld: %s", (long long)id,
		        !v ? "no type" : "type is not a name ([A-Za-z0-9 ._-], 1 to 64 bytes)");
		rec->value = NULL;
		return TF_EINVAL;
	}
	rec->type = json_object_get_string(v);
	/* is_active: 0/1 in OTX; a boolean is read the same way. */
	if (json_object_object_get_ex(ind, "is_active", &v) && v) {
		if (json_object_is_type(v, json_type_int))
			active = json_object_get_int64(v) != 0;
		else if (json_object_is_type(v, json_type_boolean))
			active = json_object_get_boolean(v);
		else {
			tf_set_err(err, errlen, "indicator %lld: is_active is not 0/1", (long long)id);
			goto malformed;
		}
	}
	if (json_object_object_get_ex(ind, "expiration", &v) && v) {
		const char *s = json_object_get_string(v);
		char shown[48];

		if (!json_object_is_type(v, json_type_string)) {
			tf_set_err(err, errlen, "indicator %lld: expiration is not a string",
			        (long long)id);
			goto malformed;
		}
		if (*s && (strlen(s) > 64 || tf_time_parse(s, &until))) {
			tf_printable(shown, sizeof shown, s, 40, '?');
			tf_set_err(err, errlen, "indicator %lld: expiration is not a timestamp: \"%s\"",
			        (long long)id, shown);
			goto malformed;
		}
		if (*s && until <= now_us)
			rec->skip = TF_OTX_EXPIRED;
	}
	if (!active)
		rec->skip = TF_OTX_INACTIVE;
	if (rec->skip) {
		tf_set_err(err, errlen, "indicator %lld: %s", (long long)id,
		        rec->skip == TF_OTX_INACTIVE ? "inactive" : "expired");
		rec->type = rec->value = NULL;
		return TF_ENOTFOUND;
	}
	snprintf(rec->key, sizeof rec->key, "otx:%s:%lld", p->id, (long long)id);
	rec->modified_us = p->modified_us;
	rec->valid_until_us = until; /* the index drops it from exports then */
	/* The object: the indicator's members as given, plus the pulse. */
	if (!(o = json_object_new_object()))
		goto nomem;
	json_object_object_foreach(ind, k, val) {
		if (!strcmp(k, "pulse"))
			continue;
		if (json_object_object_add(o, k, val ? json_object_get(val) : NULL)) {
			json_object_put(val);
			goto nomem;
		}
	}
	if (json_object_object_add(o, "pulse", json_object_get(p->meta))) {
		json_object_put(p->meta);
		goto nomem;
	}
	rec->object = o;
	o = NULL;
	if (!(rec->text = tf_json_text(rec->object, &rec->len)))
		goto nomem;
	if ((obs = observable_type(rec->type))) {
		json_object *e = json_object_new_object();
		if (!e || !(rec->observables = json_object_new_array()) ||
		    json_object_object_add(e, "type", json_object_new_string(obs)) ||
		    json_object_object_add(e, "value", json_object_new_string(rec->value)) ||
		    json_object_array_add(rec->observables, e)) {
			json_object_put(e);
			goto nomem;
		}
	}
	return TF_OK;
malformed:
	rec->type = rec->value = NULL;
	return TF_EINVAL;
nomem:
	json_object_put(o);
	tf_otx_rec_free(rec);
	return TF_ENOMEM;
}

/* ---- next URLs ------------------------------------------------------------------ */

struct url_parts {
	char *scheme, *host, *port;
};

static void parts_free(struct url_parts *u)
{
	curl_free(u->scheme);
	curl_free(u->host);
	curl_free(u->port);
}

static int split_url(const char *url, struct url_parts *out)
{
	CURLU *u = curl_url();
	int rc = -1;

	memset(out, 0, sizeof *out);
	if (!u)
		return -1;
	if (!curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) &&
	    !curl_url_get(u, CURLUPART_SCHEME, &out->scheme, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &out->host, 0) &&
	    !curl_url_get(u, CURLUPART_PORT, &out->port, CURLU_DEFAULT_PORT))
		rc = 0;
	curl_url_cleanup(u);
	if (rc)
		parts_free(out);
	return rc;
}

static int is_http(const char *scheme)
{
	return scheme && (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"));
}

int tf_otx_next_ok(const char *base, const char *next, char *err, size_t errlen)
{
	struct url_parts b, n;
	int rc = TF_EINVAL;

	/* Absolute only (docs/FEEDS.md): a scheme, then "//". */
	if (!next || strncasecmp(next, "http", 4) || !strstr(next, "://")) {
		tf_set_err(err, errlen, "next is not an absolute http(s) URL");
		return TF_EINVAL;
	}
	if (split_url(next, &n)) {
		tf_set_err(err, errlen, "next is not a valid URL");
		return TF_EINVAL;
	}
	if (split_url(base, &b)) {
		parts_free(&n);
		tf_set_err(err, errlen, "the feed's url is not a valid URL");
		return TF_EINVAL;
	}
	if (!is_http(n.scheme))
		tf_set_err(err, errlen, "next is not an http(s) URL");
	else if (strcasecmp(b.host, n.host) || strcmp(b.port, n.port))
		tf_set_err(err, errlen, "next leaves the feed's host (the API key would go with it)");
	else if (!strcasecmp(b.scheme, "https") && strcasecmp(n.scheme, "https"))
		tf_set_err(err, errlen, "next downgrades https to http (the API key would go in "
		                     "clear)");
	else
		rc = TF_OK;
	parts_free(&b);
	parts_free(&n);
	return rc;
}

/* ==== the driver ================================================================== */

/* Per-page tallies, summed up in one warning per page. */
typedef struct page_stats {
	int64_t bad_pulses, bad_indicators, too_large, inactive, expired;
	char first_bad[480];      /* the first malformed object's reason */
	uint64_t digest;          /* of the pulse ids and versions */
} page_stats;

typedef struct otx {
	tf_run *r;
	char *base;               /* the feed's url without trailing '/' */
	char key_header[TF_MAX_FIELD + 32];
	long limit;
	/* cursor */
	int64_t committed_us;     /* modified_since in effect (start or last commit); -1: none */
	int64_t newest_us;        /* newest pulse seen in committed pages */
	int64_t last_us;          /* the previous pulse's modified (order check) */
	int ascending;            /* every pulse so far no older than the one before */
	tf_seen seen;             /* page URLs requested (loop guard) */
	/* run totals */
	int64_t total_bad, total_inactive, total_expired;
} otx;

static void note_bad(page_stats *ps, int64_t *counter, const char *where, const char *why)
{
	(*counter)++;
	if (!ps->first_bad[0])
		snprintf(ps->first_bad, sizeof ps->first_bad, "%.200s: %.200s", where, why);
}

/* GETs one OTX page and parses it. TF_OK with *page; else an error after
 * tf_run_fail() (or TF_ECANCELLED). */
static int get_page(otx *o, const char *url, const char *what, tf_otx_page *page)
{
	tf_fetch_req req = {0};
	tf_fetch_resp resp;
	char buf[400], why[300];
	int rc;

	memset(page, 0, sizeof *page);
	req.url = url;
	req.accept = OTX_ACCEPT;
	req.headers[0] = o->key_header;
	if ((rc = tf_upstream_get(o->r, &req, &resp, TF_SG_FETCHING, what)))
		return rc;
	if ((rc = tf_upstream_failure(&resp, buf, sizeof buf))) {
		if (rc == TF_EPERM) {
			tf_run_fail(o->r, "API key rejected (HTTP %ld)%s", resp.status,
			            buf + strcspn(buf, ":"));
		} else if (rc == TF_ENOTFOUND) {
			tf_run_fail(o->r, "%s: %s: is the feed's url the OTX base URL (e.g. "
			                  "https://otx.alienvault.com)?", what, buf);
			rc = TF_EUPSTREAM;
		} else {
			tf_run_fail(o->r, "%s: %s", what, buf);
		}
		goto out;
	}
	if (!tf_upstream_is_json(&resp, buf, sizeof buf)) {
		tf_run_fail(o->r, "%s: expected OTX JSON, got %s", what, buf);
		rc = TF_EPARSE;
		goto out;
	}
	rc = tf_otx_page_parse(resp.body, resp.len, page, why, sizeof why);
	if (rc == TF_ENOMEM)
		tf_run_fail(o->r, "%s: out of memory", what);
	else if (rc)
		tf_run_fail(o->r, "%s: %s", what, why);
out:
	tf_fetch_resp_free(&resp);
	return rc;
}

/* Adds one indicator of pulse p to the batch (or counts why not). */
static int add_indicator(otx *o, const tf_otx_pulse *p, json_object *ind, const char *where,
                         page_stats *ps)
{
	tf_otx_rec rec;
	char err[200], at[160];
	int rc = tf_otx_indicator(p, ind, tf_now_us(), &rec, err, sizeof err);

	if (rc == TF_ENOTFOUND) {
		(*(rec.skip == TF_OTX_INACTIVE ? &ps->inactive : &ps->expired))++;
		return TF_OK;
	}
	if (rc == TF_EINVAL) {
		snprintf(at, sizeof at, "%s (pulse %s)", where, p->id);
		note_bad(ps, &ps->bad_indicators, at, err);
		return TF_OK;
	}
	if (rc) {
		tf_run_fail(o->r, "%s: out of memory", where);
		return rc;
	}
	rc = tf_run_add(o->r, rec.key, rec.type, rec.value, rec.observables, rec.modified_us,
	                rec.text, rec.len);
	if (rc == TF_OK && rec.valid_until_us)
		rc = tf_run_set_life(o->r, rec.valid_until_us, 0);
	if (rc == TF_ELIMIT) {
		snprintf(at, sizeof at, "%s (%s)", where, rec.key);
		note_bad(ps, &ps->too_large, at, "larger than the record limit");
		rc = TF_OK;
	} else if (rc) {
		tf_run_fail(o->r, "%s: adding %s failed: %s", where, rec.key, tf_strerror(rc));
	}
	tf_otx_rec_free(&rec);
	return rc;
}

/* A pulse with more_indicators: every page of /api/v1/pulses/{id}/indicators. */
static int more_indicators(otx *o, const tf_otx_pulse *p, int page_no, page_stats *ps)
{
	tf_otx_page ip = {0};
	char *url = malloc(strlen(o->base) + strlen(p->id) + 80), what[120], err[240];
	uint64_t *seen = NULL;
	int rc = TF_OK, n;

	if (!url) {
		tf_run_fail(o->r, "out of memory");
		return TF_ENOMEM;
	}
	sprintf(url, "%s/api/v1/pulses/%s/indicators?limit=%d", o->base, p->id, OTX_INDICATOR_LIMIT);
	for (n = 0;; n++) {
		if (n >= TF_OTX_MAX_INDICATOR_PAGES) {
			tf_run_fail(o->r, "page %d: pulse %s has more than %d pages of indicators",
			            page_no, p->id, TF_OTX_MAX_INDICATOR_PAGES);
			rc = TF_ELIMIT;
			goto out;
		}
		snprintf(what, sizeof what, "page %d: pulse %s indicators page %d", page_no, p->id,
		         n + 1);
		if ((rc = tf_run_stage(o->r, TF_SG_FETCHING, "%s", what)) ||
		    (rc = get_page(o, url, what, &ip)))
			goto out;
		for (size_t i = 0; i < ip.n; i++) {
			char where[160];
			if ((rc = tf_run_check(o->r)))
				goto out;
			snprintf(where, sizeof where, "%s, results[%zu]", what, i);
			if ((rc = add_indicator(o, p, json_object_array_get_idx(ip.results, i), where,
			                        ps)))
				goto out;
		}
		if (!ip.next)
			break;
		if (tf_otx_next_ok(o->base, ip.next, err, sizeof err)) {
			tf_run_fail(o->r, "%s: %s", what, err);
			rc = TF_EUPSTREAM;
			goto out;
		}
		/* loop guard local to this pulse: n hashes, n <= the page cap */
		{
			uint64_t h = tf_hash64(ip.next, strlen(ip.next)), *g;
			for (int k = 0; k < n; k++)
				if (seen[k] == h) {
					tf_run_fail(o->r, "%s: next loops back", what);
					rc = TF_EUPSTREAM;
					goto out;
				}
			if (!(g = realloc(seen, (size_t)(n + 1) * sizeof *g))) {
				tf_run_fail(o->r, "out of memory");
				rc = TF_ENOMEM;
				goto out;
			}
			seen = g;
			seen[n] = h;
		}
		if (ip.n == 0) {
			tf_run_fail(o->r, "%s: an empty page that still has a next", what);
			rc = TF_EUPSTREAM;
			goto out;
		}
		free(url);
		if (!(url = strdup(ip.next))) {
			tf_run_fail(o->r, "out of memory");
			rc = TF_ENOMEM;
			goto out;
		}
		tf_otx_page_free(&ip);
	}
out:
	tf_otx_page_free(&ip);
	free(seen);
	free(url);
	return rc;
}

/* Every pulse of a page into the batch. */
static int ingest_page(otx *o, const tf_otx_page *page, int page_no, page_stats *ps,
                       int64_t *page_newest)
{
	tf_progress *p = tf_run_progress(o->r);
	uint64_t h = TF_FNV_OFFSET;
	int rc = TF_OK;

	for (size_t i = 0; i < page->n; i++) {
		json_object *obj = json_object_array_get_idx(page->results, i);
		tf_otx_pulse pulse;
		char err[200], where[96];
		size_t ni;

		if ((rc = tf_run_check(o->r)))
			return rc;
		p->objects_processed++;
		snprintf(where, sizeof where, "page %d, results[%zu]", page_no, i);
		rc = tf_otx_pulse_read(obj, &pulse, err, sizeof err);
		if (rc == TF_EINVAL) {
			note_bad(ps, &ps->bad_pulses, where, err);
			continue;
		}
		if (rc) {
			tf_run_fail(o->r, "%s: out of memory", where);
			return rc;
		}
		h = tf_hash64_more(h, pulse.id, strlen(pulse.id) + 1);
		h = tf_hash64_more(h, &pulse.modified_us, sizeof pulse.modified_us);
		if (pulse.modified_us < o->last_us)
			o->ascending = 0;
		o->last_us = pulse.modified_us;
		if (pulse.modified_us > *page_newest)
			*page_newest = pulse.modified_us;
		if (pulse.more_indicators) {
			rc = more_indicators(o, &pulse, page_no, ps);
		} else {
			ni = pulse.indicators ? json_object_array_length(pulse.indicators) : 0;
			for (size_t k = 0; k < ni && !rc; k++) {
				char at[160];
				snprintf(at, sizeof at, "%s.indicators[%zu]", where, k);
				rc = add_indicator(o, &pulse,
				                   json_object_array_get_idx(pulse.indicators, k), at, ps);
			}
		}
		tf_otx_pulse_free(&pulse);
		if (rc)
			return rc;
	}
	ps->digest = h;
	return TF_OK;
}

static void page_summary(otx *o, int page_no, const page_stats *ps)
{
	int64_t bad = ps->bad_pulses + ps->bad_indicators + ps->too_large;

	if (ps->inactive + ps->expired > 0)
		tf_run_warn(o->r, "page %d: %lld indicators skipped (%lld inactive, %lld expired)",
		            page_no, (long long)(ps->inactive + ps->expired), (long long)ps->inactive,
		            (long long)ps->expired);
	if (bad > 0)
		tf_run_warn(o->r, "page %d: skipped %lld malformed pulses, %lld malformed "
		                  "indicators, %lld too large; first: %s",
		            page_no, (long long)ps->bad_pulses, (long long)ps->bad_indicators,
		            (long long)ps->too_large, ps->first_bad);
}

static char *first_url(otx *o)
{
	char since[TF_OTX_TIME_LEN + 1];
	size_t n = strlen(o->base) + sizeof OTX_SUBSCRIBED + 64 + 3 * sizeof since;
	char *u = malloc(n);

	if (!u)
		return NULL;
	snprintf(u, n, "%s" OTX_SUBSCRIBED "?limit=%ld", o->base, o->limit);
	if (o->committed_us >= 0) {
		tf_otx_format_time(o->committed_us, since, sizeof since);
		strcat(u, "&modified_since=");
		tf_url_enc_append(u, since);
	}
	return u;
}

static int fetch_pulses(otx *o)
{
	tf_progress *p = tf_run_progress(o->r);
	tf_otx_page page = {0};
	json_object *cursor = NULL;
	char *url = first_url(o);
	int rc = TF_OK, page_no = 0, stalled = 0;
	int64_t count = -1, run_pulses = 0;
	uint64_t prev_digest = 0;

	if (!url || tf_seen_add(&o->seen, url) < 0)
		goto nomem;
	for (;;) {
		page_stats ps = {0};
		int64_t page_newest = -1, snap_objects, snap_pages, snap_skipped;
		int snap_percent, last, advance;
		char what[48], err[240];

		tf_otx_page_free(&page);
		if ((rc = tf_run_page_budget(o->r, page_no)))
			goto out;
		snprintf(what, sizeof what, "page %d", page_no + 1);
		if ((rc = tf_run_stage(o->r, TF_SG_FETCHING, "page %d: fetching", page_no + 1)) ||
		    (rc = get_page(o, url, what, &page)))
			goto out;
		/* The next URL is checked before anything of the page is kept. */
		if (page.next) {
			int s;
			if (tf_otx_next_ok(o->base, page.next, err, sizeof err)) {
				tf_run_fail(o->r, "%s: %s", what, err);
				rc = TF_EUPSTREAM;
				goto out;
			}
			if ((s = tf_seen_add(&o->seen, page.next)) < 0)
				goto nomem;
			if (s) {
				tf_run_fail(o->r, "%s: next loops back to a page already read", what);
				rc = TF_EUPSTREAM;
				goto out;
			}
		}
		if (page.count >= 0 && page_no == 0)
			count = page.count;

		if ((rc = tf_run_stage(o->r, TF_SG_PROCESSING, "page %d: %zu pulses", page_no + 1,
		                       page.n)))
			goto out;
		snap_objects = p->objects_processed;
		snap_pages = p->pages_done;
		snap_skipped = p->indicators_skipped;
		snap_percent = p->percent;
		rc = ingest_page(o, &page, page_no + 1, &ps, &page_newest);
		last = page.next == NULL;
		if (!rc) {
			p->pages_done++;
			/* inactive/expired indicators count as skipped (docs/SPEC.md §2) */
			p->indicators_skipped += ps.inactive + ps.expired;
			run_pulses += (int64_t)page.n;
			if (last)
				p->percent = 100;
			else if (count > 0)
				p->percent = run_pulses >= count ? 99 : (int)(run_pulses * 100 / count);
			/* The cursor: see the comment at the top. */
			if (page_newest > o->newest_us)
				o->newest_us = page_newest;
			advance = (o->ascending || last) && o->newest_us > o->committed_us;
			if (advance) {
				char since[TF_OTX_TIME_LEN + 1];
				tf_otx_format_time(o->newest_us, since, sizeof since);
				if (!(cursor = json_object_new_object()) ||
				    json_object_object_add(cursor, "modified_since",
				                           json_object_new_string(since)))
					goto nomem;
			}
			rc = tf_run_commit(o->r, cursor);
			json_object_put(cursor);
			cursor = NULL;
			if (!rc && advance)
				o->committed_us = o->newest_us;
			if (rc && rc != TF_ECANCELLED)
				tf_run_fail(o->r, "%s: storing failed: %s", what, tf_strerror(rc));
		}
		if (rc) {
			/* Counts stay exact: nothing of this page was kept. */
			p->objects_processed = snap_objects;
			p->pages_done = snap_pages;
			p->indicators_skipped = snap_skipped;
			p->percent = snap_percent;
			goto out;
		}
		page_summary(o, page_no + 1, &ps);
		o->total_bad += ps.bad_pulses + ps.bad_indicators + ps.too_large;
		o->total_inactive += ps.inactive;
		o->total_expired += ps.expired;
		page_no++;
		if (last)
			break;
		/* No progress: an empty page, or the previous page again. */
		if (page.n == 0 || (page_no > 1 && ps.digest == prev_digest)) {
			if (++stalled >= TF_MAX_EMPTY_PAGES) {
				tf_run_fail(o->r, "%d pages in a row brought nothing new although next "
				                  "was set: giving up", stalled);
				rc = TF_EUPSTREAM;
				goto out;
			}
		} else {
			stalled = 0;
		}
		prev_digest = ps.digest;
		free(url);
		if (!(url = strdup(page.next)))
			goto nomem;
	}
	rc = TF_OK;
out:
	tf_otx_page_free(&page);
	json_object_put(cursor);
	free(url);
	return rc;
nomem:
	tf_run_fail(o->r, "out of memory");
	rc = TF_ENOMEM;
	goto out;
}

/* The feed's url as an http(s) base without query, fragment or trailing '/'. */
int tf_otx_run(tf_run *r)
{
	json_object *feed = tf_run_feed(r), *opts;
	tf_progress *p = tf_run_progress(r);
	otx o = {0};
	const char *since;
	int64_t limit = OTX_DEFAULT_LIMIT, us;
	int rc;

	o.r = r;
	o.committed_us = o.newest_us = o.last_us = -1;
	o.ascending = 1;
	p->percent = -1;   /* known once the first page's count arrives */
	p->pages_total = -1;
	if (!(o.base = tf_run_base_url(r, "https://otx.alienvault.com")))
		return TF_EINVAL;
	if ((rc = tf_run_key_header(r, "X-OTX-API-KEY", o.key_header, sizeof o.key_header)))
		goto out;
	if (json_object_object_get_ex(feed, "options", &opts) &&
	    tf_json_get_int(opts, "page_size", &limit) == TF_OK) {
		if (limit < 1)
			limit = OTX_DEFAULT_LIMIT;
		if (limit > TF_MAX_PAGE_OBJECTS)
			limit = TF_MAX_PAGE_OBJECTS;
	}
	o.limit = (long)limit;
	/* Incremental: pulses modified after the last committed page. */
	since = tf_json_str(tf_run_cursor(r), "modified_since");
	if (since) {
		if (strlen(since) <= 64 && !tf_time_parse(since, &us))
			o.committed_us = o.newest_us = us;
		else
			tf_run_warn(r, "ignoring the stored cursor (not a timestamp): starting from "
			               "the beginning");
	}
	rc = fetch_pulses(&o);
	if (o.total_bad || o.total_inactive || o.total_expired)
		tf_run_warn(r, "run total: %lld malformed or too large objects skipped, %lld "
		               "inactive and %lld expired indicators skipped",
		            (long long)o.total_bad, (long long)o.total_inactive,
		            (long long)o.total_expired);
out:
	free(o.base);
	tf_seen_free(&o.seen);
	return rc;
}
