#include "config.h"
#include "err.h"
#include "feed.h"
#include "tf_limits.h"
#include "store.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void copy(char *dst, size_t len, const char *src)
{
	snprintf(dst, len, "%s", src ? src : "");
}

/* The worker binary sits beside the handler in build/ and in an install. */
static void default_worker(tf_config *cfg, const char *argv0)
{
	char self[4096];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	char *slash;

	if (n <= 0) {
		copy(cfg->worker, sizeof cfg->worker, argv0 ? argv0 : "threatfeed");
		return;
	}
	self[n] = '\0';
	if ((slash = strrchr(self, '/')))
		*slash = '\0';
	snprintf(cfg->worker, sizeof cfg->worker, "%.400s/threatfeed", self);
	if (access(cfg->worker, X_OK) != 0) /* installed layout: lib/threatfeed/ → bin/ */
		snprintf(cfg->worker, sizeof cfg->worker, "%.400s/../../bin/threatfeed", self);
}

static char *trim(char *s)
{
	char *e;
	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static int set_int(int *dst, const char *v, int min, int max)
{
	int64_t x;
	if (tf_parse_i64(v, min, max, &x))
		return TF_EINVAL;
	*dst = (int)x;
	return TF_OK;
}

const char *tf_role_name(int role)
{
	switch (role) {
	case TF_ROLE_VIEWER: return "viewer";
	case TF_ROLE_OPERATOR: return "operator";
	case TF_ROLE_ADMIN: return "admin";
	default: return "none";
	}
}

int tf_role_parse(const char *name)
{
	for (int r = TF_ROLE_NONE; r <= TF_ROLE_ADMIN; r++)
		if (!strcmp(name, tf_role_name(r)))
			return r;
	return -1;
}

/* Principal names end up in the audit and in cancel.requested_by: printable,
 * no spaces, no ':' (reserved for "cli:USER"). */
static int valid_name(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > TF_MAX_PRINCIPAL)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("._-@", *s))
			return 0;
	return 1;
}

static int hexval(int c)
{
	return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* "ROLE SECRET" of a token.NAME line. */
static int add_token(tf_config *cfg, const char *name, const char *v)
{
	char role[16];
	const char *sp = strpbrk(v, " \t"), *secret;
	tf_token *t;
	int r;

	if (cfg->ntokens >= TF_MAX_TOKENS || !valid_name(name) || !sp ||
	    (size_t)(sp - v) >= sizeof role)
		return TF_EINVAL;
	memcpy(role, v, (size_t)(sp - v));
	role[sp - v] = '\0';
	secret = sp;
	while (*secret == ' ' || *secret == '\t')
		secret++;
	if ((r = tf_role_parse(role)) < TF_ROLE_VIEWER || !*secret || strlen(secret) > TF_MAX_TOKEN)
		return TF_EINVAL;
	for (int i = 0; i < cfg->ntokens; i++)
		if (!strcmp(cfg->tokens[i].name, name))
			return TF_EINVAL;
	t = &cfg->tokens[cfg->ntokens];
	memset(t, 0, sizeof *t);
	copy(t->name, sizeof t->name, name);
	t->role = r;
	if (!strncmp(secret, "sha256:", 7)) {
		const char *h = secret + 7;
		if (strlen(h) != 2 * TF_SHA256_LEN)
			return TF_EINVAL;
		for (int i = 0; i < TF_SHA256_LEN; i++) {
			int hi = hexval((unsigned char)h[2 * i]), lo = hexval((unsigned char)h[2 * i + 1]);
			if (hi < 0 || lo < 0)
				return TF_EINVAL;
			t->digest[i] = (unsigned char)(hi << 4 | lo);
		}
		t->hashed = 1;
	} else {
		copy(t->secret, sizeof t->secret, secret);
	}
	cfg->ntokens++;
	return TF_OK;
}

static int add_role_user(tf_config *cfg, const char *name, const char *v)
{
	int r = tf_role_parse(v);

	if (cfg->nrole_users >= TF_MAX_ROLE_USERS || r < 0 || strlen(name) > TF_MAX_PRINCIPAL ||
	    !*name)
		return TF_EINVAL;
	copy(cfg->role_users[cfg->nrole_users].name, sizeof cfg->role_users[0].name, name);
	cfg->role_users[cfg->nrole_users++].role = r;
	return TF_OK;
}

/* Denied unless upstream_allow lifts them: nothing a feed should ever need,
 * and what a URL (or a DNS answer, or a redirect) aimed at the host itself
 * or its cloud would use. Loopback and private ranges stay allowed: local
 * upstreams and mirrors are ordinary (README "Which addresses feeds may
 * reach"; an operator denies them with upstream_deny). */
static const char default_deny[] =
	"0.0.0.0/8,"           /* "this network": 0.0.0.0 reaches the host itself */
	"169.254.0.0/16,"      /* link-local, the cloud metadata service 169.254.169.254 */
	"100.100.100.200/32,"  /* Alibaba Cloud metadata */
	"192.0.0.192/32,"      /* Oracle Cloud metadata */
	"224.0.0.0/4,"         /* multicast */
	"240.0.0.0/4,"         /* reserved, and the broadcast 255.255.255.255 */
	"::/128,"              /* unspecified */
	"fe80::/10,"           /* link-local */
	"fd00:ec2::254/128,"   /* AWS metadata over IPv6 */
	"ff00::/8";            /* multicast */

int tf_cidr_parse(const char *s, tf_cidr *out)
{
	char text[TF_MAX_CIDR_TEXT + 1], *slash;
	unsigned char v4[4];
	int64_t bits;
	int max;

	if (strlen(s) > TF_MAX_CIDR_TEXT)
		return TF_EINVAL;
	snprintf(text, sizeof text, "%s", s);
	if ((slash = strchr(text, '/')))
		*slash++ = '\0';
	memset(out, 0, sizeof *out);
	if (inet_pton(AF_INET, text, v4) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		memcpy(out->addr + 12, v4, 4);
		max = 32;
	} else if (inet_pton(AF_INET6, text, out->addr) == 1) {
		max = 128;
	} else {
		return TF_EINVAL;
	}
	bits = max;
	if (slash && tf_parse_i64(slash, 0, max, &bits))
		return TF_EINVAL;
	out->bits = (int)bits + (max == 32 ? 96 : 0);
	/* "10.1.2.3/8" is a typo for a host or for 10.0.0.0/8: say so. */
	for (int i = out->bits; i < 128; i++)
		if (out->addr[i / 8] & (0x80 >> (i % 8)))
			return TF_EINVAL;
	return TF_OK;
}

int tf_cidr_list_add(const char *s, tf_cidr *list, int *n, int max)
{
	char item[TF_MAX_CIDR_TEXT + 2];

	while (*s) {
		const char *end = strchr(s, ',');
		size_t len = end ? (size_t)(end - s) : strlen(s);
		char *t;

		if (len >= sizeof item || *n >= max)
			return TF_EINVAL;
		memcpy(item, s, len);
		item[len] = '\0';
		t = trim(item);
		if (tf_cidr_parse(t, &list[*n]))
			return TF_EINVAL;
		(*n)++;
		s += len + (end ? 1 : 0);
		if (end && !*s)
			return TF_EINVAL; /* a trailing comma: a range left out */
	}
	return TF_OK;
}

void tf_addr_policy_default(tf_addr_policy *p)
{
	memset(p, 0, sizeof *p);
	/* a constant list that parses: checked by test_config */
	(void)tf_cidr_list_add(default_deny, p->deny, &p->ndeny, TF_MAX_UPSTREAM_RULES);
}

static int in_range(const tf_cidr *c, const unsigned char addr[16])
{
	int full = c->bits / 8, rest = c->bits % 8;

	if (memcmp(c->addr, addr, (size_t)full))
		return 0;
	return !rest || !((c->addr[full] ^ addr[full]) & (0xff00 >> rest));
}

/* The longest range of list that holds addr: its length, or -1. */
static int longest(const tf_cidr *list, int n, const unsigned char addr[16])
{
	int best = -1;

	for (int i = 0; i < n; i++)
		if (list[i].bits > best && in_range(&list[i], addr))
			best = list[i].bits;
	return best;
}

int tf_addr_allowed(const tf_addr_policy *p, const unsigned char addr[16])
{
	int deny = longest(p->deny, p->ndeny, addr);

	return deny < 0 || longest(p->allow, p->nallow, addr) >= deny;
}

static int apply(tf_config *cfg, const char *k, const char *v)
{
	if (!strncmp(k, "token.", 6))
		return add_token(cfg, k + 6, v);
	if (!strncmp(k, "remote_user.", 12))
		return add_role_user(cfg, k + 12, v);
	if (!strcmp(k, "remote_user_role")) {
		if ((cfg->remote_user_role = tf_role_parse(v)) < 0)
			return TF_EINVAL;
	} else if (!strcmp(k, "api_token"))
		copy(cfg->api_token, sizeof cfg->api_token, v);
	else if (!strcmp(k, "metrics_token"))
		copy(cfg->metrics_token, sizeof cfg->metrics_token, v);
	else if (!strcmp(k, "export_token"))
		copy(cfg->export_token, sizeof cfg->export_token, v);
	else if (!strcmp(k, "trust_remote_user"))
		return set_int(&cfg->trust_remote_user, v, 0, 1);
	else if (!strcmp(k, "max_concurrent_runs"))
		return set_int(&cfg->max_concurrent_runs, v, 1, 1000);
	else if (!strcmp(k, "grace_period_s"))
		return set_int(&cfg->grace_period_s, v, 0, TF_MAX_GRACE_S);
	else if (!strcmp(k, "map_size_mb"))
		return set_int(&cfg->map_size_mb, v, 1, TF_MAX_MAP_MB);
	else if (!strcmp(k, "history_keep"))
		return set_int(&cfg->history_keep, v, 1, 100000);
	else if (!strcmp(k, "worker"))
		copy(cfg->worker, sizeof cfg->worker, v);
	else if (!strcmp(k, "db"))
		copy(cfg->db_path, sizeof cfg->db_path, v);
	else if (!strcmp(k, "log_debug"))
		return set_int(&cfg->log_debug, v, 0, 1);
	else if (!strcmp(k, "runs") && (!strcmp(v, "local") || !strcmp(v, "agents")))
		cfg->run_by_agents = !strcmp(v, "agents");
	else if (!strcmp(k, "webhook_url"))
		return *v && !tf_valid_webhook_url(v) ? TF_EINVAL
		                                   : (copy(cfg->webhook_url, sizeof cfg->webhook_url, v), TF_OK);
	else if (!strcmp(k, "webhook_secret"))
		return strlen(v) > TF_WEBHOOK_MAX_SECRET
		           ? TF_EINVAL
		           : (copy(cfg->webhook_secret, sizeof cfg->webhook_secret, v), TF_OK);
	else if (!strcmp(k, "proxy"))
		return *v && tf_feed_proxy_problem(v, 1) ? TF_EINVAL
		                                      : (copy(cfg->proxy, sizeof cfg->proxy, v), TF_OK);
	else if (!strcmp(k, "no_proxy"))
		return !tf_feed_valid_no_proxy(v) ? TF_EINVAL
		                                  : (copy(cfg->no_proxy, sizeof cfg->no_proxy, v), TF_OK);
	else if (!strcmp(k, "upstream_deny"))
		return tf_cidr_list_add(v, cfg->upstream.deny, &cfg->upstream.ndeny,
		                        (int)(sizeof cfg->upstream.deny / sizeof cfg->upstream.deny[0]));
	else if (!strcmp(k, "upstream_allow"))
		return tf_cidr_list_add(v, cfg->upstream.allow, &cfg->upstream.nallow,
		                        TF_MAX_UPSTREAM_RULES);
	else if (!strcmp(k, "webhook_attempts"))
		return set_int(&cfg->webhook_attempts, v, 1, TF_WEBHOOK_MAX_ATTEMPTS);
	else if (!strcmp(k, "webhook_timeout_s"))
		return set_int(&cfg->webhook_timeout_s, v, 1, TF_WEBHOOK_MAX_TIMEOUT_S);
	else
		return TF_EINVAL;
	return TF_OK;
}

static int read_file(tf_config *cfg, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	char line[1024];
	int lineno = 0;

	if (!f) {
		snprintf(err, errlen, "cannot read config %s", path);
		return TF_EINVAL;
	}
	while (fgets(line, sizeof line, f)) {
		char *s = trim(line), *eq;
		lineno++;
		if (!*s || *s == '#')
			continue;
		if (!(eq = strchr(s, '=')) || (*eq = '\0', apply(cfg, trim(s), trim(eq + 1)))) {
			snprintf(err, errlen, "%s:%d: bad setting", path, lineno);
			fclose(f);
			return TF_EINVAL;
		}
	}
	fclose(f);
	return TF_OK;
}

int tf_config_load(tf_config *cfg, const char *argv0, char *err, size_t errlen)
{
	const char *env;
	char dummy[8];

	if (!err) {
		err = dummy;
		errlen = sizeof dummy;
	}
	memset(cfg, 0, sizeof *cfg);
	cfg->max_concurrent_runs = TF_DEFAULT_MAX_RUNS;
	cfg->grace_period_s = TF_DEFAULT_GRACE_S;
	cfg->history_keep = TF_DEFAULT_HISTORY_KEEP;
	cfg->run_by_agents = -1; /* not set: decided by the store below */
	cfg->webhook_attempts = TF_WEBHOOK_DEFAULT_ATTEMPTS;
	cfg->webhook_timeout_s = TF_WEBHOOK_DEFAULT_TIMEOUT_S;
	/* Before roles, every web-server user could do everything: unchanged
	 * unless the config says otherwise. */
	cfg->remote_user_role = TF_ROLE_ADMIN;
	tf_addr_policy_default(&cfg->upstream);
	copy(cfg->state_dir, sizeof cfg->state_dir,
	     (env = getenv("THREATFEED_STATE_DIR")) && *env ? env : "/var/lib/threatfeed");
	default_worker(cfg, argv0);
	if ((env = getenv("THREATFEED_CONF")) && *env && read_file(cfg, env, err, errlen))
		return TF_EINVAL;
	if ((env = getenv("THREATFEED_DB")) && *env)
		copy(cfg->db_path, sizeof cfg->db_path, env);
	if (!cfg->db_path[0])
		snprintf(cfg->db_path, sizeof cfg->db_path, "%.500s/db", cfg->state_dir);
	if ((env = getenv("THREATFEED_RUNS")) && *env && apply(cfg, "runs", env)) {
		snprintf(err, errlen, "THREATFEED_RUNS must be local or agents");
		return TF_EINVAL;
	}
	if (cfg->run_by_agents < 0)
		cfg->run_by_agents = tf_store_is_pg(cfg->db_path);
	if ((env = getenv("THREATFEED_WORKER")) && *env)
		copy(cfg->worker, sizeof cfg->worker, env);
	{
		const char *slash = strrchr(cfg->worker, '/');
		int dir = slash ? (int)(slash - cfg->worker) : 0;
		snprintf(cfg->runner, sizeof cfg->runner, "%.*s%sthreatfeed-worker", dir,
		         cfg->worker, slash ? "/" : "");
	}
	return TF_OK;
}
