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

/* 16 bytes of an address written as text (IPv4 as ::ffff:v4). */
static void addr_of(const char *text, unsigned char out[16])
{
	tf_cidr c;
	assert_int_equal(tf_cidr_parse(text, &c), TF_OK);
	memcpy(out, c.addr, 16);
}

static int allowed(const tf_addr_policy *p, const char *text)
{
	unsigned char a[16];
	addr_of(text, a);
	return tf_addr_allowed(p, a);
}

static void test_cidr_parse(void **state)
{
	static const char *bad[] = {"", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/", "10.1.2.3/8",
	                            "fe80::1/10", "::/129", "host.example", "10.0.0", "10.0.0.0/8x",
	                            "1.2.3.4 /32", "01.2.3.4",
	                            "0000:0000:0000:0000:0000:ffff:255.255.255.255/0128"};
	tf_cidr c, list[4];
	int n = 0;
	(void)state;

	assert_int_equal(tf_cidr_parse("10.0.0.0/8", &c), TF_OK);
	assert_int_equal(c.bits, 96 + 8);
	assert_int_equal(c.addr[10], 0xff);
	assert_int_equal(c.addr[12], 10);
	assert_int_equal(tf_cidr_parse("192.0.2.1", &c), TF_OK);
	assert_int_equal(c.bits, 128);
	assert_int_equal(tf_cidr_parse("fe80::/10", &c), TF_OK);
	assert_int_equal(c.bits, 10);
	assert_int_equal(c.addr[0], 0xfe);
	assert_int_equal(tf_cidr_parse("::/0", &c), TF_OK);
	assert_int_equal(c.bits, 0);
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		if (tf_cidr_parse(bad[i], &c) != TF_EINVAL)
			fail_msg("accepted %s", bad[i]);
	/* lists: spaces around items, no empty item, no overflow */
	assert_int_equal(tf_cidr_list_add("10.0.0.0/8 , fd00::/8", list, &n, 4), TF_OK);
	assert_int_equal(n, 2);
	assert_int_equal(tf_cidr_list_add("10.0.0.0/8,", list, &n, 4), TF_EINVAL);
	n = 0;
	assert_int_equal(tf_cidr_list_add("1.0.0.0/8,2.0.0.0/8,3.0.0.0/8,4.0.0.0/8,5.0.0.0/8",
	                                  list, &n, 4), TF_EINVAL);
	n = 0;
	assert_int_equal(tf_cidr_list_add("", list, &n, 4), TF_OK);
	assert_int_equal(n, 0);
}

static void test_addr_policy(void **state)
{
	tf_addr_policy p;
	(void)state;

	tf_addr_policy_default(&p);
	assert_true(p.ndeny >= 10); /* the built-in list parses whole */
	/* denied by default */
	assert_false(allowed(&p, "169.254.169.254"));
	assert_false(allowed(&p, "::ffff:169.254.169.254")); /* v4-mapped: the same peer */
	assert_false(allowed(&p, "0.0.0.0"));
	assert_false(allowed(&p, "224.0.0.1"));
	assert_false(allowed(&p, "255.255.255.255"));
	assert_false(allowed(&p, "fe80::1"));
	assert_false(allowed(&p, "febf:ffff::1"));
	assert_false(allowed(&p, "ff02::1"));
	assert_false(allowed(&p, "fd00:ec2::254"));
	assert_false(allowed(&p, "::"));
	/* allowed by default: loopback, private, public */
	assert_true(allowed(&p, "127.0.0.1"));
	assert_true(allowed(&p, "::1"));
	assert_true(allowed(&p, "::ffff:127.0.0.1"));
	assert_true(allowed(&p, "10.1.2.3"));
	assert_true(allowed(&p, "192.168.0.1"));
	assert_true(allowed(&p, "169.253.255.255"));
	assert_true(allowed(&p, "169.255.0.0"));
	assert_true(allowed(&p, "fec0::1"));
	assert_true(allowed(&p, "fd00:ec2::253"));
	assert_true(allowed(&p, "192.0.2.1"));
	assert_true(allowed(&p, "2001:db8::1"));
	/* an IPv4 range never matches a native IPv6 address of the same bits */
	assert_int_equal(tf_cidr_list_add("127.0.0.0/8", p.deny, &p.ndeny, TF_MAX_UPSTREAM_RULES * 2),
	                 TF_OK);
	assert_false(allowed(&p, "127.0.0.1"));
	assert_false(allowed(&p, "::ffff:127.0.0.2"));
	assert_true(allowed(&p, "::7f00:1"));
	assert_true(allowed(&p, "::1"));
	/* the longest range decides, allow winning a tie */
	assert_int_equal(tf_cidr_list_add("127.0.0.1/32,169.254.0.0/16", p.allow, &p.nallow,
	                                  TF_MAX_UPSTREAM_RULES), TF_OK);
	assert_true(allowed(&p, "127.0.0.1"));
	assert_false(allowed(&p, "127.0.0.2"));
	assert_true(allowed(&p, "169.254.169.254"));
	/* an allow-list: everything denied, one network allowed */
	tf_addr_policy_default(&p);
	assert_int_equal(tf_cidr_list_add("0.0.0.0/0,::/0", p.deny, &p.ndeny,
	                                  TF_MAX_UPSTREAM_RULES * 2), TF_OK);
	assert_int_equal(tf_cidr_list_add("198.51.100.0/24", p.allow, &p.nallow,
	                                  TF_MAX_UPSTREAM_RULES), TF_OK);
	assert_true(allowed(&p, "198.51.100.7"));
	assert_false(allowed(&p, "198.51.101.7"));
	assert_false(allowed(&p, "2001:db8::1"));
}

/* The keys in a file: added to the built-in list, bad ranges refused with
 * the line. */
static void test_upstream_settings(void **state)
{
	tf_config cfg;
	char err[256] = "";
	(void)state;

	clear_env();
	assert_int_equal(tu_config(&cfg, "upstream_deny = 127.0.0.0/8, ::1/128\n"
	                                 "upstream_deny = 10.0.0.0/8\n"
	                                 "upstream_allow = 127.0.0.1\n", err, sizeof err), TF_OK);
	assert_false(allowed(&cfg.upstream, "169.254.169.254")); /* the defaults stay */
	assert_false(allowed(&cfg.upstream, "127.0.0.2"));
	assert_false(allowed(&cfg.upstream, "10.9.9.9"));
	assert_false(allowed(&cfg.upstream, "::1"));
	assert_true(allowed(&cfg.upstream, "127.0.0.1"));
	assert_int_equal(tu_config(&cfg, "upstream_deny = 10.0.0.0/8, 169.254.1.1/16\n", err,
	                           sizeof err), TF_EINVAL);
	assert_non_null(strstr(err, ":1: bad setting"));
	assert_int_equal(tu_config(&cfg, "upstream_allow = example.com\n", err, sizeof err),
	                 TF_EINVAL);
	clear_env();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_every_setting),
		cmocka_unit_test(test_environment_over_file),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_role_names),
		cmocka_unit_test(test_cidr_parse),
		cmocka_unit_test(test_addr_policy),
		cmocka_unit_test(test_upstream_settings),
	};
	tu_init("config");
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
