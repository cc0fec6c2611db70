/* GET /api/metrics: the counters of lib/metrics.h in the Prometheus text
 * exposition format (version 0.0.4). One read snapshot of the store: a few
 * keys (one per feed), the run slots and the queue, the store's size. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "handlers.h"
#include "metrics.h"

#define CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

struct series {
	const char *labels; /* after feed="…": `,name="value"`, or "" */
	tf_mfeed field;
};

struct family {
	const char *name, *help;
	struct series s[TF_MUP__COUNT];
	int n;
};

/* Every per-feed counter, in the order the scrape shows them. */
static const struct family feed_families[] = {
	{"threatfeed_runs_total", "Runs that ended, by feed and final status.",
	 {{",status=\"completed\"", TF_MF_RUNS_COMPLETED},
	  {",status=\"failed\"", TF_MF_RUNS_FAILED},
	  {",status=\"stopped\"", TF_MF_RUNS_STOPPED},
	  {",status=\"cancelled\"", TF_MF_RUNS_CANCELLED}},
	 4},
	{"threatfeed_cancel_requests_total",
	 "Cancel requests recorded on runs, by feed and mode (a repeated request changes "
	 "nothing and is not counted).",
	 {{",mode=\"stop_now\"", TF_MF_CANCEL_STOP_NOW}, {",mode=\"cancel_job\"", TF_MF_CANCEL_JOB}},
	 2},
	{"threatfeed_worker_kills_total",
	 "Cancelled runs whose worker was killed after the grace period (cancel.forced), by feed.",
	 {{"", TF_MF_KILLS}},
	 1},
	{"threatfeed_rollback_records_total",
	 "Records restored by the rollbacks of cancel_job runs, by feed.",
	 {{"", TF_MF_ROLLED_BACK}},
	 1},
	{"threatfeed_pages_total", "Upstream pages runs processed, by feed.",
	 {{"", TF_MF_PAGES}},
	 1},
	{"threatfeed_objects_processed_total",
	 "Upstream objects (STIX objects, OTX indicators, VT verdicts) runs processed, by feed.",
	 {{"", TF_MF_OBJECTS}},
	 1},
	{"threatfeed_indicators_total",
	 "Records runs wrote, by feed and result (skipped: the stored version was as new).",
	 {{",result=\"created\"", TF_MF_IND_CREATED},
	  {",result=\"updated\"", TF_MF_IND_UPDATED},
	  {",result=\"skipped\"", TF_MF_IND_SKIPPED}},
	 3},
	{"threatfeed_upstream_requests_total",
	 "HTTP requests runs made upstream, by feed and answer: status class, 429 (rate "
	 "limited) apart from the other 4xx, error for no answer.",
	 {{",code=\"2xx\"", TF_MF_UP_2XX},
	  {",code=\"3xx\"", TF_MF_UP_3XX},
	  {",code=\"4xx\"", TF_MF_UP_4XX},
	  {",code=\"429\"", TF_MF_UP_429},
	  {",code=\"5xx\"", TF_MF_UP_5XX},
	  {",code=\"error\"", TF_MF_UP_ERROR}},
	 6},
	{"threatfeed_upstream_received_bytes_total",
	 "Response body bytes runs received from upstream, by feed.",
	 {{"", TF_MF_BYTES}},
	 1},
};

/* The text, appended to a growing buffer: a scrape writes a few lines per
 * feed, and stdio's formatting would cost more than the store reads. */
struct out {
	char *buf;
	size_t len, cap;
	int oom;
};

static void put(struct out *o, const char *s, size_t n)
{
	if (o->oom)
		return;
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 8192;
		char *b;
		while (cap < o->len + n)
			cap *= 2;
		if (!(b = realloc(o->buf, cap))) {
			o->oom = 1;
			return;
		}
		o->buf = b, o->cap = cap;
	}
	memcpy(o->buf + o->len, s, n);
	o->len += n;
}

static void put_str(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
	char d[20];
	int i = (int)sizeof d;
	do
		d[--i] = (char)('0' + v % 10);
	while ((v /= 10) && i > 0);
	put(o, d + i, sizeof d - (size_t)i);
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put_str(o, "# HELP "), put_str(o, name), put_str(o, " "), put_str(o, help);
	put_str(o, "\n# TYPE "), put_str(o, name), put_str(o, " "), put_str(o, type), put_str(o, "\n");
}

/* A label value as the text format wants it: \\ \" and newline escaped. */
static void label_value(struct out *o, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			put(o, "\\", 1);
		if (*s == '\n')
			put_str(o, "\\n");
		else
			put(o, s, 1);
	}
}

static void feed_counters(struct out *o, const tf_metrics_snapshot *s)
{
	for (size_t i = 0; i < sizeof feed_families / sizeof *feed_families; i++) {
		const struct family *fam = &feed_families[i];
		head(o, fam->name, "counter", fam->help);
		for (size_t j = 0; j < s->nfeeds; j++)
			for (int k = 0; k < fam->n; k++) {
				put_str(o, fam->name), put_str(o, "{feed=\"");
				label_value(o, s->feeds[j].id);
				put_str(o, "\""), put_str(o, fam->s[k].labels), put_str(o, "} ");
				put_u64(o, s->feeds[j].v[fam->s[k].field]);
				put_str(o, "\n");
			}
	}
}

/* name{mode="m"[,le="b"]} v */
static void hist_line(struct out *o, const char *suffix, const char *mode, const char *le,
                      const char *v)
{
	put_str(o, "threatfeed_cancel_duration_seconds"), put_str(o, suffix);
	put_str(o, "{mode=\""), put_str(o, mode), put_str(o, "\"");
	if (le)
		put_str(o, ",le=\""), put_str(o, le), put_str(o, "\"");
	put_str(o, "} "), put_str(o, v), put_str(o, "\n");
}

static void cancel_histogram(struct out *o, const tf_metrics_snapshot *s)
{
	static const char *const modes[2] = {"stop_now", "cancel_job"};
	const double *le = tf_metrics_cancel_bounds();
	char bound[32], num[32];

	head(o, "threatfeed_cancel_duration_seconds", "histogram",
	     "Seconds from a run's first cancel request to its terminal state, by the mode it "
	     "ended with.");
	for (int m = 0; m < 2; m++) {
		const tf_metrics_hist *h = &s->cancel[m];
		uint64_t cum = 0;
		for (int b = 0; b < TF_METRICS_NBUCKETS; b++) {
			cum += h->bucket[b];
			snprintf(bound, sizeof bound, "%g", le[b]);
			snprintf(num, sizeof num, "%llu", (unsigned long long)cum);
			hist_line(o, "_bucket", modes[m], bound, num);
		}
		snprintf(num, sizeof num, "%llu", (unsigned long long)h->count);
		hist_line(o, "_bucket", modes[m], "+Inf", num);
		snprintf(num, sizeof num, "%.6f", (double)h->sum_us / 1e6);
		hist_line(o, "_sum", modes[m], NULL, num);
		snprintf(num, sizeof num, "%llu", (unsigned long long)h->count);
		hist_line(o, "_count", modes[m], NULL, num);
	}
}

static void gauge(struct out *o, const char *name, const char *help, uint64_t v)
{
	head(o, name, "gauge", help);
	put_str(o, name), put_str(o, " ");
	put_u64(o, v);
	put_str(o, "\n");
}

static void render(struct out *o, const tf_metrics_snapshot *s, const char *backend)
{
	head(o, "threatfeed_build_info", "gauge",
	     "The handler's version and store backend (always 1).");
	put_str(o, "threatfeed_build_info{version=\"" TF_VERSION "\",backend=\"");
	label_value(o, backend);
	put_str(o, "\"} 1\n");
	gauge(o, "threatfeed_runs_active", "Runs whose processes hold a run slot now.",
	      (uint64_t)s->runs_active);
	gauge(o, "threatfeed_runs_queued", "Tasks waiting for a run slot now.",
	      (uint64_t)s->runs_queued);
	feed_counters(o, s);
	cancel_histogram(o, s);
	gauge(o, "threatfeed_store_size_bytes",
	      "Bytes the store takes (LMDB: pages in use; PostgreSQL: the tf_kv table with its "
	      "index and TOAST).",
	      s->store_bytes);
	if (s->has_map) {
		gauge(o, "threatfeed_store_map_size_bytes",
		      "LMDB map size now (it grows, doubling, when full).", s->map_bytes);
		gauge(o, "threatfeed_store_map_free_bytes",
		      "LMDB map bytes not in use: room before the map next grows.", s->map_free_bytes);
	}
}

int tf_h_metrics(tf_app *app, tf_req *req, tf_resp *resp)
{
	tf_metrics_snapshot snap;
	struct out o = {0};
	int rc;

	(void)req;
	if (tf_app_store(app, resp))
		return -1; /* 503 store_unavailable, already written */
	if ((rc = tf_metrics_read(app->st, &snap)))
		return tf_resp_fail(resp, rc, NULL);
	render(&o, &snap, tf_store_backend(app->st));
	tf_metrics_snapshot_free(&snap);
	if (o.oom) {
		free(o.buf);
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	}
	/* Scrapers never ask conditionally (Prometheus sends no If-None-Match),
	 * and hashing the text for an ETag would cost a fifth of the request. */
	resp->no_etag = 1;
	return tf_resp_text(resp, 200, o.buf, o.len, CONTENT_TYPE);
}
