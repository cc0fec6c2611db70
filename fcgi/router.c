#include "router.h"

#include <stdio.h>
#include <string.h>

#include "err.h"
#include "tf_limits.h"
#include "observable.h"
#include "util.h"


/* Roles (last field): reading is for viewers; starting, stopping and testing
 * runs for operators; feeds, history and the audit for admins (README
 * "Roles"). The check is the pipeline's (app.c), never a handler's.
 *
 * Order matters only between literal and parameter segments at the same
 * place; the reserved feed ids ("tasks", "task-status", "cancel-task") can
 * never match {feed}, so the task routes cannot be shadowed either way. */
static const tf_route routes[] = {
	{TF_M_GET, "/api/health", tf_h_health, "health", {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/api/metrics", tf_h_metrics, "metrics", {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/api/threat-feeds", tf_h_feed_list, "feed_list",
	 {{"limit", TF_Q_LIMIT}, {"cursor", TF_Q_CURSOR}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_POST, "/api/threat-feeds", tf_h_feed_create, "feed_create",
	 {{0}}, 0, 0, TF_ROLE_ADMIN},
	{TF_M_GET, "/api/threat-feeds/tasks", tf_h_task_list, "task_list",
	 {{"active", TF_Q_BOOL}, {"feed_id", TF_Q_FEED}, {"limit", TF_Q_LIMIT}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_DELETE, "/api/threat-feeds/tasks", tf_h_task_purge, "task_purge",
	 {{"finished_before", TF_Q_TIME}}, 0, 0, TF_ROLE_ADMIN},
	{TF_M_GET, "/api/threat-feeds/task-status/{task}", tf_h_task_status, "task_status",
	 {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_POST, "/api/threat-feeds/cancel-task/{task}", tf_h_task_cancel, "task_cancel",
	 {{0}}, 0, 0, TF_ROLE_OPERATOR},
	{TF_M_GET, "/api/threat-feeds/{feed}", tf_h_feed_read, "feed_read",
	 {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_PATCH, "/api/threat-feeds/{feed}", tf_h_feed_patch, "feed_patch",
	 {{0}}, 0, 0, TF_ROLE_ADMIN},
	{TF_M_DELETE, "/api/threat-feeds/{feed}", tf_h_feed_delete, "feed_delete",
	 {{0}}, 0, 0, TF_ROLE_ADMIN},
	{TF_M_POST, "/api/threat-feeds/{feed}/consume", tf_h_feed_consume, "feed_consume",
	 {{0}}, 0, 0, TF_ROLE_OPERATOR},
	{TF_M_POST, "/api/threat-feeds/{feed}/cancel_consumption", tf_h_feed_cancel, "feed_cancel",
	 {{0}}, 0, 0, TF_ROLE_OPERATOR},
	{TF_M_GET, "/api/threat-feeds/{feed}/indicators", tf_h_feed_indicators, "feed_indicators",
	 {{"limit", TF_Q_LIMIT}, {"cursor", TF_Q_CURSOR}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_POST, "/api/threat-feeds/{feed}/test_connection", tf_h_feed_test, "feed_test",
	 {{0}}, 0, 0, TF_ROLE_OPERATOR},
	{TF_M_GET, "/api/threat-feeds/{feed}/export", tf_h_feed_export, "feed_export",
	 {{"format", TF_Q_FORMAT}, {"type", TF_Q_KINDS}, {"limit", TF_Q_COUNT},
	  {"include_expired", TF_Q_BOOL}},
	 0, 1, TF_ROLE_VIEWER},
	{TF_M_GET, "/api/export", tf_h_export, "export",
	 {{"format", TF_Q_FORMAT}, {"type", TF_Q_KINDS}, {"limit", TF_Q_COUNT},
	  {"include_expired", TF_Q_BOOL}},
	 0, 1, TF_ROLE_VIEWER},
	{TF_M_GET, "/api/indicators", tf_h_indicators, "indicators",
	 {{"value", TF_Q_VALUE}, {"type", TF_Q_KINDS}, {"feed_id", TF_Q_FEED}, {"limit", TF_Q_LIMIT},
	  {"cursor", TF_Q_CURSOR}, {"include_expired", TF_Q_BOOL}, {"include_object", TF_Q_BOOL}},
	 0, 0, TF_ROLE_VIEWER},
	{TF_M_POST, "/api/indicators/lookup", tf_h_indicators_lookup, "indicators_lookup", {{0}},
	 TF_MAX_LOOKUP_BODY, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/api/audit", tf_h_audit, "audit", {{"limit", TF_Q_LIMIT}, {"cursor", TF_Q_CURSOR}},
	 0, 0, TF_ROLE_ADMIN},
	/* The TAXII 2.1 server (fcgi/h_taxii.c), read-only: one API root. */
	{TF_M_GET, "/taxii2", tf_h_taxii_discovery, "taxii_discovery", {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root", tf_h_taxii_root, "taxii_root", {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections", tf_h_taxii_collections, "taxii_collections", {{0}},
	 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections/{coll}", tf_h_taxii_collection, "taxii_collection",
	 {{0}}, 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections/{coll}/objects", tf_h_taxii_objects, "taxii_objects",
	 {{"added_after", TF_Q_TIME}, {"limit", TF_Q_PAGE}, {"next", TF_Q_CURSOR},
	  {"match[id]", TF_Q_VALUE}, {"match[type]", TF_Q_VALUE}, {"match[version]", TF_Q_VALUE},
	  {"match[spec_version]", TF_Q_VALUE}},
	 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections/{coll}/manifest", tf_h_taxii_manifest, "taxii_manifest",
	 {{"added_after", TF_Q_TIME}, {"limit", TF_Q_PAGE}, {"next", TF_Q_CURSOR},
	  {"match[id]", TF_Q_VALUE}, {"match[type]", TF_Q_VALUE}, {"match[version]", TF_Q_VALUE},
	  {"match[spec_version]", TF_Q_VALUE}},
	 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections/{coll}/objects/{obj}", tf_h_taxii_object, "taxii_object",
	 {{"added_after", TF_Q_TIME}, {"limit", TF_Q_PAGE}, {"next", TF_Q_CURSOR},
	  {"match[version]", TF_Q_VALUE}, {"match[spec_version]", TF_Q_VALUE}},
	 0, 0, TF_ROLE_VIEWER},
	{TF_M_GET, "/taxii2/root/collections/{coll}/objects/{obj}/versions", tf_h_taxii_versions,
	 "taxii_versions",
	 {{"added_after", TF_Q_TIME}, {"limit", TF_Q_PAGE}, {"next", TF_Q_CURSOR},
	  {"match[spec_version]", TF_Q_VALUE}},
	 0, 0, TF_ROLE_VIEWER},
};

const tf_route *tf_router_table(size_t *n)
{
	*n = sizeof routes / sizeof *routes;
	return routes;
}

/* HEAD is GET without the body (RFC 9110 §9.3.2). */
static unsigned with_head(unsigned methods)
{
	return methods & TF_M_GET ? methods | TF_M_HEAD : methods;
}

void tf_router_allow(unsigned methods, char *buf, size_t len)
{
	static const struct { unsigned bit; const char *name; } order[] = {
		{TF_M_GET, "GET"},     {TF_M_HEAD, "HEAD"},     {TF_M_POST, "POST"},
		{TF_M_PUT, "PUT"},     {TF_M_PATCH, "PATCH"},   {TF_M_DELETE, "DELETE"},
		{TF_M_OPTIONS, "OPTIONS"},
	};
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
		int n;
		if (!(methods & order[i].bit))
			continue;
		n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", order[i].name);
		if (n < 0 || (size_t)n >= len - used) {
			buf[used] = '\0';   /* whole names only */
			return;
		}
		used += (size_t)n;
	}
}

/* Path parameters found by match(). */
struct params {
	const char *feed, *task, *obj;
};

/* Does the pattern match req's segments? Path parameters must pass their
 * validator to match at all. */
static int match(const char *pat, const tf_req *req, struct params *pp)
{
	size_t i = 0;

	pp->feed = pp->task = pp->obj = NULL;
	while (*pat == '/') {
		const char *tok = ++pat, *s;
		size_t tlen;

		while (*pat && *pat != '/')
			pat++;
		tlen = (size_t)(pat - tok);
		if (i >= req->nseg)
			return 0;
		s = req->seg[i++];
		if (tlen == 6 && !memcmp(tok, "{feed}", 6)) {
			if (!tf_valid_feed_id(s))
				return 0;
			pp->feed = s;
		} else if (tlen == 6 && !memcmp(tok, "{task}", 6)) {
			if (!tf_valid_uuid(s))
				return 0;
			pp->task = s;
		} else if (tlen == 6 && !memcmp(tok, "{coll}", 6)) {
			if (!tf_valid_feed_id(s) && strcmp(s, TF_TAXII_ALL_COLLECTION))
				return 0;
			pp->feed = s;
		} else if (tlen == 5 && !memcmp(tok, "{obj}", 5)) {
			if (!tf_taxii_valid_id(s))
				return 0;
			pp->obj = s;
		} else if (strlen(s) != tlen || memcmp(s, tok, tlen)) {
			return 0;
		}
	}
	return i == req->nseg;
}

const tf_route *tf_router_peek(const tf_req *req)
{
	for (size_t i = 0; req->nseg && !req->too_deep && i < sizeof routes / sizeof *routes; i++) {
		struct params pp;
		if ((with_head(routes[i].methods) & req->method) && match(routes[i].pattern, req, &pp))
			return &routes[i];
	}
	return NULL;
}

const tf_route *tf_router_match(tf_req *req, tf_resp *resp)
{
	unsigned allowed = 0;

	if (req->nseg && !req->too_deep) {
		for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
			struct params pp;
			unsigned m = with_head(routes[i].methods);

			if (!match(routes[i].pattern, req, &pp))
				continue;
			allowed |= m;
			if (m & req->method) {
				req->feed_id = pp.feed;
				req->task_id = pp.task;
				req->obj_id = pp.obj;
				return &routes[i];
			}
		}
	}
	if (allowed) {
		tf_router_allow(allowed, resp->allow, sizeof resp->allow);
		tf_resp_error(resp, 405, "method_not_allowed", "method %s not allowed here (allowed: %s)",
		              req->method == TF_M_OTHER ? "used" : req->method_name, resp->allow);
		return NULL;
	}
	tf_resp_error(resp, 404, "not_found", "no such resource");
	return NULL;
}

static int printable_token(const char *s, size_t max)
{
	size_t n = 0;
	for (; *s; s++, n++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f || n >= max)
			return 0;
	return 1;
}

int tf_router_kinds(const char *list, unsigned *kinds)
{
	static const struct { const char *name; unsigned bits; } aliases[] = {
		{"ip", 1u << TF_OBS_IPV4 | 1u << TF_OBS_IPV6},
		{"ipv4", 1u << TF_OBS_IPV4},
		{"ipv6", 1u << TF_OBS_IPV6},
		{"domain", 1u << TF_OBS_DOMAIN},
		{"url", 1u << TF_OBS_URL},
		{"email", 1u << TF_OBS_EMAIL},
		{"md5", 1u << TF_OBS_MD5},
		{"sha1", 1u << TF_OBS_SHA1},
		{"sha256", 1u << TF_OBS_SHA256},
		{"sha512", 1u << TF_OBS_SHA512},
		{"hash", 1u << TF_OBS_MD5 | 1u << TF_OBS_SHA1 | 1u << TF_OBS_SHA256 |
		         1u << TF_OBS_SHA512},
	};
	char name[64];

	*kinds = 0;
	for (const char *p = list; *p;) {
		size_t n = strcspn(p, ",");
		unsigned bits = 0;
		int k;

		if (!n || n >= sizeof name)
			return TF_EINVAL;
		memcpy(name, p, n);
		name[n] = '\0';
		if ((k = tf_obs_kind_of(name)))
			bits = 1u << k;
		for (size_t i = 0; !bits && i < sizeof aliases / sizeof *aliases; i++)
			if (!strcmp(name, aliases[i].name))
				bits = aliases[i].bits;
		if (!bits)
			return TF_EINVAL;
		*kinds |= bits;
		p += n;
		if (*p == ',' && !*++p)
			return TF_EINVAL;
	}
	return *kinds ? TF_OK : TF_EINVAL;
}

/* One validator per type; the message names the parameter, never echoes its
 * value. */
static int check_param(const tf_qspec *q, tf_qparam *p, tf_resp *resp)
{
	const char *v = p->value;

	switch (q->type) {
	case TF_Q_BOOL:
		if (!strcmp(v, "1") || !strcmp(v, "true"))
			p->num = 1;
		else if (!strcmp(v, "0") || !strcmp(v, "false"))
			p->num = 0;
		else
			return tf_resp_error(resp, 400, "invalid_parameter", "%s: must be 1 or 0",
			                     q->name);
		return 0;
	case TF_Q_LIMIT:
		if (tf_parse_i64(v, 1, TF_MAX_LIST_LIMIT, &p->num))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: must be an integer from 1 to %d", q->name,
			                     TF_MAX_LIST_LIMIT);
		return 0;
	case TF_Q_FEED:
		if (!tf_valid_feed_id(v))
			return tf_resp_error(resp, 400, "invalid_parameter", "%s: not a valid feed id",
			                     q->name);
		return 0;
	case TF_Q_TIME:
		if (tf_time_parse(v, &p->num))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: must be an RFC 3339 time such as 2026-01-31T00:00:00Z",
			                     q->name);
		return 0;
	case TF_Q_CURSOR:
		if (!printable_token(v, TF_MAX_CURSOR))
			return tf_resp_error(resp, 400, "invalid_parameter", "%s: not a valid cursor",
			                     q->name);
		return 0;
	case TF_Q_VALUE:
		if (strlen(v) > TF_MAX_OBS_VALUE)
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: longer than %d bytes", q->name, TF_MAX_OBS_VALUE);
		return 0;
	case TF_Q_KINDS: {
		unsigned kinds;
		if (tf_router_kinds(v, &kinds))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: not a list of ipv4-addr, ipv6-addr, domain-name, url, "
			                     "email-addr, file:hashes.MD5|SHA-1|SHA-256|SHA-512 (or ip, "
			                     "ipv4, ipv6, domain, email, md5, sha1, sha256, sha512, hash)",
			                     q->name);
		p->num = kinds;
		return 0;
	}
	case TF_Q_FORMAT:
		if (!strcmp(v, "txt"))
			p->num = TF_FMT_TXT;
		else if (!strcmp(v, "csv"))
			p->num = TF_FMT_CSV;
		else if (!strcmp(v, "stix"))
			p->num = TF_FMT_STIX;
		else
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: must be txt, csv or stix", q->name);
		return 0;
	case TF_Q_PAGE:
		/* TAXII 2.1 §3.4: the server may return fewer; only a malformed
		 * limit is an error */
	{
		int rc = tf_parse_i64(v, 0, INT64_MAX, &p->num);
		if (rc == TF_EINVAL || (!rc && p->num < 1))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: must be a positive integer", q->name);
		if (rc || p->num > TF_MAX_TAXII_LIMIT) /* beyond int64 too */
			p->num = TF_MAX_TAXII_LIMIT;
		return 0;
	}
	case TF_Q_COUNT:
		if (tf_parse_i64(v, 1, TF_MAX_EXPORT_LIMIT, &p->num))
			return tf_resp_error(resp, 400, "invalid_parameter",
			                     "%s: must be an integer from 1 to %d", q->name,
			                     TF_MAX_EXPORT_LIMIT);
		return 0;
	}
	return tf_resp_fail(resp, TF_EINVAL, NULL);
}

int tf_router_check_query(const tf_route *rt, tf_req *req, tf_resp *resp)
{
	for (size_t i = 0; i < TF_ROUTE_MAX_QUERY && rt->query[i].name; i++) {
		for (size_t j = 0; j < req->nquery; j++) {
			tf_qparam *p = &req->query[j];
			/* Empty means absent, as in tf_req_query(): "?feed_id=" is "any". */
			if (!strcmp(p->name, rt->query[i].name) && p->value[0] &&
			    check_param(&rt->query[i], p, resp))
				return -1;
		}
	}
	return 0;
}
