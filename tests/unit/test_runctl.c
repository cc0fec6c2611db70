/* lib/runctl.c: run control — a run's end (finish: status, counts, the
 * feed's last run, rollback on cancel_job), reaping runs whose processes are
 * gone, the claim and the queue, the undo garbage collector, spawning a
 * detached run and waking it. */
#include "testutil.h"

/* ---- run control -------------------------------------------------------------------- */

#define SEED_TASK "5eed5eed-5eed-4eed-8eed-5eed5eed5eed"

struct apply_ctx {
	const char *feed, *task;
	tf_batch *b;
	tf_progress p;
};

static int apply_txn(tf_txn *txn, void *vctx)
{
	struct apply_ctx *c = vctx;
	c->p = (tf_progress){0};
	return tf_batch_apply(txn, c->feed, c->task, c->b, &c->p);
}

/* Writes n records key prefix/0..n-1 with version mod as task. */
static void write_records(tf_store *st, const char *feed, const char *task, const char *prefix,
                          int n, int64_t mod)
{
	struct apply_ctx c = {feed, task, NULL, {0}};
	assert_int_equal(tf_batch_new(&c.b), TF_OK);
	for (int i = 0; i < n; i++) {
		char key[64], obj[128];
		snprintf(key, sizeof key, "%s-%d", prefix, i);
		snprintf(obj, sizeof obj, "{\"id\":\"%s\",\"v\":%lld}", key, (long long)mod);
		assert_int_equal(tf_batch_add(c.b, key, "indicator", NULL, NULL, mod, obj, strlen(obj)),
		                 TF_OK);
	}
	assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
	tf_batch_free(c.b);
}

/* Feed "r" seeded with 50 records "s-*", kept (undo dropped). */
static tf_store *runctl_store(const char *what, char **export0)
{
	tf_store *st = tu_new_store(what, NULL, 0);
	tu_simple_feed(st, "r");
	tu_simple_feed(st, "q");
	tu_simple_feed(st, "p");
	write_records(st, "r", SEED_TASK, "s", 50, 1000);
	assert_int_equal(tf_store_undo_drop(st, SEED_TASK), TF_OK);
	*export0 = tu_export(st, NULL, NULL);
	return st;
}

/* A run that writes 20 records "new-*" and updates 10 of the seed, each time
 * with a newer version than before. */
static void do_some_work(tf_store *st, const char *id)
{
	static int64_t mod = 5000;
	mod += 10;
	write_records(st, "r", id, "new", 20, mod);
	write_records(st, "r", id, "s", 10, mod);
}

static void assert_slot_free(tf_store *st, const char *feed)
{
	size_t n;
	void *v = tu_raw_get(st, TF_TBL_ACTIVE, feed, strlen(feed), &n);
	if (v) {
		free(v);
		fail_msg("feed %s still has an active run", feed);
	}
}

static void assert_feed_last(tf_store *st, const char *feed, const char *id, const char *status)
{
	char *text = NULL;
	json_object *o;
	assert_int_equal(tf_feed_read(st, feed, &text, NULL), TF_OK);
	o = tu_json(text);
	free(text);
	assert_string_equal(tf_json_str(o, "last_task_id"), id);
	assert_string_equal(tf_json_str(o, "last_status"), status);
	assert_true(tu_rfc3339(tf_json_str(o, "last_run_at")));
	assert_true(tu_is_null(o, "active_task_id"));
	json_object_put(o);
}

static void test_finish(void **state)
{
	char *e0, *e1, *json;
	tf_store *st = runctl_store("finish", &e0);
	char id[TF_UUID_LEN + 1];
	json_object *o, *v;
	size_t n;
	(void)state;

	/* cancelled: rolled back exactly */
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 1, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "cancelled");
	assert_string_equal(tf_json_str(o, "stage"), "done");
	assert_true(json_object_object_get_ex(o, "rolled_back", &v));
	assert_int_equal(json_object_get_int64(v), 30);
	assert_true(tu_rfc3339(tu_jstr(o, "cancel", "acknowledged_at")));
	{
		json_object *c, *f;
		assert_true(json_object_object_get_ex(o, "cancel", &c));
		assert_true(json_object_object_get_ex(c, "forced", &f));
		assert_true(json_object_get_boolean(f));
	}
	json_object_put(o);
	e1 = tu_export(st, NULL, NULL);
	assert_string_equal(e1, e0);
	free(e1);
	assert_int_equal(tu_records_count(st, "r"), 50);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tf_runctl_release(st, id), TF_OK);
	assert_null(tu_raw_get(st, TF_TBL_RUNS, id, TF_UUID_LEN, &n));
	assert_slot_free(st, "r");
	assert_feed_last(st, "r", id, "cancelled");
	/* finishing again changes nothing */
	json = NULL;
	assert_int_equal(tf_task_read(st, id, &json, NULL), TF_OK);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, "late"), TF_OK);
	{
		char *again = NULL;
		assert_int_equal(tf_task_read(st, id, &again, NULL), TF_OK);
		assert_string_equal(again, json);
		free(again);
	}
	free(json);

	/* stopped: data kept, undo dropped */
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	e1 = tu_export(st, NULL, NULL);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPED);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_slot_free(st, "r");
	assert_feed_last(st, "r", id, "stopped");

	/* completed: data kept, undo dropped, error text kept when given */
	tu_create(st, "r", id);
	tu_claim(st, id);
	write_records(st, "r", id, "more", 5, 6000);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_COMPLETED);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 75);
	assert_feed_last(st, "r", id, "completed");

	/* failed keeps committed data and says why */
	tu_create(st, "r", id);
	tu_claim(st, id);
	write_records(st, "r", id, "fail", 5, 6000);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "upstream broke"), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "failed");
	assert_string_equal(tf_json_str(o, "error"), "upstream broke");
	json_object_put(o);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 80);

	/* a stop_now turns a completion into a stop */
	tu_create(st, "r", id);
	tu_claim(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPED);

	/* a cancel_job is honoured whatever the run ended as: rolled back */
	e1 = tu_export(st, NULL, NULL);
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "crashed"), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);

	/* A run that ends on a cancel its task never showed (it saw only the
	 * feed's signal): still ends properly, through stopping/cancelling. */
	e1 = tu_export(st, NULL, NULL);
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "cancelled");
	assert_string_equal(tu_jstr(o, "cancel", "mode"), "cancel_job");
	json_object_put(o);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_slot_free(st, "r");
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	e1 = tu_export(st, NULL, NULL);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 0, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "stopped");
	assert_string_equal(tu_jstr(o, "cancel", "mode"), "stop_now");
	json_object_put(o);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_slot_free(st, "r");
	free(e0);
	tf_store_close(st);
}

/* Runs a child that waits, records its pid and start time, then reaps it. */
static void dead_process(pid_t *pid, uint64_t *start)
{
	int p[2];
	char c;
	assert_int_equal(pipe(p), 0);
	*pid = fork();
	assert_true(*pid >= 0);
	if (*pid == 0) {
		close(p[1]);
		if (read(p[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[0]);
	*start = tf_proc_start(*pid);
	assert_true(*start != 0);
	assert_true(tf_proc_alive(*pid, *start));
	close(p[1]);
	assert_int_equal(tu_wait(*pid), 0);
	assert_false(tf_proc_alive(*pid, *start));
}

static void set_runinfo(tf_store *st, const char *id, const tf_runinfo *ri)
{
	assert_int_equal(tu_raw_put(st, TF_TBL_RUNS, id, TF_UUID_LEN, ri, sizeof *ri), TF_OK);
}

static void test_reap(void **state)
{
	char *e0, *json;
	tf_store *st = runctl_store("reap", &e0);
	char id[TF_UUID_LEN + 1];
	tf_runinfo ri = {0}, got;
	int reaped = -1;
	json_object *o;
	pid_t p1, p2;
	uint64_t s1, s2;
	(void)state;

	dead_process(&p1, &s1);
	dead_process(&p2, &s2);

	/* a live run (this process as its supervisor) is left alone */
	tu_create(st, "r", id);
	tu_claim(st, id);
	assert_int_equal(tf_runctl_info(st, id, &got), TF_OK);
	assert_int_equal(got.sup_pid, getpid());
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	assert_int_equal(tu_task_status(st, id), TF_ST_RUNNING);
	/* its processes are gone → failed "worker lost", data kept */
	do_some_work(st, id);
	ri = (tf_runinfo){.sup_pid = p1, .worker_pid = p2, .sup_start = s1, .worker_start = s2};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "failed");
	assert_true(tu_contains(tf_json_str(o, "error"), "worker lost"));
	assert_true(tu_rfc3339(tf_json_str(o, "finished_at")));
	json_object_put(o);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_slot_free(st, "r");
	/* reaping a finished task does nothing */
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	free(e0);
	e0 = tu_export(st, NULL, NULL);

	/* pid reused by another process: our pid, but another start time */
	tu_create(st, "r", id);
	tu_claim(st, id);
	ri = (tf_runinfo){.sup_pid = getpid(), .sup_start = tf_proc_start(getpid()) + 12345};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_FAILED);

	/* lost while a cancel_job was pending → rolled back, cancelled */
	tu_create(st, "r", id);
	tu_claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	ri = (tf_runinfo){.sup_pid = p1, .worker_pid = p2, .sup_start = s1, .worker_start = s2};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	{
		char *e1 = tu_export(st, NULL, NULL);
		assert_string_equal(e1, e0);
		free(e1);
	}
	assert_int_equal(tu_undo_count(st, id), 0);

	/* queued and not cancelled: waits for a slot, not reaped */
	tu_create(st, "r", id);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	assert_int_equal(tu_task_status(st, id), TF_ST_QUEUED);
	/* cancelled while queued (stop_now) → stopped, never fetched */
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "stopped");
	assert_true(tu_is_null(o, "started_at"));
	json_object_put(o);
	assert_slot_free(st, "r");
	{
		char next[TF_UUID_LEN + 1];
		assert_int_equal(tf_runctl_next_queued(st, next), TF_ENOTFOUND);
	}
	/* cancelled while queued (cancel_job) → cancelled */
	tu_create(st, "r", id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	/* a supervisor starting late does not claim it */
	{
		int claimed = 1;
		assert_int_equal(tf_runctl_claim(st, id, 4, &claimed), TF_OK);
		assert_int_equal(claimed, 0);
	}
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);

	/* reap_all finds every lost run */
	{
		char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], c[TF_UUID_LEN + 1];
		int n = -1;
		tu_create(st, "r", a);
		tu_claim(st, a);
		tu_create(st, "q", b);
		tu_claim(st, b);
		tu_create(st, "p", c);
		tu_claim(st, c);
		set_runinfo(st, a, &ri);
		set_runinfo(st, c, &ri);
		assert_int_equal(tf_runctl_reap_all(st, &n), TF_OK);
		assert_int_equal(n, 2);
		assert_int_equal(tu_task_status(st, a), TF_ST_FAILED);
		assert_int_equal(tu_task_status(st, b), TF_ST_RUNNING);
		assert_int_equal(tu_task_status(st, c), TF_ST_FAILED);
	}
	free(e0);
	tf_store_close(st);
}

static void test_claim_and_queue(void **state)
{
	tf_store *st = tu_new_store("claim", NULL, 0);
	char ids[5][TF_UUID_LEN + 1], next[TF_UUID_LEN + 1];
	const char *feeds[5] = {"a", "b", "c", "d", "e"};
	int claimed, active, queued;
	pid_t p1;
	uint64_t s1;
	(void)state;

	for (int i = 0; i < 5; i++) {
		tu_simple_feed(st, feeds[i]);
		tu_create(st, feeds[i], ids[i]);
	}
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 0);
	assert_int_equal(queued, 5);
	/* oldest first */
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[0]);
	/* max_runs 2 */
	assert_int_equal(tf_runctl_claim(st, ids[0], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[1]);
	assert_int_equal(tf_runctl_claim(st, ids[1], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	assert_int_equal(tu_task_status(st, ids[2]), TF_ST_QUEUED);
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 2);
	assert_int_equal(queued, 3);
	/* the same task is never claimed twice */
	assert_int_equal(tf_runctl_claim(st, ids[0], 10, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	/* a finished run keeps its slot while its processes live (here: us) … */
	assert_int_equal(tf_runctl_finish(st, ids[0], TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[2]);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	/* … and once released, the next one gets it */
	assert_int_equal(tf_runctl_release(st, ids[0]), TF_OK);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	/* only live runs count: b's processes vanish (not yet reaped) */
	dead_process(&p1, &s1);
	{
		tf_runinfo ri = {.sup_pid = p1, .sup_start = s1};
		set_runinfo(st, ids[1], &ri);
	}
	assert_int_equal(tf_runctl_claim(st, ids[3], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_claim(st, ids[4], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 2);
	assert_int_equal(queued, 1);
	/* set_worker records the worker's identity */
	{
		tf_runinfo ri;
		assert_int_equal(tf_runctl_set_worker(st, ids[3], getpid()), TF_OK);
		assert_int_equal(tf_runctl_info(st, ids[3], &ri), TF_OK);
		assert_int_equal(ri.worker_pid, getpid());
		assert_int_equal(ri.worker_start, tf_proc_start(getpid()));
		assert_int_equal(tf_runctl_set_worker(st, ids[4], getpid()), TF_ENOTFOUND);
	}
	tf_store_close(st);
}

/* Undo entries left by runs that already ended (a crash between the end and
 * the drop) are collected; those of active runs are not. */
static void test_gc_undo(void **state)
{
	char *e0;
	tf_store *st = runctl_store("gcundo", &e0);
	char done[TF_UUID_LEN + 1], live[TF_UUID_LEN + 1], ids[8][TF_UUID_LEN + 1];
	const char *gone = "00000000-dead-4000-8000-000000000000";
	uint64_t runs = 99;
	size_t n = 99;
	(void)state;

	tu_create(st, "r", done);
	tu_claim(st, done);
	assert_int_equal(tf_runctl_finish(st, done, TF_ST_COMPLETED, 0, NULL), TF_OK);
	write_records(st, "r", done, "late", 5, 9000);      /* journaled after the end */
	write_records(st, "q", gone, "orphan", 3, 9000);    /* its task is gone */
	tu_create(st, "p", live);
	tu_claim(st, live);
	write_records(st, "p", live, "live", 4, 9000);
	assert_int_equal(tu_undo_count(st, done), 11);  /* 5 records, their dates added, the count */
	assert_int_equal(tf_runctl_gc_undo(st, &runs), TF_OK);
	assert_int_equal(runs, 2);
	assert_int_equal(tu_undo_count(st, done), 0);
	assert_int_equal(tu_undo_count(st, gone), 0);
	assert_int_equal(tu_undo_count(st, live), 9);   /* 4 records, their dates added, the count */
	/* data stays */
	assert_int_equal(tu_records_count(st, "r"), 55);
	assert_int_equal(tu_records_count(st, "q"), 3);
	/* nothing more to collect */
	assert_int_equal(tf_runctl_gc_undo(st, &runs), TF_OK);
	assert_int_equal(runs, 0);
	/* the live run can still be rolled back exactly */
	{
		char *json = NULL, *e1;
		assert_int_equal(tf_task_cancel(st, live, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
		free(json);
		e1 = tu_export(st, "p", NULL);
		assert_int_equal(tf_runctl_finish(st, live, TF_ST_CANCELLED, 0, NULL), TF_OK);
		free(e1);
		e1 = tu_export(st, "p", NULL);
		assert_string_equal(e1, "");
		free(e1);
	}
	/* tf_runctl_queued: unclaimed queued tasks, oldest first */
	{
		char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], c[TF_UUID_LEN + 1];
		tu_create(st, "r", a);
		tu_create(st, "q", b);
		tu_create(st, "p", c);
		tu_claim(st, b);
		assert_int_equal(tf_runctl_queued(st, ids, 8, &n), TF_OK);
		assert_int_equal(n, 2);
		assert_string_equal(ids[0], a);
		assert_string_equal(ids[1], c);
		assert_int_equal(tf_runctl_queued(st, ids, 1, &n), TF_OK);
		assert_int_equal(n, 1);
		assert_string_equal(ids[0], a);
	}
	free(e0);
	tf_store_close(st);
}

/* ---- spawning and waking ------------------------------------------------------------ */

static long session_of(pid_t pid)
{
	char path[64], buf[512], *p;
	long sid = -1;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')))
		sscanf(p + 2, "%*c %*d %*d %ld", &sid);
	fclose(f);
	return sid;
}

/* The run is started fully detached: its arguments, a new session, no fd of
 * the caller's, and no zombie left to the caller. */
static void test_spawn_detached(void **state)
{
	char dir[TU_PATH], script[480], out[480], text[2048];
	char *got = NULL;
	tf_config cfg;
	int marker, status;
	const char *id = "0badc0de-0000-4000-8000-000000000001";
	(void)state;

	tu_path(dir, sizeof dir, "spawn");
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(strlen(dir) < 400);
	snprintf(script, sizeof script, "%.400s/fake-worker", dir);
	snprintf(out, sizeof out, "%.400s/report", dir);
	snprintf(text, sizeof text,
	         "#!/bin/sh\n"
	         "{ echo \"args: $*\"; echo \"sid: $(cut -d' ' -f6 /proc/$$/stat)\";\n"
	         "  echo \"fds: $(ls /proc/$$/fd | sort -n | tr '\\n' ' ')\"; } > %s.tmp\n"
	         "mv %s.tmp %s\n"
	         "sleep 1\n",   /* a run outlives the request that started it */
	         out, out, out);
	tu_write_script(script, text);
	memset(&cfg, 0, sizeof cfg);
	snprintf(cfg.worker, sizeof cfg.worker, "%.480s", script);
	/* an fd without close-on-exec that must not leak into the run */
	marker = dup2(open("/dev/null", O_RDONLY), 57);
	assert_int_equal(marker, 57);
	{
		int64_t t0 = tf_mono_us();
		assert_int_equal(tf_runctl_spawn(&cfg, id), TF_OK);
		/* returns at once, not when the run ends */
		assert_true(tf_mono_us() - t0 < 700000);
	}
	/* no child of ours is left behind (not even a zombie) */
	assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	for (int i = 0; i < 500 && !(got = tu_slurp(out, NULL)); i++)
		usleep(10000);
	close(57);
	assert_non_null(got);
	if (getenv("TF_TEST_VERBOSE"))
		fprintf(stderr, "spawned run reported:\n%s", got);
	{
		char want[128];
		long sid = -1;
		char *p;
		snprintf(want, sizeof want, "args: supervise %s\n", id);
		if (!tu_contains(got, want))
			fail_msg("spawned run got: %s", got);
		p = strstr(got, "sid: ");
		assert_non_null(p);
		sid = strtol(p + 5, NULL, 10);
		assert_true(sid > 0);
		assert_true(sid != session_of(getpid()));
		p = strstr(got, "fds: ");
		assert_non_null(p);
		if (tu_contains(p, " 57 "))
			fail_msg("fd 57 leaked into the run: %s", p);
	}
	free(got);
	/* a worker that is not executable is an error */
	snprintf(cfg.worker, sizeof cfg.worker, "%.400s/missing", dir);
	assert_int_equal(tf_runctl_spawn(&cfg, id), TF_ESYS);
	assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
}

static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_seen = 1;
}

static void test_wake(void **state)
{
	tf_store *st = tu_new_store("wake", NULL, 0);
	char id[TF_UUID_LEN + 1];
	int ready[2], done[2], reaped;
	tf_runinfo ri = {0};
	pid_t pid, p1;
	uint64_t s1;
	char c;
	(void)state;

	tu_simple_feed(st, "w");
	tu_create(st, "w", id);
	/* not started yet: nothing to signal, nothing changes */
	assert_int_equal(tf_runctl_wake(st, id), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_QUEUED);
	tu_claim(st, id);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(done), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa = {0};
		sa.sa_handler = on_usr1;
		sigaction(SIGUSR1, &sa, NULL);
		close(ready[0]);
		close(done[0]);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		for (int i = 0; i < 1000 && !usr1_seen; i++)
			usleep(5000);
		if (!usr1_seen)
			_exit(2);
		if (write(done[1], "w", 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(ready[1]);
	close(done[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* the child is the run's worker; this process its supervisor */
	assert_int_equal(tf_runctl_set_worker(st, id, pid), TF_OK);
	usr1_seen = 0;
	{
		struct sigaction sa = {0}, old;
		sa.sa_handler = on_usr1;
		sigaction(SIGUSR1, &sa, &old);
		assert_int_equal(tf_runctl_wake(st, id), TF_OK);
		assert_int_equal(read(done[0], &c, 1), 1);
		for (int i = 0; i < 200 && !usr1_seen; i++)
			usleep(1000);
		sigaction(SIGUSR1, &old, NULL);
	}
	assert_true(usr1_seen);
	assert_int_equal(tu_wait(pid), 0);
	close(ready[0]);
	close(done[0]);
	/* both gone: waking is harmless and ends the lost run */
	dead_process(&p1, &s1);
	ri = (tf_runinfo){.sup_pid = p1, .sup_start = s1, .worker_pid = pid, .worker_start = 1};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_wake(st, id), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_FAILED);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_finish),
		cmocka_unit_test(test_reap),
		cmocka_unit_test(test_claim_and_queue),
		cmocka_unit_test(test_gc_undo),
		cmocka_unit_test(test_spawn_detached),
		cmocka_unit_test(test_wake),
	};
	tu_init("runctl");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
