#include "respond.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "log.h"
#include "util.h"

/* Used when even the error body cannot be allocated: the client still gets
 * the documented shape. */
static const char oom_body[] = "{\"error\":\"internal error\",\"code\":\"internal_error\"}";

void tf_resp_init(tf_resp *r)
{
	memset(r, 0, sizeof *r);
}

static void drop_body(tf_resp *r)
{
	if (!r->body_static)
		free(r->body);
	r->body = NULL;
	r->len = 0;
	r->body_static = 0;
	r->content_type = NULL;
}

void tf_resp_free(tf_resp *r)
{
	drop_body(r);
}

static void set_oom(tf_resp *r)
{
	drop_body(r);
	r->status = 500;
	r->body = (char *)oom_body;
	r->len = sizeof oom_body - 1;
	r->body_static = 1;
}

int tf_resp_json(tf_resp *r, int status, char *body, size_t len)
{
	drop_body(r);
	if (!body) {
		set_oom(r);
		return -1;
	}
	r->status = status;
	r->body = body;
	r->len = len;
	return 0;
}

int tf_resp_text(tf_resp *r, int status, char *body, size_t len, const char *content_type)
{
	if (tf_resp_json(r, status, body, len))
		return -1;
	r->content_type = content_type;
	return 0;
}

int tf_resp_json_copy(tf_resp *r, int status, const char *body, size_t len)
{
	char *copy = tf_strndup(body, len);
	return tf_resp_json(r, status, copy, len);
}

void tf_resp_empty(tf_resp *r, int status)
{
	drop_body(r);
	r->status = status;
}

/* Builds the error object with json-c so the human text is always escaped
 * correctly, whatever a lib reason or a user-supplied value contains. */
static int write_error(tf_resp *r, int status, const char *code, const char *key,
                       const char *value, const char *fmt, va_list ap)
{
	char text[512];
	json_object *o;
	const char *s;
	size_t len;

	vsnprintf(text, sizeof text, fmt, ap);
	if (!(o = json_object_new_object()))
		goto oom;
	if (json_object_object_add(o, "error", json_object_new_string(text)) ||
	    json_object_object_add(o, "code", json_object_new_string(code)) ||
	    (key && json_object_object_add(o, key, json_object_new_string(value ? value : ""))))
		goto oom;
	s = tf_json_text(o, &len);
	if (!s || tf_resp_json_copy(r, status, s, len))
		goto oom;
	json_object_put(o);
	return -1;
oom:
	json_object_put(o);
	set_oom(r);
	return -1;
}

int tf_resp_error(tf_resp *r, int status, const char *code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	write_error(r, status, code, NULL, NULL, fmt, ap);
	va_end(ap);
	return -1;
}

int tf_resp_error_with(tf_resp *r, int status, const char *code, const char *key,
                       const char *value, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	write_error(r, status, code, key, value, fmt, ap);
	va_end(ap);
	return -1;
}

int tf_http_status_of(int err, const char **code)
{
	int status;
	const char *c;

	switch (err) {
	case TF_EINVAL:    status = 400; c = "bad_request"; break;
	case TF_ENOTFOUND: status = 404; c = "not_found"; break;
	case TF_EEXIST:    status = 409; c = "exists"; break;
	case TF_ECONFLICT: /* fallthrough: both are "the current state forbids it" */
	case TF_ESTATE:    status = 409; c = "conflict"; break;
	case TF_ELIMIT:    status = 413; c = "payload_too_large"; break;
	case TF_ESTORE:    status = 503; c = "store_unavailable"; break;
	case TF_EPERM:     status = 503; c = "store_not_writable"; break;
	case TF_ENOSPACE:  status = 507; c = "store_disk_full"; break;
	default:           status = 500; c = "internal_error"; break;
	}
	if (code)
		*code = c;
	return status;
}

int tf_resp_fail(tf_resp *r, int err, const char *detail)
{
	const char *code;
	int status = tf_http_status_of(err, &code);

	if (status >= 500) {
		/* Never internals to the client (the store's own words may name
		 * paths); the log gets them. */
		tf_warn("tf_resp_fail: %s%s%s", tf_strerror(err), detail && *detail ? ": " : "",
		        detail ? detail : "");
		if (err == TF_EPERM)
			return tf_resp_error(r, status, code, "store not writable");
		if (err == TF_ESTORE)
			return tf_resp_error(r, status, code, "store unavailable");
		return tf_resp_error(r, status, code, "internal error");
	}
	return tf_resp_error(r, status, code, "%s", detail && *detail ? detail : tf_strerror(err));
}

const char *tf_http_reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 406: return "Not Acceptable";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 415: return "Unsupported Media Type";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 507: return "Insufficient Storage";
	default:  return "Unknown";
	}
}

/* One entity-tag of a list: skips "W/", returns the quoted tag's span. */
static const char *next_tag(const char *p, const char **tag, size_t *len)
{
	while (*p == ' ' || *p == '\t' || *p == ',')
		p++;
	if (!*p)
		return NULL;
	if (p[0] == 'W' && p[1] == '/')
		p += 2;
	*tag = p;
	if (*p == '"') {
		const char *end = strchr(p + 1, '"');
		p = end ? end + 1 : p + strlen(p);
	} else {
		while (*p && *p != ',')
			p++;
	}
	*len = (size_t)(p - *tag);
	return p;
}

int tf_etag_matches(const char *if_none_match, const char *etag)
{
	const char *p = if_none_match, *tag;
	size_t len, elen;

	if (!p || !etag)
		return 0;
	elen = strlen(etag);
	while ((p = next_tag(p, &tag, &len))) {
		if ((len == 1 && *tag == '*') || (len == elen && !memcmp(tag, etag, len)))
			return 1;
	}
	return 0;
}

void tf_resp_etag(tf_resp *r, const char *if_none_match)
{
	if (r->status != 200 || !r->body || r->no_etag)
		return;
	snprintf(r->etag, sizeof r->etag, "\"%016llx\"",
	         (unsigned long long)tf_hash64(r->body, r->len));
	if (tf_etag_matches(if_none_match, r->etag)) {
		drop_body(r);
		r->status = 304;
	}
}

int tf_resp_header(tf_resp *r, const char *name, const char *value)
{
	size_t used = strlen(r->extra);
	int n = snprintf(r->extra + used, sizeof r->extra - used, "%s: %s\r\n", name, value);

	if (n < 0 || (size_t)n >= sizeof r->extra - used) {
		r->extra[used] = '\0';
		return -1;
	}
	return 0;
}

void tf_resp_last_modified(tf_resp *r, int64_t us)
{
	time_t t = (time_t)(us / 1000000);
	struct tm tm;

	r->last_modified[0] = '\0';
	if (us > 0 && gmtime_r(&t, &tm))
		strftime(r->last_modified, sizeof r->last_modified, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

int tf_not_modified_since(const char *if_modified_since, int64_t us)
{
	struct tm tm;
	const char *end;

	if (!if_modified_since || us <= 0)
		return 0;
	memset(&tm, 0, sizeof tm);
	end = strptime(if_modified_since, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	/* An unreadable date is ignored (RFC 9110 §13.1.3): the full answer. */
	return end && !*end && (int64_t)timegm(&tm) >= us / 1000000;
}

static int put_header(char *buf, size_t size, size_t *used, const char *name, const char *value)
{
	int n = snprintf(buf + *used, size - *used, "%s: %s\r\n", name, value);
	if (n < 0 || (size_t)n >= size - *used)
		return -1;
	*used += (size_t)n;
	return 0;
}

int tf_resp_emit(const tf_resp *r, int head_only, tf_write_fn w, void *ctx)
{
	/* Headers are bounded: the only variable parts are the ETag, the Allow
	 * list and a Location that is at most TF_LOCATION_MAX. */
	char head[TF_LOCATION_MAX + 512], num[64];
	size_t used = 0;
	int status = r->status ? r->status : 500;
	int has_body = status != 204 && status != 304 && r->body != NULL;
	int fail = 0;

	snprintf(num, sizeof num, "%d %s", status, tf_http_reason(status));
	fail |= put_header(head, sizeof head, &used, "Status", num);
	if (has_body)
		fail |= put_header(head, sizeof head, &used, "Content-Type",
		                   r->content_type ? r->content_type
		                                   : "application/json; charset=utf-8");
	/* Task status changes under the client: caches must always ask (the
	 * ETag makes asking cheap). */
	fail |= put_header(head, sizeof head, &used, "Cache-Control", "no-store");
	fail |= put_header(head, sizeof head, &used, "X-Content-Type-Options", "nosniff");
	if (r->etag[0])
		fail |= put_header(head, sizeof head, &used, "ETag", r->etag);
	if (r->last_modified[0])
		fail |= put_header(head, sizeof head, &used, "Last-Modified", r->last_modified);
	if (r->allow[0])
		fail |= put_header(head, sizeof head, &used, "Allow", r->allow);
	if (r->location[0])
		fail |= put_header(head, sizeof head, &used, "Location", r->location);
	if (r->www_authenticate)
		fail |= put_header(head, sizeof head, &used, "WWW-Authenticate",
		                   r->www_authenticate == 2 ? "Basic realm=\"threatfeed\""
		                                            : "Bearer realm=\"threatfeed\"");
	if (r->extra[0] && used + strlen(r->extra) < sizeof head) {
		memcpy(head + used, r->extra, strlen(r->extra));
		used += strlen(r->extra);
	}
	if (has_body) {
		snprintf(num, sizeof num, "%llu", (unsigned long long)r->len);
		fail |= put_header(head, sizeof head, &used, "Content-Length", num);
	}
	if (fail || used + 2 >= sizeof head)
		return -1;
	memcpy(head + used, "\r\n", 2);
	used += 2;
	if (w(ctx, head, used))
		return -1;
	if (has_body && !head_only && r->len && w(ctx, r->body, r->len))
		return -1;
	return 0;
}

int tf_resp_stream_begin(tf_resp *r, const char *content_type)
{
	char head[512];
	size_t used = 0;
	int fail = 0;

	r->status = 200;
	r->streamed = 1;
	fail |= put_header(head, sizeof head, &used, "Status", "200 OK");
	fail |= put_header(head, sizeof head, &used, "Content-Type", content_type);
	fail |= put_header(head, sizeof head, &used, "Cache-Control", "no-store");
	fail |= put_header(head, sizeof head, &used, "X-Content-Type-Options", "nosniff");
	if (r->etag[0])
		fail |= put_header(head, sizeof head, &used, "ETag", r->etag);
	if (r->last_modified[0])
		fail |= put_header(head, sizeof head, &used, "Last-Modified", r->last_modified);
	if (r->extra[0] && used + strlen(r->extra) < sizeof head) {
		memcpy(head + used, r->extra, strlen(r->extra));
		used += strlen(r->extra);
	}
	if (fail || used + 2 >= sizeof head) {
		r->stream_failed = 1;
		return -1;
	}
	memcpy(head + used, "\r\n", 2);
	used += 2;
	if (!r->wr || r->wr(r->wctx, head, used)) {
		r->stream_failed = 1;
		return -1;
	}
	return 0;
}

int tf_resp_stream(tf_resp *r, const char *buf, size_t len)
{
	if (r->head_only || !len)
		return 0;
	if (r->stream_failed || r->wr(r->wctx, buf, len)) {
		r->stream_failed = 1;
		return -1;
	}
	return 0;
}
