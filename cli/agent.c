#include "agent.h"
#include "err.h"
#include "tf_limits.h"
#include "log.h"
#include "runctl.h"
#include "store.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
	(void)sig;
	stopping = 1;
}

/* Ends lost runs, then starts what the free slots allow. Every error is
 * logged and the next sweep tries again: an agent outlives a store outage. */
static void sweep(const tf_config *cfg, tf_store *st)
{
	int reaped = 0, started = 0, rc;

	if ((rc = tf_runctl_reap_all(st, &reaped)))
		tf_warn("agent: checking runs: %s", tf_strerror(rc));
	if ((rc = tf_runctl_drain(cfg, st, NULL, &started)))
		tf_warn("agent: starting queued runs: %s", tf_strerror(rc));
	if (reaped || started)
		tf_info("agent: %d lost run(s) ended, %d supervisor(s) started", reaped, started);
}

int tf_agent_main(const tf_config *cfg)
{
	struct sigaction sa = {0};
	tf_store *st;
	char err[256];
	int fd = -1, rc;

	sa.sa_handler = on_stop; /* no SA_RESTART: poll() returns at once */
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (tf_store_open(&st, cfg->db_path, tf_config_map_bytes(cfg), err, sizeof err)) {
		tf_err("agent: %s", err);
		return 1;
	}
	/* On one host (LMDB) there is nothing to listen to: consumes start their
	 * own runs and the agent only sweeps. */
	if (tf_store_shared(st) && (rc = tf_store_listen(st, TF_CHAN_QUEUE, &fd)))
		tf_warn("agent: cannot listen for queued runs (%s): sweeping every %d ms",
		        tf_strerror(rc), TF_AGENT_SWEEP_MS);
	tf_info("agent: host %016llx, store %s, at most %d runs in all",
	        (unsigned long long)tf_host_id(), tf_store_backend(st), cfg->max_concurrent_runs);
	while (!stopping) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int n = 0;

		sweep(cfg, st);
		if (poll(&p, 1, TF_AGENT_SWEEP_MS) < 0 && errno != EINTR)
			break;
		/* Also when fd is -1: re-makes a lost session. */
		if (tf_store_shared(st) && (p.revents || fd < 0))
			tf_store_notifications(st, &n, &fd);
	}
	tf_info("agent: stopping; started runs go on");
	tf_store_close(st);
	return 0;
}
