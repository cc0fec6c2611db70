/* The virustotal feed driver (docs/SPEC.md §4, docs/FEEDS.md "VirusTotal API v3"): one
 * lookup GET {url}/api/v3/{collection}/{id} (header x-apikey) per configured
 * target, paced to options.requests_per_minute (default 4, the public API's
 * budget) — the long, slow run a user will want to stop, so every wait is a
 * cancellable tf_run_sleep() in stage rate_limited saying when the next
 * request goes out. A run of more than one lookup says once in its warnings
 * that it is paced and about how long that takes (tf_vt_pacing_note), not
 * once per wait; each 429 or 5xx retry has its own warning.
 *
 * Targets come from options.targets (see tf_vt_classify in vt.h; duplicates
 * are looked up once), or, when none are configured, from the observables
 * that the other feeds stored (IPs, domains, URLs, hashes), in key order.
 *
 * Every finished lookup is committed on its own (stop_now keeps every
 * finished lookup) together with the cursor {"resume_at": key of the next
 * target}: a stopped run's successor continues with the first target not yet
 * looked up instead of spending the budget again (the cursor is cleared when
 * a run reaches the end of the list, so the run after that starts over).
 *
 * Answers:
 *  - 200: a record (key vt:<collection>:<id>, type vt-file|vt-domain|vt-ip|
 *    vt-url, value the target, version last_analysis_date) with the verdict;
 *  - 404 NotFoundError: a result, not a failure: verdict "not_found",
 *    version now;
 *  - 400 (BadRequestError, InvalidArgumentError): VirusTotal refuses this
 *    target: skipped with a warning;
 *  - 429 (QuotaExceededError, TooManyRequestsError, also as HTML) and 5xx:
 *    retried up to TF_MAX_RETRIES times after Retry-After (429 without it:
 *    a minute, the budget's window; 5xx: 1, 2, 4 … s), at most
 *    TF_MAX_BACKOFF_S each, waiting in stage rate_limited;
 *  - 401: fails the run ("API key rejected"); 403 and every other status
 *    fail it too.
 * Hostile content, decided per answer: what FAILS the run (nothing of that
 * lookup is kept, earlier lookups stay): transport errors and timeouts, a
 * body over TF_MAX_PAGE_BYTES, a redirect to a non-http(s) URL, a body that
 * is not JSON (an HTML page), invalid JSON or UTF-8, nesting deeper than
 * TF_MAX_FEED_JSON_DEPTH, a wrong envelope (not an object, `data` or
 * `data.attributes` not objects), a 404 that is not a NotFoundError. What is
 * SKIPPED with a warning and counted (the run goes on): an answer whose
 * fields have the wrong type (data.type, last_analysis_stats,
 * reputation, last_analysis_date), a target VirusTotal calls invalid, a
 * configured target that is neither hash, IP, URL nor domain. */
#include "vt.h"

#include <arpa/inet.h>
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

#define VT_DEFAULT_RPM 4              /* public API budget (docs/FEEDS.md) */
#define VT_QUOTA_WAIT_S 60            /* a 429 without Retry-After: one window */
#define VT_ACCEPT "application/json"

/* ---- small helpers ---------------------------------------------------------- */

static const struct {
	const char *collection, *record, *data;
} kinds[] = {
	[TF_VT_FILE] = {"files", "vt-file", "file"},
	[TF_VT_DOMAIN] = {"domains", "vt-domain", "domain"},
	[TF_VT_IP] = {"ip_addresses", "vt-ip", "ip_address"},
	[TF_VT_URL] = {"urls", "vt-url", "url"},
};

const char *tf_vt_collection(tf_vt_kind k) { return kinds[k].collection; }
const char *tf_vt_record_type(tf_vt_kind k) { return kinds[k].record; }
const char *tf_vt_data_type(tf_vt_kind k) { return kinds[k].data; }

/* ---- targets ---------------------------------------------------------------- */

char *tf_vt_base64url(const char *src, size_t n)
{
	static const char abc[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const unsigned char *s = (const unsigned char *)src;
	char *out = malloc(n / 3 * 4 + 5), *o = out;
	size_t i = 0;

	if (!out)
		return NULL;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
		*o++ = abc[v >> 18];
		*o++ = abc[(v >> 12) & 63];
		*o++ = abc[(v >> 6) & 63];
		*o++ = abc[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)s[i] << 16;
		*o++ = abc[v >> 18];
		*o++ = abc[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
		*o++ = abc[v >> 18];
		*o++ = abc[(v >> 12) & 63];
		*o++ = abc[(v >> 6) & 63];
	}
	*o = '\0';
	return out;
}

static int all_hex(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return 0;
	return 1;
}

/* Host name rules (RFC 1123 §2.1, plus '_' which real DNS names carry). */
static int valid_domain(const char *s, size_t n)
{
	size_t label = 0, labels = 1;

	if (n < 3 || n > TF_VT_MAX_DOMAIN || s[0] == '.' || s[n - 1] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0)
				return 0;
			labels++;
			label = 0;
			continue;
		}
		if (!isalnum(c) && c != '-' && c != '_')
			return 0;
		if (++label > 63)
			return 0;
	}
	return labels >= 2;
}

/* AF_INET or AF_INET6 when s[0..n) is an address (its binary form in addr),
 * else 0. */
static int ip_family(const char *s, size_t n, char *buf, size_t buflen, unsigned char *addr)
{
	if (n >= buflen)
		return 0;
	memcpy(buf, s, n);
	buf[n] = '\0';
	if (inet_pton(AF_INET, buf, addr) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, buf, addr) == 1)
		return AF_INET6;
	return 0;
}

void tf_vt_target_free(tf_vt_target *t)
{
	if (!t)
		return;
	free(t->value);
	free(t->id);
	free(t->key);
	memset(t, 0, sizeof *t);
}

int tf_vt_classify(const char *target, tf_vt_target *t, char *err, size_t errlen)
{
	const char *s = target;
	size_t n;
	char ip[64];
	unsigned char addr[16];
	int af;

	memset(t, 0, sizeof *t);
	if (!s) {
		tf_set_err(err, errlen, "no target");
		return TF_EINVAL;
	}
	while (isspace((unsigned char)*s))
		s++;
	n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		n--;
	if (n == 0) {
		tf_set_err(err, errlen, "empty target");
		return TF_EINVAL;
	}
	if (n > TF_MAX_URL) {
		tf_set_err(err, errlen, "longer than %d bytes", TF_MAX_URL);
		return TF_EINVAL;
	}
	if ((n == 32 || n == 40 || n == 64) && all_hex(s, n)) {
		t->kind = TF_VT_FILE;
		if (!(t->value = tf_strndup(s, n)))
			goto nomem;
		for (char *c = t->value; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	} else if ((af = ip_family(s, n, ip, sizeof ip, addr))) {
		char canon[INET6_ADDRSTRLEN];
		t->kind = TF_VT_IP;
		if (!inet_ntop(af, addr, canon, sizeof canon) || !(t->value = strdup(canon)))
			goto nomem;
	} else if ((n > 7 && !strncasecmp(s, "http://", 7)) ||
	           (n > 8 && !strncasecmp(s, "https://", 8))) {
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f) {
				tf_set_err(err, errlen, "URL contains control characters");
				return TF_EINVAL;
			}
		t->kind = TF_VT_URL;
		if (!(t->value = tf_strndup(s, n)))
			goto nomem;
	} else {
		size_t m = n;
		if (m > 1 && s[m - 1] == '.')
			m--;
		if (!valid_domain(s, m)) {
			tf_set_err(err, errlen, "neither a file hash (32, 40 or 64 hex digits), an IP "
			                     "address, an http(s) URL nor a domain name");
			return TF_EINVAL;
		}
		t->kind = TF_VT_DOMAIN;
		if (!(t->value = tf_strndup(s, m)))
			goto nomem;
		for (char *c = t->value; *c; c++)
			*c = (char)tolower((unsigned char)*c);
	}
	t->id = t->kind == TF_VT_URL ? tf_vt_base64url(t->value, strlen(t->value))
	                             : strdup(t->value);
	if (!t->id)
		goto nomem;
	n = strlen(t->id) + strlen(kinds[t->kind].collection) + 5;
	if (!(t->key = malloc(n)))
		goto nomem;
	snprintf(t->key, n, "vt:%s:%s", kinds[t->kind].collection, t->id);
	return TF_OK;
nomem:
	tf_vt_target_free(t);
	return TF_ENOMEM;
}

/* ---- answers ---------------------------------------------------------------- */

void tf_vt_report_free(tf_vt_report *rep)
{
	if (!rep)
		return;
	json_object_put(rep->doc);
	memset(rep, 0, sizeof *rep);
}

int tf_vt_report_parse(const char *body, size_t len, tf_vt_kind kind, tf_vt_report *rep,
                       char *err, size_t errlen)
{
	json_object *data, *attrs, *v;
	char why[200];
	int rc;

	memset(rep, 0, sizeof *rep);
	if (tf_json_parse(body, len, TF_MAX_FEED_JSON_DEPTH, &rep->doc, why, sizeof why)) {
		tf_set_err(err, errlen, "%s", why);
		return TF_EPARSE;
	}
	/* The envelope: {"data":{"type","id","attributes":{…}}}. */
	if (!json_object_is_type(rep->doc, json_type_object) ||
	    !json_object_object_get_ex(rep->doc, "data", &data) ||
	    !json_object_is_type(data, json_type_object)) {
		tf_set_err(err, errlen, "expected {\"data\":{…}}");
		rc = TF_EPARSE;
		goto fail;
	}
	if (!json_object_object_get_ex(data, "attributes", &attrs) ||
	    !json_object_is_type(attrs, json_type_object)) {
		tf_set_err(err, errlen, "data.attributes is not an object");
		rc = TF_EPARSE;
		goto fail;
	}
	/* The fields. */
	rc = TF_EINVAL;
	if (!json_object_object_get_ex(data, "type", &v) || !v) {
		tf_set_err(err, errlen, "data.type is missing");
		goto fail;
	}
	if (!json_object_is_type(v, json_type_string)) {
		tf_set_err(err, errlen, "data.type is not a string");
		goto fail;
	}
	if (strcmp(json_object_get_string(v), kinds[kind].data)) {
		char shown[40];
		tf_printable(shown, sizeof shown, json_object_get_string(v), 32, '?');
		tf_set_err(err, errlen, "data.type is \"%s\", expected \"%s\"", shown, kinds[kind].data);
		goto fail;
	}
	if (json_object_object_get_ex(attrs, "last_analysis_stats", &v) && v) {
		if (!json_object_is_type(v, json_type_object)) {
			tf_set_err(err, errlen, "last_analysis_stats is not an object");
			goto fail;
		}
		json_object_object_foreach(v, name, count) {
			char shown[40];
			if (json_object_is_type(count, json_type_int) && json_object_get_int64(count) >= 0)
				continue;
			tf_printable(shown, sizeof shown, name, 32, '?');
			tf_set_err(err, errlen, "last_analysis_stats.%s is not a count", shown);
			goto fail;
		}
		rep->stats = v;
		tf_json_get_int(v, "malicious", &rep->malicious);
		tf_json_get_int(v, "suspicious", &rep->suspicious);
	}
	switch (tf_json_get_int(attrs, "reputation", &rep->reputation)) {
	case TF_OK: rep->has_reputation = 1; break;
	case TF_EINVAL: tf_set_err(err, errlen, "reputation is not an integer"); goto fail;
	default: break;
	}
	switch (tf_json_get_int(attrs, "last_analysis_date", &rep->last_analysis_date)) {
	case TF_OK:
		/* Unix seconds that fit a microsecond version */
		if (rep->last_analysis_date < 0 || rep->last_analysis_date > INT64_MAX / 1000000) {
			tf_set_err(err, errlen, "last_analysis_date is out of range");
			goto fail;
		}
		rep->has_date = 1;
		break;
	case TF_EINVAL: tf_set_err(err, errlen, "last_analysis_date is not an integer"); goto fail;
	default: break;
	}
	rep->verdict = !rep->stats            ? "unknown"
	               : rep->malicious > 0   ? "malicious"
	               : rep->suspicious > 0  ? "suspicious"
	                                      : "harmless/undetected";
	return TF_OK;
fail:
	tf_vt_report_free(rep);
	return rc;
}

void tf_vt_error(const char *body, size_t len, char *code, size_t codelen, char *msg,
                 size_t msglen)
{
	json_object *doc = NULL, *e;

	if (codelen)
		code[0] = '\0';
	if (msglen)
		msg[0] = '\0';
	/* An error answer is small: a long body is not one. */
	if (!body || !len || len > TF_MAX_BODY ||
	    tf_json_parse(body, len, TF_MAX_JSON_DEPTH, &doc, NULL, 0) ||
	    !json_object_is_type(doc, json_type_object) ||
	    !json_object_object_get_ex(doc, "error", &e) || !json_object_is_type(e, json_type_object))
		goto out;
	tf_printable(code, codelen, tf_json_str(e, "code"), 64, '?');
	tf_printable(msg, msglen, tf_json_str(e, "message"), 200, '?');
out:
	json_object_put(doc);
}

static int put(json_object *o, const char *k, json_object *v)
{
	if (json_object_object_add(o, k, v)) {
		json_object_put(v);
		return TF_ENOMEM;
	}
	return TF_OK;
}

int tf_vt_record(const tf_vt_target *t, const tf_vt_report *rep, json_object **obj)
{
	json_object *o = json_object_new_object();

	*obj = NULL;
	if (!o)
		return TF_ENOMEM;
	if (put(o, "target", json_object_new_string(t->value)) ||
	    put(o, "last_analysis_stats", rep && rep->stats ? json_object_get(rep->stats) : NULL) ||
	    put(o, "reputation", rep && rep->has_reputation ? json_object_new_int64(rep->reputation)
	                                                    : NULL) ||
	    put(o, "last_analysis_date",
	        rep && rep->has_date ? json_object_new_int64(rep->last_analysis_date) : NULL) ||
	    put(o, "verdict", json_object_new_string(rep ? rep->verdict : "not_found"))) {
		json_object_put(o);
		return TF_ENOMEM;
	}
	*obj = o;
	return TF_OK;
}

json_object *tf_vt_observables(const tf_vt_target *t)
{
	json_object *arr = json_object_new_array(), *e = json_object_new_object();
	const char *type;

	switch (t->kind) {
	case TF_VT_FILE:
		type = strlen(t->value) == 32   ? "file:hashes.MD5"
		       : strlen(t->value) == 40 ? "file:hashes.SHA-1"
		                                : "file:hashes.SHA-256";
		break;
	case TF_VT_DOMAIN: type = "domain-name"; break;
	case TF_VT_IP: type = strchr(t->value, ':') ? "ipv6-addr" : "ipv4-addr"; break;
	default: type = "url"; break;
	}
	if (!arr || !e || put(e, "type", json_object_new_string(type)) ||
	    put(e, "value", json_object_new_string(t->value)) || json_object_array_add(arr, e)) {
		json_object_put(e);
		json_object_put(arr);
		return NULL;
	}
	return arr;
}

/* "about 90 s", "about 5 min", "about 41 h 40 min": seconds below two
 * minutes, else rounded to the nearest minute. */
static void about(int64_t s, char *buf, size_t len)
{
	int64_t min = (s + 30) / 60;

	if (s < 120)
		snprintf(buf, len, "about %lld s", (long long)s);
	else if (min < 90)
		snprintf(buf, len, "about %lld min", (long long)min);
	else
		snprintf(buf, len, "about %lld h %lld min", (long long)(min / 60),
		         (long long)(min % 60));
}

void tf_vt_pacing_note(int rpm, size_t lookups, char *buf, size_t len)
{
	int64_t waits = lookups > 1 ? (int64_t)lookups - 1 : 0;
	/* rounded up: a run of 0.5 s is "about 1 s", never "0 s" */
	int64_t s = rpm > 0 ? (waits * 60 + rpm - 1) / rpm : 0;
	char took[48];

	about(s, took, sizeof took);
	snprintf(buf, len, "paced at %d requests/min (options.requests_per_minute): %zu lookups "
	                   "take %s", rpm, lookups, took);
}

/* ==== the driver ================================================================== */

typedef struct vt {
	tf_run *r;
	char *base;               /* the feed's url without trailing '/' */
	char key_header[TF_MAX_FIELD + 32];
	int rpm;
	int64_t interval_us;      /* 60 s / rpm */
	int64_t next_at;          /* monotonic time the budget allows the next request */
	tf_vt_target *targets;
	size_t n;
	int64_t skipped;          /* targets skipped (invalid, refused, malformed answer) */
	int64_t not_found;
} vt;

static void skip_target(vt *v, const char *target, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void skip_target(vt *v, const char *target, const char *fmt, ...)
{
	char why[240], shown[80];
	va_list ap;

	if (++v->skipped > TF_VT_MAX_SKIP_WARNINGS)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof why, fmt, ap);
	va_end(ap);
	tf_printable(shown, sizeof shown, target, 72, '?');
	tf_run_warn(v->r, "target %s skipped: %s", shown, why);
}

/* "HH:MM:SS" (UTC) of the wall-clock time `in_us` from now. */
static void clock_in(int64_t in_us, char *buf, size_t len)
{
	time_t t = (time_t)((tf_now_us() + in_us) / 1000000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, len, "%H:%M:%S", &tm);
}

/* Seconds from a Retry-After value (RFC 9110 §10.2.3: delay-seconds or an
 * HTTP-date), or -1 when absent or unreadable. */
static int64_t retry_after_s(const char *s)
{
	int64_t n;
	time_t when;

	if (!s || !*s)
		return -1;
	if (isdigit((unsigned char)*s))
		return tf_parse_i64(s, 0, INT32_MAX, &n) ? -1 : n;
	if ((when = curl_getdate(s, NULL)) == -1)
		return -1;
	n = (int64_t)when - tf_now_us() / 1000000;
	return n < 0 ? 0 : n;
}

/* Waits until the budget allows the next request (cancellable). */
static int pace(vt *v)
{
	int64_t wait = v->next_at - tf_mono_us();
	char at[16];
	int rc;

	if (wait <= 0)
		return tf_run_check(v->r);
	clock_in(wait, at, sizeof at);
	if ((rc = tf_run_stage(v->r, TF_SG_RATE_LIMITED, "next request at %s UTC (%d/min budget)",
	                       at, v->rpm)))
		return rc;
	return tf_run_sleep(v->r, (wait + 999) / 1000);
}

static int retryable(long status)
{
	return status == 429 || (status >= 500 && status <= 599);
}

/* One lookup with the budget and the retry policy. TF_OK with *resp (any
 * status but a retryable one, caller frees); TF_ECANCELLED; or an error after
 * tf_run_fail(). */
static int lookup(vt *v, const char *url, const char *what, tf_fetch_resp *resp)
{
	tf_progress *p = tf_run_progress(v->r);
	tf_fetch_req req = {0};
	char err[256], at[16], code[80], msg[240];
	int rc;

	req.url = url;
	req.accept = VT_ACCEPT;
	req.headers[0] = v->key_header;
	for (int attempt = 0;; attempt++) {
		long long bytes = 0;
		long status;
		int64_t wait;

		memset(resp, 0, sizeof *resp);
		if ((rc = pace(v)) ||
		    (rc = tf_run_stage(v->r, TF_SG_FETCHING, "%s%s", what, attempt ? " (retry)" : "")))
			return rc;
		v->next_at = tf_mono_us() + v->interval_us;
		err[0] = '\0';
		rc = tf_fetch_get(tf_run_fetch(v->r), &req, resp, &bytes, err, sizeof err);
		p->bytes_received += bytes;
		if (rc == TF_ECANCELLED)
			return rc;
		if (rc) {
			tf_run_fail(v->r, "%s: %s", what, *err ? err : tf_strerror(rc));
			return rc;
		}
		status = resp->status;
		if (!retryable(status))
			return TF_OK;
		tf_vt_error(resp->body, resp->len, code, sizeof code, msg, sizeof msg);
		if (attempt >= TF_MAX_RETRIES) {
			tf_run_fail(v->r, "%s: HTTP %ld%s%s, still after %d retries", what, status,
			            *code ? " " : "", code, TF_MAX_RETRIES);
			tf_fetch_resp_free(resp);
			return TF_EUPSTREAM;
		}
		wait = retry_after_s(resp->retry_after);
		if (wait < 0)
			wait = status == 429 ? VT_QUOTA_WAIT_S : (int64_t)1 << attempt;
		if (wait > TF_MAX_BACKOFF_S)
			wait = TF_MAX_BACKOFF_S;
		tf_fetch_resp_free(resp);
		tf_run_warn(v->r, "%s: HTTP %ld%s%s; retry %d of %d in %lld s", what, status,
		            *code ? " " : "", code, attempt + 1, TF_MAX_RETRIES, (long long)wait);
		/* The budget's next slot is no earlier than the end of this wait:
		 * pace() then waits, cancellably, in stage rate_limited. */
		if (v->next_at < tf_mono_us() + wait * 1000000)
			v->next_at = tf_mono_us() + wait * 1000000;
		clock_in(wait * 1000000, at, sizeof at);
		if ((rc = tf_run_stage(v->r, TF_SG_RATE_LIMITED, "%s by VirusTotal; resuming at %s UTC",
		                       status == 429 ? "rate limited" : "server error", at)) ||
		    (rc = tf_run_sleep(v->r, wait * 1000)))
			return rc;
	}
}

/* Looks up target i and adds its record to the batch. TF_OK (also when the
 * target was skipped), TF_ECANCELLED, or an error after tf_run_fail(). */
static int one_target(vt *v, size_t i)
{
	const tf_vt_target *t = &v->targets[i];
	tf_fetch_resp resp = {0};
	tf_vt_report rep = {0};
	json_object *obj = NULL, *obs = NULL;
	char what[160], shown[96], code[80], msg[240], err[240], buf[400];
	const char *text;
	size_t url_len = strlen(v->base) + strlen(t->id) + 32, len;
	char *url = malloc(url_len);
	int64_t modified;
	int rc, found = 1;

	if (!url) {
		tf_run_fail(v->r, "out of memory");
		return TF_ENOMEM;
	}
	snprintf(url, url_len, "%s/api/v3/%s/%s", v->base, kinds[t->kind].collection, t->id);
	tf_printable(shown, sizeof shown, t->value, 80, '?');
	snprintf(what, sizeof what, "lookup %zu of %zu (%s)", i + 1, v->n, shown);
	if ((rc = lookup(v, url, what, &resp)))
		goto out;
	if (resp.status != 200) {
		tf_vt_error(resp.body, resp.len, code, sizeof code, msg, sizeof msg);
		snprintf(buf, sizeof buf, "HTTP %ld%s%s%s%s", resp.status, *code ? " " : "", code,
		         *msg ? ": " : "", msg);
		if (resp.status == 404 && !strcmp(code, "NotFoundError")) {
			found = 0;
		} else if (resp.status == 401) {
			tf_run_fail(v->r, "API key rejected (%s)", buf);
			rc = TF_EPERM;
			goto out;
		} else if (resp.status == 400) {
			skip_target(v, t->value, "VirusTotal refused it (%s)", buf);
			goto out;
		} else if (resp.status == 403) {
			tf_run_fail(v->r, "%s: access denied (%s)", what, buf);
			rc = TF_EPERM;
			goto out;
		} else if (resp.status == 404) {
			tf_run_fail(v->r, "%s: HTTP 404 that is not a VirusTotal NotFoundError: is the "
			                  "feed's url the API's base (e.g. https://www.virustotal.com)?",
			            what);
			rc = TF_EUPSTREAM;
			goto out;
		} else {
			tf_run_fail(v->r, "%s: %s", what, buf);
			rc = TF_EUPSTREAM;
			goto out;
		}
	}
	if ((rc = tf_run_stage(v->r, TF_SG_PROCESSING, "%s: %s", what,
	                       found ? "processing" : "not found")))
		goto out;
	if (found) {
		if (!tf_upstream_is_json(&resp, buf, sizeof buf)) {
			tf_run_fail(v->r, "%s: expected VirusTotal JSON, got %s", what, buf);
			rc = TF_EPARSE;
			goto out;
		}
		rc = tf_vt_report_parse(resp.body, resp.len, t->kind, &rep, err, sizeof err);
		if (rc == TF_EINVAL) {
			skip_target(v, t->value, "malformed answer: %s", err);
			rc = TF_OK;
			goto out;
		}
		if (rc == TF_ENOMEM) {
			tf_run_fail(v->r, "%s: out of memory", what);
			goto out;
		}
		if (rc) {
			tf_run_fail(v->r, "%s: %s", what, err);
			goto out;
		}
		modified = rep.has_date ? rep.last_analysis_date * 1000000 : 0;
	} else {
		v->not_found++;
		modified = tf_now_us();
	}
	if (tf_vt_record(t, found ? &rep : NULL, &obj) || !(obs = tf_vt_observables(t)) ||
	    !(text = tf_json_text(obj, &len))) {
		tf_run_fail(v->r, "%s: out of memory", what);
		rc = TF_ENOMEM;
		goto out;
	}
	rc = tf_run_add(v->r, t->key, kinds[t->kind].record, t->value, obs, modified, text, len);
	if (rc == TF_ELIMIT) {
		skip_target(v, t->value, "record larger than the limit");
		rc = TF_OK;
	} else if (rc) {
		tf_run_fail(v->r, "%s: adding the record failed: %s", what, tf_strerror(rc));
	}
out:
	json_object_put(obj);
	json_object_put(obs);
	tf_vt_report_free(&rep);
	tf_fetch_resp_free(&resp);
	free(url);
	return rc;
}

/* options.targets → v->targets, classified, duplicates dropped. */
static int load_targets(vt *v, json_object *list)
{
	size_t n = json_object_array_length(list);
	char err[200];

	if (n > TF_MAX_TARGETS) {
		tf_run_fail(v->r, "options.targets has %zu entries, limit %d", n, TF_MAX_TARGETS);
		return TF_ELIMIT;
	}
	if (!(v->targets = calloc(n ? n : 1, sizeof *v->targets))) {
		tf_run_fail(v->r, "out of memory");
		return TF_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(list, i);
		tf_vt_target *t = &v->targets[v->n];
		int rc, dup = 0;

		if (!json_object_is_type(e, json_type_string)) {
			skip_target(v, "(not a string)", "options.targets[%zu] is not a string", i);
			continue;
		}
		rc = tf_vt_classify(json_object_get_string(e), t, err, sizeof err);
		if (rc == TF_ENOMEM) {
			tf_run_fail(v->r, "out of memory");
			return rc;
		}
		if (rc) {
			skip_target(v, json_object_get_string(e), "%s", err);
			continue;
		}
		/* quadratic, but bounded by TF_MAX_TARGETS and done once per run */
		for (size_t k = 0; k < v->n && !dup; k++)
			dup = !strcmp(v->targets[k].key, t->key);
		if (dup)
			tf_vt_target_free(t);
		else
			v->n++;
	}
	return TF_OK;
}

int tf_vt_run(tf_run *r)
{
	json_object *feed = tf_run_feed(r), *opts = NULL, *list = NULL, *cursor = NULL;
	json_object *from_store = NULL; /* owned: targets taken from the store */
	tf_progress *p = tf_run_progress(r);
	vt v = {0};
	const char *resume;
	int64_t rpm = VT_DEFAULT_RPM;
	size_t start = 0;
	int rc = TF_OK;

	v.r = r;
	p->percent = -1;
	p->pages_total = -1;
	if (!(v.base = tf_run_base_url(r, "https://www.virustotal.com")))
		return TF_EINVAL;
	if ((rc = tf_run_key_header(r, "x-apikey", v.key_header, sizeof v.key_header)))
		goto out;
	json_object_object_get_ex(feed, "options", &opts);
	if (opts && tf_json_get_int(opts, "requests_per_minute", &rpm) == TF_OK &&
	    (rpm < 1 || rpm > TF_MAX_REQUESTS_PER_MINUTE)) {
		tf_run_warn(r, "options.requests_per_minute %lld is out of range (1..%d): using %d",
		            (long long)rpm, TF_MAX_REQUESTS_PER_MINUTE, VT_DEFAULT_RPM);
		rpm = VT_DEFAULT_RPM;
	}
	v.rpm = (int)rpm;
	v.interval_us = 60 * 1000000LL / rpm;
	v.next_at = tf_mono_us();
	if (!opts || !json_object_object_get_ex(opts, "targets", &list) ||
	    !json_object_is_type(list, json_type_array) || json_object_array_length(list) == 0) {
		/* docs/SPEC.md §4: no list → the store's own indicators of those types. */
		if (!(from_store = json_object_new_array()) ||
		    (rc = tf_run_store_observables(r, TF_MAX_TARGETS, from_store))) {
			tf_run_fail(r, "cannot read the store's indicators");
			rc = rc ? rc : TF_ENOMEM;
			goto out;
		}
		if (json_object_array_length(from_store) == 0) {
			tf_run_fail(r, "no targets configured, and no feed has stored hashes, domains, "
			               "IP addresses or URLs to look up");
			rc = TF_EINVAL;
			goto out;
		}
		list = from_store;
		tf_run_stage(r, TF_SG_PROCESSING, "%zu indicators from the store to look up",
		             json_object_array_length(list));
	}
	if ((rc = load_targets(&v, list)))
		goto out;
	if (v.n == 0) {
		tf_run_fail(r, "none of the %zu configured targets is a hash, IP address, URL or "
		               "domain name", json_object_array_length(list));
		rc = TF_EINVAL;
		goto out;
	}
	/* A stopped run's successor continues where it ended. */
	if ((resume = tf_json_str(tf_run_cursor(r), "resume_at"))) {
		for (size_t i = 0; i < v.n; i++)
			if (!strcmp(v.targets[i].key, resume)) {
				start = i;
				break;
			}
		if (start)
			tf_run_warn(r, "continuing the stopped run before this one: target %zu of %zu",
			            start + 1, v.n);
	}
	p->pages_total = (int64_t)(v.n - start);
	p->percent = 0;
	/* docs/SPEC.md §2: rate-limit waits appear in warnings — said once for the whole
	 * run (each 429 still gets its own line), as soon as more than one lookup
	 * means the budget will make the run wait. */
	if (v.n - start > 1) {
		char note[160];
		tf_vt_pacing_note(v.rpm, v.n - start, note, sizeof note);
		tf_run_warn(r, "%s", note);
	}
	if (!(cursor = json_object_new_object())) {
		tf_run_fail(r, "out of memory");
		rc = TF_ENOMEM;
		goto out;
	}
	for (size_t i = start; i < v.n; i++) {
		int64_t snap_objects = p->objects_processed, snap_pages = p->pages_done;
		int snap_percent = p->percent;

		if ((rc = one_target(&v, i)))
			goto out;
		p->objects_processed++;
		p->pages_done++;
		p->percent = (int)((i + 1 - start) * 100 / (v.n - start));
		/* The cursor names the next target; {} once the list is done. */
		json_object_object_del(cursor, "resume_at");
		if (i + 1 < v.n &&
		    json_object_object_add(cursor, "resume_at", json_object_new_string(v.targets[i + 1].key))) {
			tf_run_fail(r, "out of memory");
			rc = TF_ENOMEM;
			goto out;
		}
		rc = tf_run_commit(r, cursor);
		if (rc) {
			if (rc != TF_ECANCELLED)
				tf_run_fail(r, "lookup %zu: storing failed: %s", i + 1, tf_strerror(rc));
			p->objects_processed = snap_objects;
			p->pages_done = snap_pages;
			p->percent = snap_percent;
			goto out;
		}
	}
	rc = TF_OK;
out:
	if (v.skipped > 0)
		tf_run_warn(r, "%lld targets skipped in total", (long long)v.skipped);
	json_object_put(cursor);
	json_object_put(from_store);
	for (size_t i = 0; i < v.n; i++)
		tf_vt_target_free(&v.targets[i]);
	free(v.targets);
	free(v.base);
	return rc;
}
