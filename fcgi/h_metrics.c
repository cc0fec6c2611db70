/* GET /api/metrics: the counters of lib/metrics.h in the Prometheus text
 * exposition format (version 0.0.4). One read snapshot of the store: a few
 * keys (one per feed), the run slots and the queue, the store's size. */
#include <stdio.h>
#include <stdlib.h>

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

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value as the text format wants it: \ " and newline escaped. */
static void label_value(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void feed_counters(FILE *f, const tf_metrics_snapshot *s)
{
	for (size_t i = 0; i < sizeof feed_families / sizeof *feed_families; i++) {
		const struct family *fam = &feed_families[i];
		head(f, fam->name, "counter", fam->help);
		for (size_t j = 0; j < s->nfeeds; j++)
			for (int k = 0; k < fam->n; k++) {
				fprintf(f, "%s{feed=\"", fam->name);
				label_value(f, s->feeds[j].id);
				fprintf(f, "\"%s} %llu\n", fam->s[k].labels,
				        (unsigned long long)s->feeds[j].v[fam->s[k].field]);
			}
	}
}

static void cancel_histogram(FILE *f, const tf_metrics_snapshot *s)
{
	static const char *const modes[2] = {"stop_now", "cancel_job"};
	static const char name[] = "threatfeed_cancel_duration_seconds";
	const double *le = tf_metrics_cancel_bounds();

	head(f, name, "histogram",
	     "Seconds from a run's first cancel request to its terminal state, by the mode it "
	     "ended with.");
	for (int m = 0; m < 2; m++) {
		const tf_metrics_hist *h = &s->cancel[m];
		uint64_t cum = 0;
		for (int b = 0; b < TF_METRICS_NBUCKETS; b++) {
			cum += h->bucket[b];
			fprintf(f, "%s_bucket{mode=\"%s\",le=\"%g\"} %llu\n", name, modes[m], le[b],
			        (unsigned long long)cum);
		}
		fprintf(f, "%s_bucket{mode=\"%s\",le=\"+Inf\"} %llu\n", name, modes[m],
		        (unsigned long long)h->count);
		fprintf(f, "%s_sum{mode=\"%s\"} %.6f\n", name, modes[m], (double)h->sum_us / 1e6);
		fprintf(f, "%s_count{mode=\"%s\"} %llu\n", name, modes[m],
		        (unsigned long long)h->count);
	}
}

static void gauge(FILE *f, const char *name, const char *help, unsigned long long v)
{
	head(f, name, "gauge", help);
	fprintf(f, "%s %llu\n", name, v);
}

static void render(FILE *f, const tf_metrics_snapshot *s, const char *backend)
{
	head(f, "threatfeed_build_info", "gauge",
	     "The handler's version and store backend (always 1).");
	fprintf(f, "threatfeed_build_info{version=\"%s\",backend=\"%s\"} 1\n", TF_VERSION, backend);
	gauge(f, "threatfeed_runs_active", "Runs whose processes hold a run slot now.",
	      (unsigned long long)s->runs_active);
	gauge(f, "threatfeed_runs_queued", "Tasks waiting for a run slot now.",
	      (unsigned long long)s->runs_queued);
	feed_counters(f, s);
	cancel_histogram(f, s);
	gauge(f, "threatfeed_store_size_bytes",
	      "Bytes the store takes (LMDB: pages in use; PostgreSQL: the tf_kv table with its "
	      "index and TOAST).",
	      (unsigned long long)s->store_bytes);
	if (s->has_map) {
		gauge(f, "threatfeed_store_map_size_bytes",
		      "LMDB map size now (it grows, doubling, when full).",
		      (unsigned long long)s->map_bytes);
		gauge(f, "threatfeed_store_map_free_bytes",
		      "LMDB map bytes not in use: room before the map next grows.",
		      (unsigned long long)s->map_free_bytes);
	}
}

int tf_h_metrics(tf_app *app, tf_req *req, tf_resp *resp)
{
	tf_metrics_snapshot snap;
	char *text = NULL;
	size_t len = 0;
	FILE *f;
	int rc, bad;

	(void)req;
	if (tf_app_store(app, resp))
		return -1; /* 503 store_unavailable, already written */
	if ((rc = tf_metrics_read(app->st, &snap)))
		return tf_resp_fail(resp, rc, NULL);
	if (!(f = open_memstream(&text, &len))) {
		tf_metrics_snapshot_free(&snap);
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	}
	render(f, &snap, tf_store_backend(app->st));
	bad = ferror(f);
	bad |= fclose(f) != 0;
	tf_metrics_snapshot_free(&snap);
	if (bad) {
		free(text);
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	}
	return tf_resp_text(resp, 200, text, len, CONTENT_TYPE);
}
