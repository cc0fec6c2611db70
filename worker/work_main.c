/* `threatfeed-worker`: the part of threatfeed that needs libcurl — a run's
 * worker process (`work TASK`, started by the supervisor) and the connection
 * probe (`test-connection FEED`). Kept apart from the `threatfeed` CLI so the
 * CLI and every supervisor start without loading libcurl and its libraries. */
#include "config.h"
#include "err.h"
#include "feed.h"
#include "json.h"
#include "log.h"
#include "probe.h"
#include "run.h"
#include "store.h"
#include "util.h"
#include "webhook.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct feed_ctx {
	const char *id;
	json_object *feed;
};

static int load_feed(tf_txn *txn, void *vctx)
{
	struct feed_ctx *fc = vctx;
	return tf_feed_load(txn, fc->id, &fc->feed);
}

/* Prints {"ok":bool,"detail":"…"} (with "api_root", string or null, for a
 * taxii21 feed) and exits 0 whatever the upstream said; the handler relays
 * that line (docs/SPEC.md §2 test_connection). */
static int test_connection(const tf_config *cfg, const char *feed_id)
{
	struct feed_ctx fc = {.id = feed_id};
	tf_feed_net net;
	json_object *o;
	tf_store *st;
	char detail[TF_PROBE_DETAIL], err[256], *api_root;
	const char *text, *type;
	size_t n;
	int rc, ok;

	if (!tf_valid_feed_id(feed_id))
		return fprintf(stderr, "usage: threatfeed test-connection FEED\n"), 2;
	if ((rc = tf_store_open(&st, cfg->db_path, tf_config_map_bytes(cfg), err, sizeof err)))
		return fprintf(stderr, "threatfeed: %s\n", err), 1;
	rc = tf_store_view(st, load_feed, &fc);
	tf_store_close(st);
	if (rc)
		return fprintf(stderr, "threatfeed: %s: %s\n", feed_id, tf_strerror(rc)), rc == TF_ENOTFOUND ? 3 : 1;
	tf_feed_net_of(fc.feed, cfg->proxy, cfg->no_proxy, &net);
	net.upstream = &cfg->upstream; /* the same check as the run's */
	ok = tf_probe_feed(fc.feed, &net, detail, sizeof detail, &api_root);
	type = tf_json_str(fc.feed, "type");
	if (!(o = json_object_new_object())) {
		free(api_root);
		json_object_put(fc.feed);
		return 1;
	}
	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	json_object_object_add(o, "detail", json_object_new_string(detail));
	if (type && !strcmp(type, "taxii21"))
		json_object_object_add(o, "api_root", api_root ? json_object_new_string(api_root) : NULL);
	free(api_root);
	json_object_put(fc.feed);
	text = tf_json_text(o, &n);
	fwrite(text, 1, n, stdout);
	fputc('\n', stdout);
	json_object_put(o);
	return 0;
}

int main(int argc, char **argv)
{
	tf_config cfg;
	char err[256];
	int rc;

	int detached;

	if (argc != 3 || (strcmp(argv[1], "work") && strcmp(argv[1], "test-connection") &&
	                  strcmp(argv[1], "notify"))) {
		fprintf(stderr, "usage: threatfeed-worker work TASK | notify TASK | test-connection FEED\n"
		                "(started by `threatfeed`; see threatfeed --help)\n");
		return 2;
	}
	/* A run's processes (work, and notify after it) log to syslog unless the
	 * run log is set; test-connection answers on the terminal. */
	detached = !strcmp(argv[1], "work") || !strcmp(argv[1], "notify");
	tf_log_init(!strcmp(argv[1], "work")     ? "threatfeed-work"
	            : !strcmp(argv[1], "notify") ? "threatfeed-webhook"
	                                         : "threatfeed",
	            !detached || getenv("THREATFEED_RUN_LOG") != NULL);
	if (tf_config_load(&cfg, argv[0], err, sizeof err)) {
		fprintf(stderr, "threatfeed: %s\n", err);
		return 1;
	}
	if (cfg.log_debug)
		tf_log_set_level(TF_LOG_DEBUG);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (!strcmp(argv[1], "notify"))
		rc = tf_webhook_notify_main(&cfg, argv[2]);
	else
		rc = strcmp(argv[1], "work") ? test_connection(&cfg, argv[2]) : tf_work_main(&cfg, argv[2]);
	curl_global_cleanup();
	return rc;
}
