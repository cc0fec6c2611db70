#include "request.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "json.h"
#include "util.h"

void tf_req_init(tf_req *r, char **envp)
{
	memset(r, 0, sizeof *r);
	r->envp = envp;
	r->auth = "none";
	r->method_name = "";
}

void tf_req_free(tf_req *r)
{
	free(r->body);
	r->body = NULL;
	json_object_put(r->json);
	r->json = NULL;
}

const char *tf_req_env(const tf_req *r, const char *name)
{
	size_t n = strlen(name);

	if (!r->envp)
		return NULL;
	for (char **e = r->envp; *e; e++)
		if (!strncmp(*e, name, n) && (*e)[n] == '=')
			return *e + n + 1;
	return NULL;
}

unsigned tf_method_bit(const char *name)
{
	static const struct { const char *name; unsigned bit; } methods[] = {
		{"GET", TF_M_GET},       {"HEAD", TF_M_HEAD},     {"POST", TF_M_POST},
		{"PUT", TF_M_PUT},       {"PATCH", TF_M_PATCH},   {"DELETE", TF_M_DELETE},
		{"OPTIONS", TF_M_OPTIONS},
	};
	for (size_t i = 0; i < sizeof methods / sizeof *methods; i++)
		if (!strcmp(name, methods[i].name))   /* methods are case-sensitive (RFC 9110 §9.1) */
			return methods[i].bit;
	return TF_M_OTHER;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Forward only, and out never runs ahead of src: decoding in place is safe. */
int tf_pct_decode(const char *src, size_t n, char *out, size_t outsz, int plus_is_space,
                  size_t *outlen)
{
	size_t i = 0, j = 0;

	if (!outsz)
		return TF_ELIMIT;
	while (i < n) {
		int c = (unsigned char)src[i];
		if (c == '%') {
			int hi, lo;
			if (i + 2 >= n)   /* needs two hex digits */
				return TF_EINVAL;
			hi = hexval((unsigned char)src[i + 1]);
			lo = hexval((unsigned char)src[i + 2]);
			if (hi < 0 || lo < 0)
				return TF_EINVAL;
			c = hi * 16 + lo;
			if (c == 0)   /* an encoded NUL would cut strings short later */
				return TF_EINVAL;
			i += 3;
		} else {
			if (c == '+' && plus_is_space)
				c = ' ';
			else if (c == 0)
				return TF_EINVAL;
			i++;
		}
		if (j + 1 >= outsz)
			return TF_ELIMIT;
		out[j++] = (char)c;
	}
	out[j] = '\0';
	if (outlen)
		*outlen = j;
	return TF_OK;
}

/* Raw URIs reach us from the web server; control bytes and spaces would be
 * an attack on our headers (Location) or logs, never a real client. */
static int clean_raw(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			return 0;
	return 1;
}

/* Splits the raw path into segments, decoding each exactly once (so "%2F"
 * stays inside its segment and "%252e%252e" stays literal), finds the first
 * "api" segment, keeps the raw prefix before it and the decoded segments from
 * it on. A trailing slash is optional (docs/SPEC.md §2): the final empty segment is
 * dropped. */
static int parse_path(tf_req *r, const char *raw, size_t n, tf_resp *resp)
{
	char *out = r->pathbuf;
	size_t room = sizeof r->pathbuf, route_len = 0, dlen;
	const char *p, *end = raw + n;
	int api = 0;

	if (n == 0 || raw[0] != '/')
		return tf_resp_error(resp, 400, "invalid_path", "request path must start with '/'");
	if (n > 2 * TF_MAX_PATH)
		return tf_resp_error(resp, 400, "invalid_path", "request path too long (limit %d bytes)",
		                     TF_MAX_PATH);
	if (!clean_raw(raw, n))
		return tf_resp_error(resp, 400, "invalid_path", "request path has invalid characters");
	for (p = raw + 1;;) {
		const char *slash = memchr(p, '/', (size_t)(end - p));
		const char *send = slash ? slash : end;

		if (send == p) {
			if (!slash)
				break;          /* the optional trailing slash */
			return tf_resp_error(resp, 400, "invalid_path", "empty segment in request path");
		}
		if (tf_pct_decode(p, (size_t)(send - p), out, room, 0, &dlen))
			return tf_resp_error(resp, 400, "invalid_path",
			                     "invalid percent-encoding in request path");
		if (!strcmp(out, ".") || !strcmp(out, ".."))
			return tf_resp_error(resp, 400, "invalid_path", "dot segment in request path");
		if (!api && (!strcmp(out, "api") || !strcmp(out, "taxii2"))) {
			r->taxii = !strcmp(out, "taxii2");
			size_t plen = (size_t)(p - 1 - raw);
			if (plen > TF_MAX_PATH)
				return tf_resp_error(resp, 400, "invalid_path", "mount prefix too long");
			memcpy(r->prefix, raw, plen);
			r->prefix[plen] = '\0';
			api = 1;
		}
		if (api) {
			if (r->nseg < TF_MAX_SEGMENTS)
				r->seg[r->nseg++] = out;
			else
				r->too_deep = 1;
			route_len += 1 + dlen;
			out += dlen + 1;
			room -= dlen + 1;
		}
		if (!slash)
			break;
		p = slash + 1;
	}
	if (route_len > TF_MAX_PATH)
		return tf_resp_error(resp, 400, "invalid_path", "request path too long (limit %d bytes)",
		                     TF_MAX_PATH);
	return 0;
}

static int add_param(tf_req *r, char *name, char *value, tf_resp *resp)
{
	size_t nl = strlen(name), vl = strlen(value);

	if (tf_pct_decode(name, nl, name, nl + 1, 1, NULL) ||
	    tf_pct_decode(value, vl, value, vl + 1, 1, NULL))
		return tf_resp_error(resp, 400, "invalid_query",
		                     "invalid percent-encoding in query string");
	if (!*name)
		return tf_resp_error(resp, 400, "invalid_query", "query parameter without a name");
	for (size_t i = 0; i < r->nquery; i++)
		if (!strcmp(r->query[i].name, name))
			return tf_resp_error(resp, 400, "invalid_query",
			                     "query parameter given twice");
	if (r->nquery == TF_MAX_QUERY_PARAMS)
		return tf_resp_error(resp, 400, "invalid_query",
		                     "too many query parameters (limit %d)", TF_MAX_QUERY_PARAMS);
	r->query[r->nquery].name = name;
	r->query[r->nquery].value = value;
	r->nquery++;
	return 0;
}

static int parse_query(tf_req *r, const char *q, size_t n, tf_resp *resp)
{
	char *p;

	if (n > TF_MAX_QUERY)
		return tf_resp_error(resp, 400, "invalid_query", "query string too long (limit %d bytes)",
		                     TF_MAX_QUERY);
	if (!clean_raw(q, n))
		return tf_resp_error(resp, 400, "invalid_query", "query string has invalid characters");
	memcpy(r->qbuf, q, n);
	r->qbuf[n] = '\0';
	for (p = r->qbuf; p;) {
		char *amp = strchr(p, '&'), *eq;
		if (amp)
			*amp = '\0';
		if (*p) {       /* "a=1&&b=2": empty pieces carry nothing */
			if ((eq = strchr(p, '=')))
				*eq = '\0';
			if (add_param(r, p, eq ? eq + 1 : p + strlen(p), resp))
				return -1;
		}
		p = amp ? amp + 1 : NULL;
	}
	return 0;
}

int tf_req_parse(tf_req *r, tf_resp *resp)
{
	const char *m = tf_req_env(r, "REQUEST_METHOD");
	const char *uri = tf_req_env(r, "REQUEST_URI");
	const char *qs = tf_req_env(r, "QUERY_STRING");
	const char *mark;
	char built[2 * TF_MAX_PATH + 2];
	size_t plen;

	if (!m || !*m)
		return tf_resp_error(resp, 400, "bad_request", "no request method");
	r->method_name = m;
	r->method = tf_method_bit(m);
	if (!uri || !*uri) {
		/* Plain CGI does not define REQUEST_URI: rebuild the path. */
		const char *sn = tf_req_env(r, "SCRIPT_NAME"), *pi = tf_req_env(r, "PATH_INFO");
		size_t len = (size_t)snprintf(built, sizeof built, "%s%s", sn ? sn : "", pi ? pi : "");
		if (len >= sizeof built)
			return tf_resp_error(resp, 400, "invalid_path",
			                     "request path too long (limit %d bytes)", TF_MAX_PATH);
		uri = built;
	}
	mark = strchr(uri, '?');
	plen = mark ? (size_t)(mark - uri) : strlen(uri);
	if (parse_path(r, uri, plen, resp))
		return -1;
	/* QUERY_STRING is the CGI standard; REQUEST_URI's tail is the fallback. */
	if (!qs)
		qs = mark ? mark + 1 : "";
	return parse_query(r, qs, strlen(qs), resp);
}

const tf_qparam *tf_req_query(const tf_req *r, const char *name)
{
	for (size_t i = 0; i < r->nquery; i++)
		if (!strcmp(r->query[i].name, name))
			return r->query[i].value[0] ? &r->query[i] : NULL;
	return NULL;
}

tf_req_paging tf_req_page(const tf_req *r)
{
	const tf_qparam *limit = tf_req_query(r, "limit");
	const tf_qparam *cursor = tf_req_query(r, "cursor");

	return (tf_req_paging){.limit = limit ? (int)limit->num : TF_DEFAULT_LIST_LIMIT,
	                       .cursor = cursor ? cursor->value : NULL};
}

static int equal_token(const char *s, size_t n, const char *word)
{
	return strlen(word) == n && !strncasecmp(s, word, n);
}

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

int tf_content_type_is_json(const char *ct)
{
	static const char json[] = "application/json";
	const char *p;

	if (!ct)
		return 0;
	p = skip_ws(ct);
	if (strncasecmp(p, json, sizeof json - 1))
		return 0;
	p = skip_ws(p + sizeof json - 1);
	/* RFC 9110 §8.3.1: type/subtype *( OWS ";" OWS parameter ) */
	while (*p) {
		const char *name, *val;
		size_t nlen, vlen;

		if (*p != ';')
			return 0;
		p = skip_ws(p + 1);
		if (!*p)
			break;
		name = p;
		while (*p && *p != '=' && *p != ';' && *p != ' ' && *p != '\t')
			p++;
		nlen = (size_t)(p - name);
		if (*p != '=')
			return 0;
		val = ++p;
		if (*p == '"') {
			const char *q = strchr(p + 1, '"');
			if (!q)
				return 0;
			val = p + 1;
			vlen = (size_t)(q - val);
			p = q + 1;
		} else {
			while (*p && *p != ';' && *p != ' ' && *p != '\t')
				p++;
			vlen = (size_t)(p - val);
		}
		/* JSON is UTF-8 (RFC 8259 §8.1): any other charset is not ours. */
		if (equal_token(name, nlen, "charset") && !equal_token(val, vlen, "utf-8"))
			return 0;
		p = skip_ws(p);
	}
	return 1;
}


static int read_fully(tf_read_fn rd, void *ctx, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		long n = rd(ctx, buf + got, len - got);
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

int tf_req_read_body(tf_req *r, tf_read_fn rd, void *ctx, tf_resp *resp)
{
	const char *cl = tf_req_env(r, "CONTENT_LENGTH");
	int64_t len = 0, max = r->max_body ? (int64_t)r->max_body : TF_MAX_BODY;
	char err[256];
	int rc;

	if (cl && *cl) {
		rc = tf_parse_i64(cl, 0, max, &len);
		if (rc == TF_EINVAL)
			return tf_resp_error(resp, 400, "invalid_content_length",
			                     "malformed Content-Length");
		if (rc)
			return tf_resp_error(resp, 413, "payload_too_large",
			                     "request body over %lld KiB", (long long)(max / 1024));
	}
	if (len == 0) {
		/* An empty write means "no fields" (docs/SPEC.md §2: consume needs no body). */
		if (!(r->json = json_object_new_object()))
			return tf_resp_fail(resp, TF_ENOMEM, NULL);
		return 0;
	}
	if (!tf_content_type_is_json(tf_req_env(r, "CONTENT_TYPE")))
		return tf_resp_error(resp, 415, "unsupported_media_type",
		                     "request body must be application/json");
	if (!(r->body = malloc((size_t)len + 1)))
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	if (read_fully(rd, ctx, r->body, (size_t)len))
		return tf_resp_error(resp, 400, "incomplete_body",
		                     "request body shorter than Content-Length");
	r->body[len] = '\0';
	r->body_len = (size_t)len;
	err[0] = '\0';
	rc = tf_json_parse(r->body, r->body_len, TF_MAX_JSON_DEPTH, &r->json, err, sizeof err);
	if (rc == TF_EINVAL)
		return tf_resp_error(resp, 400, "invalid_json", "%s", err[0] ? err : "invalid JSON");
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	if (!json_object_is_type(r->json, json_type_object))
		return tf_resp_error(resp, 400, "invalid_json", "request body must be a JSON object");
	return 0;
}
