/* Exports a device can poll (docs/SPEC.md §8):
 *
 *   GET /api/threat-feeds/{feed_id}/export?format=txt|csv|stix&type=&limit=&include_expired=
 *   GET /api/export?…   (every feed; a value several feeds hold is one line)
 *
 * One line (or STIX object) per value, by type then value (lib/index.h key
 * order), expired and revoked values left out unless asked. The body is
 * written while the index is walked, through a fixed buffer: memory does not
 * grow with the export. ETag and Last-Modified come from the index's state
 * (tf_index_state), read in the same snapshot as the body, so a device that
 * polls gets 304 until a run commits, a rollback ends, a feed changes or
 * an entry expires. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "handlers.h"
#include "index.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "router.h"
#include "util.h"

/* Bytes gathered before one write to the web server. */
#define OUT_BUF (64 * 1024)
/* Room a line may need beyond its value: csv columns, a STIX object's
 * other members with its feed ids (TF_MAX_HIT_SOURCES of them). */
#define OUT_LINE_MAX (TF_JSON_QUOTED_MAX(2 * TF_MAX_OBS_VALUE + 64) + \
                      TF_MAX_HIT_SOURCES * (TF_MAX_FEED_ID + 4) + 1024)

struct export_ctx {
	tf_app *app;
	tf_req *req;
	tf_resp *resp;
	const char *feed_id;
	int format, not_feed, failed;
	tf_index_filter f;
	int64_t limit, written;
	size_t used;
	char *buf;             /* OUT_BUF + OUT_LINE_MAX */
};

static const char *const content_types[] = {
	[TF_FMT_TXT] = "text/plain; charset=utf-8",
	[TF_FMT_CSV] = "text/csv; charset=utf-8; header=present",
	[TF_FMT_STIX] = "application/stix+json;version=2.1",
};

static int flush_out(struct export_ctx *c)
{
	int rc = c->used ? tf_resp_stream(c->resp, c->buf, c->used) : 0;

	c->used = 0;
	if (rc)
		c->failed = 1;
	return rc ? TF_ESYS : TF_OK;
}

static void put(struct export_ctx *c, const char *s, size_t n)
{
	memcpy(c->buf + c->used, s, n);
	c->used += n;
}

static void puts_(struct export_ctx *c, const char *s)
{
	put(c, s, strlen(s));
}

/* RFC 3339 with milliseconds (STIX 2.1 §3.2 timestamps of created/modified). */
static void put_time_ms(struct export_ctx *c, int64_t us)
{
	char ts[TF_TIME_LEN + 1];

	tf_time_format(us, ts, sizeof ts);
	/* "…:SS.ffffffZ" → "…:SS.fffZ" */
	memcpy(ts + TF_TIME_LEN - 4, "Z", 2);
	puts_(c, ts);
}

/* A CSV field (RFC 4180): quoted when it holds a comma or a quote. */
static void put_csv(struct export_ctx *c, const char *s)
{
	if (!strpbrk(s, ",\"")) {
		puts_(c, s);
		return;
	}
	put(c, "\"", 1);
	for (; *s; s++) {
		if (*s == '"')
			put(c, "\"", 1);
		put(c, s, 1);
	}
	put(c, "\"", 1);
}

struct span {
	int64_t first, last, until; /* until 0: some source has none */
};

static struct span span_of(const tf_index_hit *h)
{
	struct span s = {INT64_MAX, 0, 0};
	int all_until = 1;

	for (size_t i = 0; i < h->nsrc; i++) {
		const tf_index_source *src = &h->src[i];
		s.first = src->first_seen_us < s.first ? src->first_seen_us : s.first;
		s.last = src->last_seen_us > s.last ? src->last_seen_us : s.last;
		if (!src->valid_until_us)
			all_until = 0;
		else if (src->valid_until_us > s.until)
			s.until = src->valid_until_us;
	}
	if (!all_until)
		s.until = 0;
	if (s.first == INT64_MAX)
		s.first = 0;
	return s;
}

/* The feed ids of a hit, each once (sources come in feed order). */
static void put_feeds(struct export_ctx *c, const tf_index_hit *h, const char *sep,
                      const char *quote)
{
	const char *prev = NULL;

	for (size_t i = 0; i < h->nsrc; i++) {
		if (prev && !strcmp(prev, h->src[i].feed_id))
			continue;
		if (prev)
			puts_(c, sep);
		puts_(c, quote);
		puts_(c, h->src[i].feed_id);
		puts_(c, quote);
		prev = h->src[i].feed_id;
	}
}

static void line_csv(struct export_ctx *c, const tf_index_hit *h)
{
	struct span s = span_of(h);

	put_csv(c, h->value);
	put(c, ",", 1);
	puts_(c, tf_obs_name(h->kind));
	put(c, ",", 1);
	put_feeds(c, h, " ", "");
	put(c, ",", 1);
	if (s.first)
		put_time_ms(c, s.first);
	put(c, ",", 1);
	if (s.last)
		put_time_ms(c, s.last);
	put(c, ",", 1);
	if (s.until)
		put_time_ms(c, s.until);
	puts_(c, h->live ? ",false\r\n" : ",true\r\n");
}

/* A deterministic id for the value's indicator: the same value gets the same
 * id in every export. A name-based UUID, version 8 (RFC 9562 §5.8) since
 * the name is hashed with FNV-1a, not SHA-1. */
static void value_uuid(const tf_index_hit *h, char *out)
{
	unsigned char k = (unsigned char)h->kind;
	uint64_t a = tf_hash64_more(tf_hash64(&k, 1), h->value, strlen(h->value));
	uint64_t b = tf_hash64_more(a ^ 0x7468726561746665ULL, h->value, strlen(h->value));

	a = (a & ~0xf000ULL) | 0x8000ULL;                      /* version 8 */
	b = (b & 0x3fffffffffffffffULL) | 0x8000000000000000ULL; /* variant 10 */
	snprintf(out, TF_UUID_LEN + 1, "%08llx-%04llx-%04llx-%04llx-%012llx",
	         (unsigned long long)(a >> 32), (unsigned long long)((a >> 16) & 0xffff),
	         (unsigned long long)(a & 0xffff), (unsigned long long)(b >> 48),
	         (unsigned long long)(b & 0xffffffffffffULL));
}

/* [type:value = 'v'] with ' and \ escaped (STIX 2.1 §9.2 string literals). */
static void pattern(const tf_index_hit *h, char *out)
{
	const char *name = tf_obs_name(h->kind), *dot = strchr(name, '.');
	char *p = out;

	if (dot) /* file:hashes.SHA-256 → file:hashes.'SHA-256' */
		p += sprintf(p, "[%.*s'%s' = '", (int)(dot + 1 - name), name, dot + 1);
	else
		p += sprintf(p, "[%s:value = '", name);
	for (const char *v = h->value; *v; v++) {
		if (*v == '\'' || *v == '\\')
			*p++ = '\\';
		*p++ = *v;
	}
	strcpy(p, "']");
}

static void line_stix(struct export_ctx *c, const tf_index_hit *h)
{
	char id[TF_UUID_LEN + 1], pat[2 * TF_MAX_OBS_VALUE + 64];
	char quoted[TF_JSON_QUOTED_MAX(sizeof pat)];
	struct span s = span_of(h);

	value_uuid(h, id);
	pattern(h, pat);
	puts_(c, c->written ? ",\n" : "\n");
	puts_(c, "{\"type\":\"indicator\",\"spec_version\":\"2.1\",\"id\":\"indicator--");
	puts_(c, id);
	puts_(c, "\",\"created\":\"");
	put_time_ms(c, s.first);
	puts_(c, "\",\"modified\":\"");
	put_time_ms(c, s.last);
	puts_(c, "\",\"pattern_type\":\"stix\",\"pattern\":");
	put(c, quoted, tf_json_quote(quoted, pat));
	puts_(c, ",\"valid_from\":\"");
	put_time_ms(c, s.first);
	puts_(c, "\"");
	if (s.until) {
		puts_(c, ",\"valid_until\":\"");
		put_time_ms(c, s.until);
		puts_(c, "\"");
	}
	if (!h->live)
		puts_(c, ",\"x_threatfeed_expired\":true");
	puts_(c, ",\"x_threatfeed_feeds\":[");
	put_feeds(c, h, ",", "\"");
	puts_(c, "]}");
}

static int line(const tf_index_hit *h, void *vctx)
{
	struct export_ctx *c = vctx;

	if (c->limit && c->written >= c->limit)
		return 1;
	switch (c->format) {
	case TF_FMT_CSV: line_csv(c, h); break;
	case TF_FMT_STIX: line_stix(c, h); break;
	default:
		puts_(c, h->value);
		put(c, "\n", 1);
		break;
	}
	c->written++;
	return c->used >= OUT_BUF ? flush_out(c) : TF_OK;
}

/* The ETag: the index's state for the scope and every parameter that
 * shapes the body. */
static void etag_of(struct export_ctx *c, uint64_t state, char *out, size_t len)
{
	int64_t params[4] = {c->format, (int64_t)c->f.kinds, c->limit, c->f.include_expired};
	uint64_t h = tf_hash64_more(state, params, sizeof params);

	h = tf_hash64_more(h, c->feed_id ? c->feed_id : "", c->feed_id ? strlen(c->feed_id) + 1 : 1);
	snprintf(out, len, "\"%016llx\"", (unsigned long long)h);
}

/* 304 when the client has this state (If-None-Match first, RFC 9110 §13.2.2). */
static int not_modified(struct export_ctx *c, int64_t last_modified)
{
	const char *inm = tf_req_env(c->req, "HTTP_IF_NONE_MATCH");

	if (inm && *inm)
		return tf_etag_matches(inm, c->resp->etag);
	return tf_not_modified_since(tf_req_env(c->req, "HTTP_IF_MODIFIED_SINCE"), last_modified);
}

static void prologue(struct export_ctx *c, uint64_t state)
{
	char id[TF_UUID_LEN + 1];

	if (c->format == TF_FMT_CSV) {
		puts_(c, "value,type,feeds,first_seen,last_seen,valid_until,expired\r\n");
	} else if (c->format == TF_FMT_STIX) {
		/* the bundle's id follows the content: equal ETags, equal bytes */
		snprintf(id, sizeof id, "%08llx-%04llx-8%03llx-a%03llx-%012llx",
		         (unsigned long long)(state >> 32), (unsigned long long)((state >> 16) & 0xffff),
		         (unsigned long long)(state & 0xfff), (unsigned long long)((state >> 52) & 0xfff),
		         (unsigned long long)(state & 0xffffffffffffULL));
		puts_(c, "{\"type\":\"bundle\",\"id\":\"bundle--");
		puts_(c, id);
		puts_(c, "\",\"objects\":[");
	}
}

static int export_txn(tf_txn *txn, void *vctx)
{
	struct export_ctx *c = vctx;
	tf_index_scope *sc;
	uint64_t state;
	int64_t lm;
	int rc;

	if (c->resp->streamed) /* a replayed view: the answer went out already */
		return TF_OK;
	rc = tf_index_scope_load(txn, c->feed_id, tf_now_us(), &sc);
	if (rc == TF_ENOTFOUND)
		c->not_feed = 1;
	if (rc)
		return rc;
	if ((rc = tf_index_state(txn, sc, &state, &lm)))
		goto out;
	etag_of(c, state, c->resp->etag, sizeof c->resp->etag);
	tf_resp_last_modified(c->resp, lm);
	if (not_modified(c, lm)) {
		tf_resp_empty(c->resp, 304);
		goto out;
	}
	/* From here the answer is on its way: a failure can only cut it short. */
	if (tf_resp_stream_begin(c->resp, content_types[c->format]) || c->resp->head_only)
		goto out;
	prologue(c, tf_hash64_more(state, c->resp->etag, strlen(c->resp->etag)));
	rc = tf_index_walk(txn, sc, &c->f, NULL, 0, line, c);
	if (!rc && c->format == TF_FMT_STIX)
		puts_(c, c->written ? "\n]}\n" : "]}\n");
	if (!rc)
		rc = flush_out(c);
	if (rc && !c->failed)
		tf_err("export: %s after %lld lines: the answer was cut short", tf_strerror(rc),
		       (long long)c->written);
	rc = TF_OK; /* the head went out: nothing else to answer */
out:
	tf_index_scope_free(sc);
	return rc;
}

static int run_export(tf_app *app, tf_req *req, tf_resp *resp, const char *feed_id)
{
	const tf_qparam *format = tf_req_query(req, "format"), *type = tf_req_query(req, "type");
	const tf_qparam *limit = tf_req_query(req, "limit");
	const tf_qparam *expired = tf_req_query(req, "include_expired");
	struct export_ctx c = {.app = app, .req = req, .resp = resp, .feed_id = feed_id};
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	c.format = format ? (int)format->num : TF_FMT_TXT;
	c.f.kinds = type ? (unsigned)type->num : 0;
	c.f.include_expired = expired && expired->num;
	c.limit = limit ? limit->num : 0;
	if (!(c.buf = malloc(OUT_BUF + OUT_LINE_MAX)))
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	rc = tf_store_view(app->st, export_txn, &c);
	free(c.buf);
	if (resp->streamed || resp->status == 304)
		return 0;
	if (c.not_feed)
		return tf_resp_error(resp, 404, "not_found", "no such feed");
	return tf_resp_fail(resp, rc ? rc : TF_ESYS, NULL);
}

int tf_h_feed_export(tf_app *app, tf_req *req, tf_resp *resp)
{
	return run_export(app, req, resp, req->feed_id);
}

int tf_h_export(tf_app *app, tf_req *req, tf_resp *resp)
{
	return run_export(app, req, resp, NULL);
}
