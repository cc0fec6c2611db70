/* Run control shared by the handler and the CLI: starting a run's processes,
 * waking a run after a cancel, noticing runs whose processes are gone, and
 * ending a run in its proper terminal state (docs/SPEC.md §3). */
#ifndef TF_RUNCTL_H
#define TF_RUNCTL_H

#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "store.h"
#include "task.h"

/* Launches `worker supervise TASK` fully detached (new session, no inherited
 * fds, reparented to init: never a zombie of the caller) and returns at once. */
int tf_runctl_spawn(const tf_config *cfg, const char *task_id);

/* Run-end webhooks (worker/webhook.h). Whether one applies to task_id's run:
 * the global webhook_url, or its feed's options.webhook_url. */
int tf_runctl_webhook_applies(const tf_config *cfg, tf_store *st, const char *task_id);
/* Starts `threatfeed-worker notify TASK` fully detached, like tf_runctl_spawn,
 * when a webhook applies, and returns at once: the caller (a request, a
 * cancel) never waits on a receiver. Call it after the terminal state is
 * committed. */
int tf_runctl_notify(const tf_config *cfg, tf_store *st, const char *task_id);
/* With a config set (copied; the handler and the CLI set theirs at start;
 * NULL, the default, turns it off), tf_runctl_reap and tf_runctl_reap_all call
 * tf_runctl_notify for every run they end: a run cancelled while queued, one
 * whose processes were lost. A supervised run's webhook is sent by its
 * supervisor instead (worker/supervisor.c), so each run is notified by
 * exactly one process: the one that saw it end. */
void tf_runctl_set_notify(const tf_config *cfg);

/* A task was just queued: start it. On one host (cfg->run_by_agents 0) this
 * process spawns its supervisor and any older queued ones a slot allows; with
 * agents it only wakes them (the handler never forks a run there). */
int tf_runctl_start(const tf_config *cfg, tf_store *st, const char *task_id);
/* A slot may have freed (a run ended) or a run may be stranded (`tick`):
 * drain the queue here, or wake the agents to. */
int tf_runctl_kick(const tf_config *cfg, tf_store *st);

/* Store channels (tf_store_listen): the queue's, which agents listen on,
 * and a run's cancel channel, which its supervisor listens on. */
#define TF_CHAN_QUEUE "queue"
/* A cancel channel's name, "c_" + task id, with its NUL. */
#define TF_CHAN_CANCEL_SIZE (TF_UUID_LEN + 3)
/* buf needs TF_CHAN_CANCEL_SIZE bytes. */
void tf_runctl_cancel_channel(const char *task_id, char *buf);

/* Wakes the run so it looks at the cancel now instead of at its next check:
 * a notification on its cancel channel (any host) and SIGUSR1 to its
 * supervisor and worker when they are on this host. Harmless when they are
 * gone. */
int tf_runctl_wake(tf_store *st, const char *task_id);

/* If task_id is active but its processes are gone (killed, reboot), ends it:
 * a pending cancel_job is rolled back (→ cancelled), anything else → failed
 * "worker lost". *reaped = 1 when it did. Cheap when the run is alive. */
int tf_runctl_reap(tf_store *st, const char *task_id, int *reaped);
/* tf_runctl_reap for every active task. */
int tf_runctl_reap_all(tf_store *st, int *reaped);

/* Ends task_id in status final (a terminal state): for TF_ST_CANCELLED rolls
 * the run back first; drops undo entries otherwise; frees the feed's active
 * slot; notes the run on the feed. error may be NULL. */
int tf_runctl_finish(tf_store *st, const char *task_id, tf_status final, int forced,
                     const char *error);

/* Frees a finished run's slot once its processes are gone (the supervisor
 * after waitpid, a worker whose supervisor died, the reaper): until then the
 * run counts against max_concurrent_runs even after its task is terminal. */
int tf_runctl_release(tf_store *st, const char *task_id);

/* Process identity of a run, kept in TF_TBL_RUNS. Its processes are alive
 * when, on their host (tf_host_id), one of the pids is; seen from another
 * host, when the store says a lease on the task id is held (both processes
 * take one: tf_store_lease). */
typedef struct tf_runinfo {
	int32_t sup_pid, worker_pid;
	uint64_t sup_start, worker_start;
	uint64_t host;
} tf_runinfo;
int tf_runctl_info(tf_store *st, const char *task_id, tf_runinfo *ri);

/* Whether the run's processes are alive (inside any transaction). */
int tf_runctl_alive(tf_txn *txn, const char *task_id, const tf_runinfo *ri, int *alive);

/* Supervisor start: claims a run slot (at most max_runs live runs, and older
 * waiting tasks first) and moves the task queued → running with this process
 * as supervisor. *claimed = 0 when no slot is free for it (the task stays
 * queued) or the task is no longer queued (cancelled while queued: the caller
 * then finishes it with tf_runctl_reap, never fetched). */
int tf_runctl_claim(tf_store *st, const char *task_id, int max_runs, int *claimed);
int tf_runctl_set_worker(tf_store *st, const char *task_id, pid_t pid);
/* The oldest queued task, if any: TF_ENOTFOUND when the queue is empty. */
int tf_runctl_next_queued(tf_store *st, char *task_id);
/* Starts supervisors for the oldest queued tasks that none holds, up to
 * max_concurrent_runs of them, except `skip` (the caller's own, already
 * started; may be NULL). Their claims keep the limit and the order, so a
 * killed supervisor or a lost spawn never strands the queue for long: every
 * consume, every ending run and `tick` call this. */
int tf_runctl_drain(const tf_config *cfg, tf_store *st, const char *skip, int *started);
/* Up to max queued tasks that no supervisor has claimed, oldest first. */
int tf_runctl_queued(tf_store *st, char (*ids)[TF_UUID_LEN + 1], size_t max, size_t *n);
/* Drops undo entries left behind by runs that are already finished (a crash
 * between a run's end and the drop). */
int tf_runctl_gc_undo(tf_store *st, uint64_t *runs);
/* Counts of live runs and queued tasks (for /api/health). */
int tf_runctl_counts(tf_store *st, int *active_workers, int *queued);
/* The same inside the caller's transaction (a metrics scrape reads them
 * from the snapshot it reads its counters from). */
int tf_runctl_counts_txn(tf_txn *txn, int *active_workers, int *queued);

#endif
