/* Settings shared by both binaries: environment first (THREATFEED_DB,
 * THREATFEED_STATE_DIR, THREATFEED_WORKER), then the optional file named by
 * THREATFEED_CONF with `key = value` lines and `#` comments. */
#ifndef TF_CONFIG_H
#define TF_CONFIG_H

#include <stddef.h>

typedef struct tf_config {
	char state_dir[512];
	char db_path[512];
	char worker[512];          /* the `threatfeed` binary runs are spawned with */
	char runner[512];          /* `threatfeed-worker`, beside it: the curl side */
	char api_token[256];       /* empty: no token required */
	char metrics_token[256];   /* also admits GET /api/metrics; empty: none */
	char export_token[256];    /* reads exports only, also as ?token= (empty: none) */
	int trust_remote_user;
	int max_concurrent_runs;
	int grace_period_s;
	int history_keep;          /* finished tasks kept per feed by gc */
	int log_debug;
	/* Who starts runs: 0 — the process that queued one forks it (one host);
	 * 1 — `threatfeed agent`s on the worker hosts, woken by the store; the
	 * handler and the CLI only enqueue. `runs = local|agents` in the file;
	 * agents by default on a PostgreSQL store. */
	int run_by_agents;
	/* Run-end webhook for every feed without its own options.webhook_url
	 * (worker/webhook.h); empty: none. */
	char webhook_url[1024];
	char webhook_secret[257];
	int webhook_attempts;
	int webhook_timeout_s;
} tf_config;

/* Fills cfg from defaults, the environment and the config file. argv0 is used
 * to find `threatfeed` beside the running binary when THREATFEED_WORKER is
 * unset. On TF_EINVAL, err (if not NULL) holds a one-line reason. */
int tf_config_load(tf_config *cfg, const char *argv0, char *err, size_t errlen);

#endif
