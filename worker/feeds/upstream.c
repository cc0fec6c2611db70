/* The feed drivers' HTTP policy: retries, backoff and error texts (see
 * upstream.h). */
#include "upstream.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "util.h"

/* Seconds to wait from a Retry-After value (RFC 9110 §10.2.3: delay-seconds or
 * an HTTP-date), or -1 when absent or unreadable. */
static long long retry_after_s(const char *v)
{
	int64_t n;
	time_t when;

	if (!v || !*v)
		return -1;
	if (isdigit((unsigned char)*v))
		return tf_parse_i64(v, 0, INT32_MAX, &n) ? -1 : n;
	when = curl_getdate(v, NULL);
	if (when == -1)
		return -1;
	n = (int64_t)when - tf_now_us() / 1000000;
	return n < 0 ? 0 : n;
}

static int retryable(long status)
{
	return status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

int tf_upstream_get(tf_run *r, const tf_fetch_req *req, tf_fetch_resp *resp, tf_stage stage,
                    const char *what)
{
	tf_progress *p = tf_run_progress(r);
	char err[256];
	int rc;

	for (int attempt = 0;; attempt++) {
		long long bytes = 0, wait;
		char at[16], httperr[300];
		long status;

		memset(resp, 0, sizeof *resp);
		if ((rc = tf_run_check(r)))
			return rc;
		err[0] = '\0';
		rc = tf_fetch_get(tf_run_fetch(r), req, resp, &bytes, err, sizeof err);
		p->bytes_received += bytes;
		if (rc == TF_ECANCELLED)
			return rc;
		if (rc) {
			tf_run_fail(r, "%s: %s", what, *err ? err : tf_strerror(rc));
			return rc;
		}
		status = resp->status;
		if (!retryable(status))
			return TF_OK;
		tf_upstream_error(resp, httperr, sizeof httperr);
		if (attempt >= TF_MAX_RETRIES) {
			tf_run_fail(r, "%s: %s, still after %d retries", what, httperr, TF_MAX_RETRIES);
			tf_fetch_resp_free(resp);
			return TF_EUPSTREAM;
		}
		wait = (status == 429 || status == 503) ? retry_after_s(resp->retry_after) : -1;
		if (wait < 0)
			wait = 1LL << attempt;
		if (wait > TF_MAX_BACKOFF_S)
			wait = TF_MAX_BACKOFF_S;
		{
			time_t t = (time_t)(tf_now_us() / 1000000 + wait);
			struct tm tm;
			gmtime_r(&t, &tm);
			strftime(at, sizeof at, "%H:%M:%S", &tm);
		}
		tf_fetch_resp_free(resp);
		tf_run_warn(r, "%s: %s; retry %d of %d in %lld s", what, httperr, attempt + 1,
		            TF_MAX_RETRIES, wait);
		if (status == 429 || status == 503)
			rc = tf_run_stage(r, TF_SG_RATE_LIMITED, "rate limited; resuming at %s UTC", at);
		else
			rc = tf_run_stage(r, stage, "%s: upstream error; retrying at %s UTC", what, at);
		if (rc || (rc = tf_run_sleep(r, wait * 1000)))
			return rc;
		if ((rc = tf_run_stage(r, stage, "%s: retrying", what)))
			return rc;
	}
}

void tf_upstream_error(const tf_fetch_resp *resp, char *buf, size_t len)
{
	json_object *doc = NULL, *e;
	const char *title = NULL, *desc = NULL;
	char t[160], d[200];
	int n;

	n = snprintf(buf, len, "HTTP %ld", resp->status);
	if (n < 0 || (size_t)n >= len || !resp->body || !resp->len || resp->len > TF_MAX_BODY ||
	    tf_json_parse(resp->body, resp->len, TF_MAX_JSON_DEPTH, &doc, NULL, 0) ||
	    !json_object_is_type(doc, json_type_object))
		goto out;
	/* TAXII 2.1 §3.6.1 error message; OTX {"detail"}; VT {"error":{"message"}}. */
	if ((title = tf_json_str(doc, "title")))
		desc = tf_json_str(doc, "description");
	else if (!(title = tf_json_str(doc, "detail")) &&
	         json_object_object_get_ex(doc, "error", &e)) {
		title = json_object_is_type(e, json_type_string) ? json_object_get_string(e)
		                                                  : tf_json_str(e, "message");
	}
	if (!title)
		goto out;
	tf_printable(t, sizeof t, title, sizeof t - 1, ' ');
	tf_printable(d, sizeof d, desc ? desc : "", sizeof d - 1, ' ');
	snprintf(buf + n, len - (size_t)n, ": %s%s%s%s", t, *d ? " (" : "", d, *d ? ")" : "");
out:
	json_object_put(doc);
}

int tf_upstream_failure(const tf_fetch_resp *resp, char *buf, size_t len)
{
	if (resp->status >= 200 && resp->status <= 299)
		return TF_OK;
	tf_upstream_error(resp, buf, len);
	if (resp->status == 401 || resp->status == 403)
		return TF_EPERM;
	return resp->status == 404 ? TF_ENOTFOUND : TF_EUPSTREAM;
}

int tf_upstream_is_json(const tf_fetch_resp *resp, char *buf, size_t len)
{
	const char *ct = resp->content_type;
	size_t n = 0;

	if (!ct || !*ct) {
		const char *b = resp->body ? resp->body : "";
		while (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n')
			b++;
		snprintf(buf, len, "no Content-Type");
		return *b == '{' || *b == '[';
	}
	for (const char *c = ct; *c; c++)
		if (!strncasecmp(c, "json", 4))
			return 1;
	while (ct[n] && ct[n] != ';' && ct[n] != ' ' && n < 100)
		n++;
	{
		char tmp[104];
		memcpy(tmp, ct, n);
		tmp[n] = '\0';
		tf_printable(buf, len, tmp, 100, ' ');
	}
	return 0;
}
