/* `threatfeed`: the admin CLI (same store, same rules as the API) and the
 * entry points of a run's two processes (`supervise`, `work`).
 * Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict. */
#include "agent.h"
#include "audit.h"
#include "config.h"
#include "err.h"
#include "feed.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "records.h"
#include "runctl.h"
#include "store.h"
#include "supervisor.h"
#include "task.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TF_VERSION
#error "TF_VERSION comes from the VERSION file (the Makefile passes -DTF_VERSION)"
#endif

enum { EXIT_USAGE = 2, EXIT_NOTFOUND = 3, EXIT_CONFLICT = 4 };

struct ctx {
	tf_config cfg;
	tf_store *st;
};

typedef int (*cmd_fn)(struct ctx *c, int argc, char **argv);

struct cmd {
	const char *name;
	cmd_fn fn;
	const char *usage;
	const char *help;
};

static int exit_for(int rc)
{
	switch (rc) {
	case TF_OK: return 0;
	case TF_ENOTFOUND: return EXIT_NOTFOUND;
	case TF_ECONFLICT: case TF_EEXIST: return EXIT_CONFLICT;
	case TF_EINVAL: return EXIT_USAGE;
	default: return 1;
	}
}

/* "cli:USER": who the audit and cancel.requested_by name for the CLI (the
 * effective user: the one the store's permissions let in). */
static void cli_who(char *buf, size_t len)
{
	struct passwd *pw = getpwuid(geteuid());

	if (pw && pw->pw_name && *pw->pw_name)
		snprintf(buf, len, "cli:%.100s", pw->pw_name);
	else
		snprintf(buf, len, "cli:uid%u", (unsigned)geteuid());
}

/* The CLI's writes are audited like the API's (README "Audit"), with the
 * HTTP status the API would have answered. Best effort: a store that took
 * the write but not its audit entry is said on stderr, not undone. */
static void cli_audit(struct ctx *c, const char *action, const char *feed, const char *task,
                      const char *mode, int ok_status, int rc)
{
	char who[128];
	tf_audit_entry e = {.via = "cli", .role = "admin", .address = "local", .action = action,
	                    .feed_id = feed, .task_id = task, .mode = mode};
	int arc;

	if (!c->st)
		return;
	cli_who(who, sizeof who);
	e.who = who;
	switch (rc) {
	case TF_OK: e.status = ok_status, e.outcome = "ok"; break;
	case TF_ENOTFOUND: e.status = 404, e.outcome = "not_found"; break;
	case TF_ECONFLICT: case TF_EEXIST: e.status = 409, e.outcome = "conflict"; break;
	case TF_EINVAL: e.status = 400, e.outcome = "invalid"; break;
	default: e.status = 500, e.outcome = "error"; break;
	}
	/* A cancel's entry never waits for the writer lock (docs/SPEC.md §3;
	 * lib/audit.h), like the cancel itself. */
	if ((arc = mode ? tf_audit_defer(c->st, &e) : tf_audit_append(c->st, &e)))
		fprintf(stderr, "threatfeed: audit: %s\n", tf_strerror(arc));
}

static json_object *parse_or_null(const char *json, size_t len)
{
	json_object *o = NULL;
	return tf_json_parse(json, len, TF_MAX_FEED_JSON_DEPTH, &o, NULL, 0) ? NULL : o;
}

/* o's member key when it is a valid feed id (what the audit names), else NULL. */
static const char *valid_id_of(json_object *o, const char *key)
{
	json_object *v = NULL;
	const char *s;

	if (!o || !json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	s = json_object_get_string(v);
	return tf_valid_feed_id(s) ? s : NULL;
}

/* One line on stderr, one exit code: every command fails through here. */
static int fail(int rc, const char *what)
{
	fprintf(stderr, "threatfeed: %s: %s\n", what, tf_strerror(rc));
	return exit_for(rc);
}

static int open_store(struct ctx *c)
{
	char err[512];
	int rc;
	if (c->st)
		return TF_OK;
	if ((rc = tf_store_open(&c->st, c->cfg.db_path, tf_config_map_bytes(&c->cfg), err, sizeof err)))
		fprintf(stderr, "threatfeed: %s\n", err);
	return rc;
}

static int print_json(char *json, size_t len)
{
	fwrite(json, 1, len, stdout);
	fputc('\n', stdout);
	free(json);
	return 0;
}

/* `--help` anywhere among a command's words asks for its usage. */
static int want_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	return 0;
}

/* ---- feeds ------------------------------------------------------------------- */

static char *slurp(FILE *f, size_t max, size_t *len)
{
	size_t cap = 4096, n = 0, got;
	char *buf = malloc(cap);
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n > max) {
			free(buf);
			return NULL;
		}
		if (n == cap) {
			char *grown = realloc(buf, cap *= 2);
			if (!grown)
				free(buf);
			buf = grown;
		}
	}
	*len = n;
	return buf;
}

static int feed_body_from_opts(int argc, char **argv, json_object **body)
{
	static const struct option opts[] = {
		{"json", required_argument, NULL, 'j'},   {"id", required_argument, NULL, 'i'},
		{"name", required_argument, NULL, 'n'},   {"type", required_argument, NULL, 't'},
		{"url", required_argument, NULL, 'u'},    {"collection", required_argument, NULL, 'c'},
		{"username", required_argument, NULL, 'U'}, {"secret-env", required_argument, NULL, 'S'},
		{"interval", required_argument, NULL, 'I'}, {"disabled", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},         {0}};
	json_object *b = json_object_new_object();
	char err[256];
	int ch;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		const char *key = NULL;
		switch (ch) {
		case 'j': {
			FILE *f = strcmp(optarg, "-") ? fopen(optarg, "r") : stdin;
			size_t len = 0;
			char *text = f ? slurp(f, TF_MAX_BODY, &len) : NULL;
			if (f && f != stdin)
				fclose(f);
			json_object_put(b);
			b = NULL;
			if (!text || tf_json_parse(text, len, TF_MAX_JSON_DEPTH, &b, err, sizeof err)) {
				fprintf(stderr, "threatfeed: feed JSON: %s\n", text ? err : "cannot read");
				free(text);
				return TF_EINVAL;
			}
			free(text);
			continue;
		}
		case 'i': key = "id"; break;
		case 'n': key = "name"; break;
		case 't': key = "type"; break;
		case 'u': key = "url"; break;
		case 'c': key = "collection"; break;
		case 'U': key = "username"; break;
		case 'S': {
			/* The secret comes from the environment, never argv (ps shows argv). */
			const char *s = getenv(optarg);
			if (!s) {
				fprintf(stderr, "threatfeed: --secret-env: %s is not set\n", optarg);
				json_object_put(b);
				return TF_EINVAL;
			}
			json_object_object_add(b, "secret", json_object_new_string(s));
			continue;
		}
		case 'I': {
			int64_t v;
			if (tf_parse_i64(optarg, 0, TF_MAX_INTERVAL_S, &v)) {
				fprintf(stderr, "threatfeed: --interval: not a number of seconds\n");
				json_object_put(b);
				return TF_EINVAL;
			}
			json_object_object_add(b, "interval_s", json_object_new_int64(v));
			continue;
		}
		case 'd': json_object_object_add(b, "enabled", json_object_new_boolean(0)); continue;
		default: json_object_put(b); return TF_EINVAL;
		}
		if (b)
			json_object_object_add(b, key, json_object_new_string(optarg));
	}
	*body = b;
	return TF_OK;
}

static int feed_add(struct ctx *c, int argc, char **argv)
{
	json_object *body = NULL;
	char *json, err[256] = "";
	size_t len;
	int rc;

	if ((rc = feed_body_from_opts(argc, argv, &body)))
		return exit_for(rc);
	if ((rc = open_store(c)) == TF_OK) {
		json_object *made;
		rc = tf_feed_create(c->st, body, &json, &len, err, sizeof err);
		/* The id: the created feed's (it may have been generated), else
		 * the one asked for. */
		made = rc ? NULL : parse_or_null(json, len);
		cli_audit(c, "feed_create", valid_id_of(made ? made : body, "id"), NULL, NULL, 201, rc);
		json_object_put(made);
	}
	json_object_put(body);
	if (rc)
		return err[0] ? (fprintf(stderr, "threatfeed: feed add: %s\n", err), exit_for(rc))
		              : fail(rc, "feed add");
	return print_json(json, len);
}

static int feed_list(struct ctx *c, int argc, char **argv)
{
	char *json;
	size_t len;
	int rc, reaped;
	(void)argc, (void)argv;
	if ((rc = open_store(c)))
		return exit_for(rc);
	tf_runctl_reap_all(c->st, &reaped);
	if ((rc = tf_feed_list(c->st, &json, &len)))
		return fail(rc, "feed list");
	return print_json(json, len);
}

static int feed_show(struct ctx *c, int argc, char **argv)
{
	char *json;
	size_t len;
	int rc, reaped;
	if (argc != 2 || !tf_valid_feed_id(argv[1]))
		return fprintf(stderr, "usage: threatfeed feed show FEED\n"), EXIT_USAGE;
	if ((rc = open_store(c)))
		return exit_for(rc);
	tf_runctl_reap_all(c->st, &reaped);
	if ((rc = tf_feed_read(c->st, argv[1], &json, &len)))
		return fail(rc, argv[1]);
	return print_json(json, len);
}

static int feed_rm(struct ctx *c, int argc, char **argv)
{
	int rc;
	if (argc != 2 || !tf_valid_feed_id(argv[1]))
		return fprintf(stderr, "usage: threatfeed feed rm FEED\n"), EXIT_USAGE;
	if (!(rc = open_store(c))) {
		rc = tf_feed_delete(c->st, argv[1]);
		cli_audit(c, "feed_delete", argv[1], NULL, NULL, 204, rc);
	}
	if (rc)
		return rc == TF_ECONFLICT ? (fprintf(stderr, "threatfeed: %s: a run is active\n", argv[1]),
		                             EXIT_CONFLICT)
		                          : fail(rc, argv[1]);
	return 0;
}

/* usage strings without "feed ": dispatch() prints the prefix */
static const struct cmd feed_cmds[] = {
	{"add", feed_add, "add [--json FILE|-] [--id ID] --name N --type T --url URL "
	                  "[--collection C] [--username U] [--secret-env VAR] [--interval S] [--disabled]",
	 "create a feed (same JSON as POST /api/threat-feeds/)"},
	{"list", feed_list, "list", "list feeds as JSON"},
	{"show", feed_show, "show FEED", "one feed as JSON (exit 3 when unknown)"},
	{"rm", feed_rm, "rm FEED", "remove a feed and its records (exit 4 while a run is active)"},
};

static int dispatch(const struct cmd *cmds, size_t n, struct ctx *c, int argc, char **argv,
                    const char *prefix);

static int cmd_feed(struct ctx *c, int argc, char **argv)
{
	return dispatch(feed_cmds, sizeof feed_cmds / sizeof *feed_cmds, c, argc - 1, argv + 1,
	                "feed ");
}

/* ---- runs -------------------------------------------------------------------- */

static int cmd_consume(struct ctx *c, int argc, char **argv)
{
	char id[TF_UUID_LEN + 1], active[TF_UUID_LEN + 1];
	int rc, reaped;

	if (argc != 2 || !tf_valid_feed_id(argv[1]))
		return fprintf(stderr, "usage: threatfeed consume FEED\n"), EXIT_USAGE;
	if ((rc = open_store(c)))
		return exit_for(rc);
	tf_runctl_reap_all(c->st, &reaped);
	rc = tf_task_create(c->st, argv[1], id, active);
	if (rc)
		cli_audit(c, "feed_consume", argv[1], rc == TF_ECONFLICT ? active : NULL, NULL, 202, rc);
	if (rc == TF_ECONFLICT)
		return fprintf(stderr, "threatfeed: %s: run %s is active\n", argv[1], active),
		       EXIT_CONFLICT;
	if (rc)
		return fail(rc, argv[1]);
	rc = tf_runctl_start(&c->cfg, c->st, id);
	cli_audit(c, "feed_consume", argv[1], id, NULL, 202, rc);
	if (rc) {
		tf_runctl_finish(c->st, id, TF_ST_FAILED, 0, "could not start the run");
		return fail(rc, "spawn");
	}
	printf("{\"task_id\":\"%s\",\"feed_id\":\"%s\",\"status\":\"queued\"}\n", id, argv[1]);
	return 0;
}

static int cmd_status(struct ctx *c, int argc, char **argv)
{
	char *json;
	size_t len;
	int rc, reaped;
	if (argc != 2 || !tf_valid_uuid(argv[1]))
		return fprintf(stderr, "usage: threatfeed status TASK\n"), EXIT_USAGE;
	if ((rc = open_store(c)))
		return exit_for(rc);
	tf_runctl_reap(c->st, argv[1], &reaped);
	if ((rc = tf_task_read(c->st, argv[1], &json, &len)))
		return fail(rc, argv[1]);
	return print_json(json, len);
}

static int cmd_cancel(struct ctx *c, int argc, char **argv)
{
	static const struct option opts[] = {{"mode", required_argument, NULL, 'm'},
	                                     {"help", no_argument, NULL, 'h'}, {0}};
	tf_cancel_mode mode = TF_CANCEL_STOP_NOW;
	char *json, who[128];
	json_object *task;
	size_t len;
	int ch, rc;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "m:h", opts, NULL)) != -1)
		if (ch != 'm' || tf_cancel_mode_parse(optarg, &mode))
			return fprintf(stderr, "usage: threatfeed cancel TASK [--mode stop_now|cancel_job]\n"),
			       EXIT_USAGE;
	if (optind != argc - 1 || !tf_valid_uuid(argv[optind]))
		return fprintf(stderr, "usage: threatfeed cancel TASK [--mode stop_now|cancel_job]\n"),
		       EXIT_USAGE;
	if ((rc = open_store(c)))
		return exit_for(rc);
	cli_who(who, sizeof who);
	rc = tf_task_cancel(c->st, argv[optind], mode, who, &json, &len);
	task = rc ? NULL : parse_or_null(json, len);
	cli_audit(c, "task_cancel", valid_id_of(task, "feed_id"), argv[optind],
	          mode == TF_CANCEL_JOB ? "cancel_job" : "stop_now", 202, rc);
	json_object_put(task);
	if (rc == TF_ECONFLICT)
		return fprintf(stderr, "threatfeed: %s: already finished\n", argv[optind]), EXIT_CONFLICT;
	if (rc)
		return fail(rc, argv[optind]);
	free(json);
	tf_runctl_wake(c->st, argv[optind]);
	if ((rc = tf_task_read(c->st, argv[optind], &json, &len)))
		return fail(rc, argv[optind]);
	return print_json(json, len);
}

static int cmd_tasks(struct ctx *c, int argc, char **argv)
{
	static const struct option opts[] = {{"active", no_argument, NULL, 'a'},
	                                     {"feed", required_argument, NULL, 'f'},
	                                     {"limit", required_argument, NULL, 'l'},
	                                     {"help", no_argument, NULL, 'h'}, {0}};
	tf_task_filter f = {.limit = TF_DEFAULT_LIST_LIMIT};
	int64_t lim;
	char *json;
	size_t len;
	int ch, rc, reaped;

	optind = 1;
	while ((ch = getopt_long(argc, argv, "af:l:h", opts, NULL)) != -1) {
		if (ch == 'a')
			f.active_only = 1;
		else if (ch == 'f' && tf_valid_feed_id(optarg))
			f.feed_id = optarg;
		else if (ch == 'l' && !tf_parse_i64(optarg, 1, TF_MAX_LIST_LIMIT, &lim))
			f.limit = (int)lim;
		else
			return fprintf(stderr, "usage: threatfeed tasks [--active] [--feed F] [--limit N]\n"),
			       EXIT_USAGE;
	}
	if ((rc = open_store(c)))
		return exit_for(rc);
	tf_runctl_reap_all(c->st, &reaped);
	if ((rc = tf_task_list(c->st, &f, &json, &len)))
		return fail(rc, "tasks");
	return print_json(json, len);
}

static int cmd_export(struct ctx *c, int argc, char **argv)
{
	int rc;
	if (argc > 2 || (argc == 2 && !tf_valid_feed_id(argv[1])))
		return fprintf(stderr, "usage: threatfeed export [FEED]\n"), EXIT_USAGE;
	if ((rc = open_store(c)) || (rc = tf_records_export(c->st, argc == 2 ? argv[1] : NULL, stdout)))
		return fail(rc, "export");
	return 0;
}

/* Adds the index entries records stored before the index existed lack
 * (README "Indicators and exports"); safe to repeat and to interrupt. A
 * feed with an active run is left for later (exit 4). */
static int cmd_index(struct ctx *c, int argc, char **argv)
{
	char **ids = NULL, *one[1];
	size_t n = 0, busy = 0;
	uint64_t records = 0, added = 0;
	int rc;

	if (argc < 2 || argc > 3 || strcmp(argv[1], "rebuild") ||
	    (argc == 3 && !tf_valid_feed_id(argv[2])))
		return fprintf(stderr, "usage: threatfeed index rebuild [FEED]\n"), EXIT_USAGE;
	if ((rc = open_store(c)))
		return exit_for(rc);
	if (argc == 3)
		one[0] = argv[2], ids = one, n = 1;
	else if ((rc = tf_feed_ids(c->st, &ids, &n)))
		return fail(rc, "index rebuild");
	for (size_t i = 0; i < n && rc != TF_ENOTFOUND; i++) {
		rc = tf_records_reindex(c->st, ids[i], &records, &added);
		if (rc == TF_ECONFLICT) {
			fprintf(stderr, "threatfeed: index rebuild: %s: a run is active; run it again later\n",
			        ids[i]);
			busy++;
		} else if (rc && !(rc == TF_ENOTFOUND && argc == 2)) {
			break; /* a feed removed meanwhile is no error when rebuilding all */
		}
		rc = rc == TF_ECONFLICT || (rc == TF_ENOTFOUND && argc == 2) ? TF_OK : rc;
	}
	if (argc == 2) {
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
	}
	if (rc)
		return fail(rc, argc == 3 ? argv[2] : "index rebuild");
	printf("{\"feeds\":%zu,\"records\":%llu,\"entries_added\":%llu,\"feeds_busy\":%zu}\n", n,
	       (unsigned long long)records, (unsigned long long)added, busy);
	return busy ? EXIT_CONFLICT : 0;
}

static int cmd_gc(struct ctx *c, int argc, char **argv)
{
	uint64_t signals = 0, history = 0, undo = 0;
	int rc, reaped = 0;
	(void)argc, (void)argv;
	if ((rc = open_store(c)) || (rc = tf_runctl_reap_all(c->st, &reaped)) ||
	    (rc = tf_task_gc_signals(c->st, &signals)) ||
	    (rc = tf_task_gc_history(c->st, c->cfg.history_keep, &history)) ||
	    (rc = tf_runctl_gc_undo(c->st, &undo)))
		return fail(rc, "gc");
	printf("{\"reaped\":%d,\"signals_dropped\":%llu,\"tasks_deleted\":%llu,"
	       "\"stale_undo_runs\":%llu}\n",
	       reaped, (unsigned long long)signals, (unsigned long long)history,
	       (unsigned long long)undo);
	return 0;
}

/* For cron (every minute) or a systemd timer: start every enabled feed whose
 * interval has passed since its last run began, then drain the queue. */
static int cmd_tick(struct ctx *c, int argc, char **argv)
{
	char **ids = NULL, task[TF_UUID_LEN + 1];
	size_t n = 0;
	int rc, reaped, created = 0, started = 0;
	(void)argc, (void)argv;

	if ((rc = open_store(c)) || (rc = tf_runctl_reap_all(c->st, &reaped)) ||
	    (rc = tf_feed_ids(c->st, &ids, &n)))
		return fail(rc, "tick");
	for (size_t i = 0; i < n; i++) {
		if (tf_task_create_if_due(c->st, ids[i], tf_now_us(), task) == TF_OK)
			created++;
		free(ids[i]);
	}
	free(ids);
	/* With agents, they start what is queued; tick only wakes them. */
	if ((rc = c->cfg.run_by_agents ? tf_runctl_kick(&c->cfg, c->st)
	                               : tf_runctl_drain(&c->cfg, c->st, NULL, &started)))
		return fail(rc, "tick");
	printf("{\"runs_created\":%d,\"supervisors_started\":%d}\n", created, started);
	return 0;
}

/* The commands that need libcurl live in `threatfeed-worker`, so the CLI and
 * every run's supervisor start without loading it (tens of ms per exec). */
static int exec_runner(struct ctx *c, int argc, char **argv)
{
	char *args[4] = {c->cfg.runner, argv[0], argc > 1 ? argv[1] : NULL, NULL};
	if (argc != 2)
		return fprintf(stderr, "usage: threatfeed %s ARG\n", argv[0]), EXIT_USAGE;
	execv(c->cfg.runner, args);
	fprintf(stderr, "threatfeed: cannot run %s: %s\n", c->cfg.runner, strerror(errno));
	return 1;
}

static int cmd_supervise(struct ctx *c, int argc, char **argv)
{
	if (argc != 2)
		return EXIT_USAGE;
	tf_log_init("threatfeed-supervise", getenv("THREATFEED_RUN_LOG") != NULL);
	return tf_supervise_main(&c->cfg, argv[1]);
}

/* Creates or upgrades the store's schema (PostgreSQL; LMDB has none, and
 * this just opens it). Safe to repeat and to run from two hosts at once. */
static int cmd_db(struct ctx *c, int argc, char **argv)
{
	char err[512];
	int rc, from = 0, to = 0;

	if (argc != 2 || strcmp(argv[1], "migrate"))
		return fprintf(stderr, "usage: threatfeed db migrate\n"), EXIT_USAGE;
	if ((rc = tf_store_migrate(c->cfg.db_path, &from, &to, err, sizeof err))) {
		fprintf(stderr, "threatfeed: db migrate: %s\n", err);
		return exit_for(rc);
	}
	printf("{\"schema_from\":%d,\"schema_to\":%d}\n", from, to);
	return 0;
}

static int cmd_agent(struct ctx *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1)
		return fprintf(stderr, "usage: threatfeed agent\n"), EXIT_USAGE;
	tf_log_init("threatfeed-agent", 1);
	return tf_agent_main(&c->cfg);
}

static const struct cmd commands[] = {
	{"db", cmd_db, "db migrate", "create or upgrade the store's schema (PostgreSQL)"},
	{"feed", cmd_feed, "feed add|list|show|rm …", "manage feeds"},
	{"consume", cmd_consume, "consume FEED", "start a run of FEED in the background"},
	{"status", cmd_status, "status TASK", "one task as JSON"},
	{"cancel", cmd_cancel, "cancel TASK [--mode stop_now|cancel_job]", "stop a run"},
	{"tasks", cmd_tasks, "tasks [--active] [--feed F] [--limit N]", "tasks, newest first"},
	{"export", cmd_export, "export [FEED]", "records as JSON lines, in key order"},
	{"index", cmd_index, "index rebuild [FEED]",
	 "index the records stored before the index existed (all feeds, or FEED); repeatable"},
	{"gc", cmd_gc, "gc",
	 "end runs whose processes are gone; drop expired cancel signals, finished tasks beyond "
	 "history_keep per feed, and leftover undo entries"},
	{"tick", cmd_tick, "tick", "start due scheduled runs (interval_s) and the queue; for cron"},
	{"agent", cmd_agent, "agent",
	 "a worker host's daemon: start queued runs here, end lost runs anywhere"},
	{"test-connection", exec_runner, "test-connection FEED",
	 "reach the feed's upstream with its credentials; prints {\"ok\",\"detail\"}"},
	{"supervise", cmd_supervise, "supervise TASK", "(internal) a run's supervising process"},
	{"work", exec_runner, "work TASK", "(internal) a run's worker process"},
};

static void usage(FILE *out, const struct cmd *cmds, size_t n, const char *prefix)
{
	fprintf(out, "usage:\n");
	for (size_t i = 0; i < n; i++)
		fprintf(out, "  threatfeed %s%-34s %s\n", prefix, cmds[i].usage, cmds[i].help);
	if (!*prefix)
		fprintf(out, "\nEnvironment: THREATFEED_DB (store directory, or a postgresql:// URI), THREATFEED_CONF (config "
		             "file), THREATFEED_STATE_DIR.\nExit codes: 0 ok, 1 error, 2 usage, 3 not "
		             "found, 4 conflict.\n");
}

static int dispatch(const struct cmd *cmds, size_t n, struct ctx *c, int argc, char **argv,
                    const char *prefix)
{
	if (argc < 1 || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h") ||
	    !strcmp(argv[0], "help")) {
		usage(argc < 1 ? stderr : stdout, cmds, n, prefix);
		return argc < 1 ? EXIT_USAGE : 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (strcmp(argv[0], cmds[i].name))
			continue;
		if (cmds[i].fn != cmd_feed) {
			int h = want_help(argc, argv);
			if (h)
				return printf("usage: threatfeed %s%s\n  %s\n", prefix, cmds[i].usage,
				              cmds[i].help),
				       0;
		}
		return cmds[i].fn(c, argc, argv);
	}
	fprintf(stderr, "threatfeed: unknown command '%s%s'\n", prefix, argv[0]);
	usage(stderr, cmds, n, prefix);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	struct ctx c = {0};
	char err[256];
	int rc;

	tf_log_init("threatfeed", 1);
	if (argc == 2 && !strcmp(argv[1], "--version"))
		return puts("threatfeed " TF_VERSION), 0;
	if (tf_config_load(&c.cfg, argv[0], err, sizeof err)) {
		fprintf(stderr, "threatfeed: %s\n", err);
		return 1;
	}
	if (c.cfg.log_debug)
		tf_log_set_level(TF_LOG_DEBUG);
	tf_runctl_set_notify(&c.cfg); /* a run this process reaps gets its webhook */
	rc = dispatch(commands, sizeof commands / sizeof *commands, &c, argc - 1, argv + 1, "");
	tf_store_close(c.st);
	return rc;
}
