/* lib/config.c: defaults, every `key = value` setting of the file, the
 * environment over the file, and a bad line refused with its file and line
 * number. Tokens and roles are test_auth.c's, webhook settings
 * test_webhook.c's. */
#include "testutil.h"

#include "config.h"

/* The variables tf_config_load reads, cleared so the machine's do not leak
 * into a test. */
static void clear_env(void)
{
	unsetenv("THREATFEED_CONF");
	unsetenv("THREATFEED_DB");
	unsetenv("THREATFEED_STATE_DIR");
	unsetenv("THREATFEED_WORKER");
	unsetenv("THREATFEED_RUNS");
}

static void test_defaults(void **state)
{
	tf_config cfg;
	char err[256] = "";
	(void)state;

	clear_env();
	assert_int_equal(tu_config(&cfg, "", err, sizeof err), TF_OK);
	assert_string_equal(cfg.state_dir, "/var/lib/threatfeed");
	assert_string_equal(cfg.db_path, "/var/lib/threatfeed/db");
	assert_int_equal(cfg.max_concurrent_runs, TF_DEFAULT_MAX_RUNS);
	assert_int_equal(cfg.grace_period_s, TF_DEFAULT_GRACE_S);
	assert_int_equal(cfg.history_keep, TF_DEFAULT_HISTORY_KEEP);
	assert_int_equal(tf_config_map_bytes(&cfg), 0);   /* the store's own default */
	assert_int_equal(cfg.remote_user_role, TF_ROLE_ADMIN);
	assert_int_equal(cfg.trust_remote_user, 0);
	assert_int_equal(cfg.log_debug, 0);
	assert_int_equal(cfg.run_by_agents, 0);   /* an LMDB path: runs are forked locally */
	assert_string_equal(cfg.api_token, "");
	assert_int_equal(cfg.ntokens, 0);
	/* the runner is threatfeed-worker beside the worker binary */
	assert_non_null(strrchr(cfg.worker, '/'));
	assert_memory_equal(cfg.runner, cfg.worker, (size_t)(strrchr(cfg.worker, '/') - cfg.worker));
	assert_string_equal(strrchr(cfg.runner, '/'), "/threatfeed-worker");
	/* no file at all is the same as an empty one */
	assert_int_equal(tf_config_load(&cfg, "threatfeed", err, sizeof err), TF_OK);
	assert_string_equal(cfg.db_path, "/var/lib/threatfeed/db");
}

static void test_every_setting(void **state)
{
	tf_config cfg;
	char err[256] = "";
	(void)state;

	clear_env();
	assert_int_equal(tu_config(&cfg,
	                           "# a comment\n"
	                           "\n"
	                           "  api_token   =   s3cret  \n"
	                           "metrics_token = m\n"
	                           "export_token = e\n"
	                           "\ttrust_remote_user = 1\n"
	                           "max_concurrent_runs = 7\n"
	                           "grace_period_s = 0\n"
	                           "history_keep = 100000\n"
	                           "map_size_mb = 3\n"
	                           "worker = /opt/tf/bin/threatfeed\n"
	                           "db = /srv/tf/db\n"
	                           "log_debug = 1\n"
	                           "runs = agents\n"
	                           "remote_user_role = viewer\n",
	                           err, sizeof err),
	                 TF_OK);
	assert_string_equal(cfg.api_token, "s3cret");   /* spaces around key and value trimmed */
	assert_string_equal(cfg.metrics_token, "m");
	assert_string_equal(cfg.export_token, "e");
	assert_int_equal(cfg.trust_remote_user, 1);
	assert_int_equal(cfg.max_concurrent_runs, 7);
	assert_int_equal(cfg.grace_period_s, 0);
	assert_int_equal(cfg.history_keep, 100000);
	assert_int_equal(tf_config_map_bytes(&cfg), (size_t)3 << 20);
	assert_string_equal(cfg.worker, "/opt/tf/bin/threatfeed");
	assert_string_equal(cfg.runner, "/opt/tf/bin/threatfeed-worker");
	assert_string_equal(cfg.db_path, "/srv/tf/db");
	assert_int_equal(cfg.log_debug, 1);
	assert_int_equal(cfg.run_by_agents, 1);
	assert_int_equal(cfg.remote_user_role, TF_ROLE_VIEWER);
	/* the bounds themselves are accepted */
	assert_int_equal(tu_config(&cfg, "max_concurrent_runs = 1\ngrace_period_s = 3600\n", err,
	                           sizeof err),
	                 TF_OK);
	assert_int_equal(cfg.max_concurrent_runs, 1);
	assert_int_equal(cfg.grace_period_s, TF_MAX_GRACE_S);
	assert_int_equal(tu_config(&cfg, "max_concurrent_runs = 1000\nruns = local\n", err, sizeof err),
	                 TF_OK);
	assert_int_equal(cfg.max_concurrent_runs, 1000);
	assert_int_equal(cfg.run_by_agents, 0);
}

static void test_environment_over_file(void **state)
{
	tf_config cfg;
	char err[256] = "";
	(void)state;

	clear_env();
	/* the state directory places the default database */
	setenv("THREATFEED_STATE_DIR", "/tmp/tf-state", 1);
	assert_int_equal(tu_config(&cfg, "", err, sizeof err), TF_OK);
	assert_string_equal(cfg.state_dir, "/tmp/tf-state");
	assert_string_equal(cfg.db_path, "/tmp/tf-state/db");
	/* THREATFEED_DB and THREATFEED_WORKER win over the file */
	setenv("THREATFEED_DB", "/tmp/env-db", 1);
	setenv("THREATFEED_WORKER", "/usr/local/bin/threatfeed", 1);
	assert_int_equal(tu_config(&cfg, "db = /srv/file-db\nworker = /opt/x/threatfeed\n", err,
	                           sizeof err),
	                 TF_OK);
	assert_string_equal(cfg.db_path, "/tmp/env-db");
	assert_string_equal(cfg.worker, "/usr/local/bin/threatfeed");
	assert_string_equal(cfg.runner, "/usr/local/bin/threatfeed-worker");
	/* a worker without a directory: the runner is looked up the same way */
	setenv("THREATFEED_WORKER", "threatfeed", 1);
	assert_int_equal(tu_config(&cfg, "", err, sizeof err), TF_OK);
	assert_string_equal(cfg.runner, "threatfeed-worker");
	/* a PostgreSQL store: agents start runs unless `runs` says otherwise */
	setenv("THREATFEED_DB", "postgresql:///tf?host=/tmp", 1);
	assert_int_equal(tu_config(&cfg, "", err, sizeof err), TF_OK);
	assert_int_equal(cfg.run_by_agents, 1);
	assert_int_equal(tu_config(&cfg, "runs = local\n", err, sizeof err), TF_OK);
	assert_int_equal(cfg.run_by_agents, 0);
	/* THREATFEED_RUNS over the file, and refused when it is neither word */
	setenv("THREATFEED_RUNS", "agents", 1);
	assert_int_equal(tu_config(&cfg, "runs = local\n", err, sizeof err), TF_OK);
	assert_int_equal(cfg.run_by_agents, 1);
	setenv("THREATFEED_RUNS", "both", 1);
	assert_int_equal(tu_config(&cfg, "", err, sizeof err), TF_EINVAL);
	assert_string_equal(err, "THREATFEED_RUNS must be local or agents");
	clear_env();
}

static void test_bad_lines(void **state)
{
	/* Each refused, whatever comes before it; numbers are strict (no sign,
	 * no trailing text) and bounded. */
	static const char *const bad[] = {
		"max_concurrent_runs = +5",
		"max_concurrent_runs = 5x",
		"max_concurrent_runs = 0",
		"max_concurrent_runs = 1001",
		"max_concurrent_runs = 99999999999999999999",
		"max_concurrent_runs =",
		"grace_period_s = -1",
		"grace_period_s = 3601",
		"history_keep = 0",
		"map_size_mb = 0",
		"map_size_mb = 1048577",
		"trust_remote_user = 2",
		"log_debug = yes",
		"runs = both",
		"remote_user_role = root",
		"no_such_setting = 1",
		"a line without an equals sign",
	};
	tf_config cfg;
	char err[512], text[256];
	(void)state;

	clear_env();
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		err[0] = '\0';
		snprintf(text, sizeof text, "# ok so far\napi_token = x\n%s\nlog_debug = 1\n", bad[i]);
		if (tu_config(&cfg, text, err, sizeof err) != TF_EINVAL)
			fail_msg("accepted: %s", bad[i]);
		/* the message names the file (tu_config's conf-N) and the line */
		if (!strstr(err, "/conf-") || !strstr(err, ":3: bad setting"))
			fail_msg("%s: message '%s'", bad[i], err);
	}
	/* a named config file that cannot be read is an error, not defaults */
	setenv("THREATFEED_CONF", "/nonexistent/threatfeed.conf", 1);
	assert_int_equal(tf_config_load(&cfg, "threatfeed", err, sizeof err), TF_EINVAL);
	assert_string_equal(err, "cannot read config /nonexistent/threatfeed.conf");
	/* err may be NULL */
	assert_int_equal(tf_config_load(&cfg, "threatfeed", NULL, 0), TF_EINVAL);
	clear_env();
}

static void test_role_names(void **state)
{
	(void)state;
	for (int r = TF_ROLE_NONE; r <= TF_ROLE_ADMIN; r++)
		assert_int_equal(tf_role_parse(tf_role_name(r)), r);
	assert_string_equal(tf_role_name(TF_ROLE_OPERATOR), "operator");
	assert_int_equal(tf_role_parse("Admin"), -1);
	assert_int_equal(tf_role_parse(""), -1);
	assert_string_equal(tf_role_name(42), "none");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_setting),
		cmocka_unit_test(test_environment_over_file),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_role_names),
	};
	tu_init("config");
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
