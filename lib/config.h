/* Settings shared by both binaries: environment first (THREATFEED_DB,
 * THREATFEED_STATE_DIR, THREATFEED_WORKER), then the optional file named by
 * THREATFEED_CONF with `key = value` lines and `#` comments. */
#ifndef TF_CONFIG_H
#define TF_CONFIG_H

#include <stddef.h>

#include "tf_limits.h"
#include "sha256.h"

/* Roles, in order: each allows what the ones below it do (README "Roles").
 * NONE: authenticated but allowed nothing (a web-server user the config does
 * not map, with remote_user_role = none). */
typedef enum tf_role { TF_ROLE_NONE, TF_ROLE_VIEWER, TF_ROLE_OPERATOR, TF_ROLE_ADMIN } tf_role;

/* "viewer", "operator", "admin", "none". */
const char *tf_role_name(int role);
/* TF_ROLE_* of name, or -1. */
int tf_role_parse(const char *name);

/* A named token: `token.NAME = ROLE SECRET`, SECRET either the token itself
 * or "sha256:" and the 64 hex digits of its SHA-256. */
typedef struct tf_token {
	char name[TF_MAX_PRINCIPAL + 1];
	int role;
	int hashed;                              /* compare digests, not secrets */
	char secret[TF_MAX_TOKEN + 1];           /* when !hashed */
	unsigned char digest[TF_SHA256_LEN];     /* when hashed */
} tf_token;

/* `remote_user.NAME = ROLE`: the role of a web-server authenticated user. */
typedef struct tf_role_user {
	char name[TF_MAX_PRINCIPAL + 1];
	int role;
} tf_role_user;

/* One address range. IPv4 is kept as its IPv4-mapped IPv6 form
 * (::ffff:a.b.c.d, bits + 96), so one comparison covers an IPv4 peer and the
 * same peer reached over a dual-stack socket. */
typedef struct tf_cidr {
	unsigned char addr[16];
	int bits;
} tf_cidr;

/* Which addresses feed transfers may connect to (README "Which addresses
 * feeds may reach"): the longest matching range decides, allow winning a
 * tie; an address no range matches is allowed. */
typedef struct tf_addr_policy {
	tf_cidr deny[TF_MAX_UPSTREAM_RULES * 2];   /* the built-in list, then upstream_deny */
	int ndeny;
	tf_cidr allow[TF_MAX_UPSTREAM_RULES];
	int nallow;
} tf_addr_policy;

/* "10.0.0.0/8", "fe80::/10", "192.0.2.1" (a host: /32 or /128). TF_EINVAL
 * for anything else, including host bits set beyond the prefix. */
int tf_cidr_parse(const char *s, tf_cidr *out);
/* Appends the comma-separated ranges of s to list (n entries of max);
 * TF_EINVAL when one does not parse or there is no room. */
int tf_cidr_list_add(const char *s, tf_cidr *list, int *n, int max);
/* The built-in deny list, then nothing allowed beyond it. */
void tf_addr_policy_default(tf_addr_policy *p);
/* 1 when p lets a transfer connect to addr (16 bytes, IPv4 as ::ffff:v4). */
int tf_addr_allowed(const tf_addr_policy *p, const unsigned char addr[16]);

typedef struct tf_config {
	char state_dir[512];
	char db_path[512];
	char worker[512];          /* the `threatfeed` binary runs are spawned with */
	char runner[512];          /* `threatfeed-worker`, beside it: the curl side */
	char api_token[256];       /* empty: no token required */
	char metrics_token[256];   /* also admits GET /api/metrics; empty: none */
	char export_token[256];    /* reads exports only, also as ?token= (empty: none) */
	int trust_remote_user;
	tf_token tokens[TF_MAX_TOKENS];
	int ntokens;
	tf_role_user role_users[TF_MAX_ROLE_USERS];
	int nrole_users;
	int remote_user_role;      /* for users not listed: admin unless configured */
	int max_concurrent_runs;
	int grace_period_s;
	int history_keep;          /* finished tasks kept per feed by gc */
	/* LMDB: the map a new store starts with, in MiB (0: the store's default,
	 * 256); the store doubles it whenever a write needs more, under readers
	 * too. A store already bigger keeps its size. Small values are for
	 * tests that grow the map (the soak). */
	int map_size_mb;
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
	/* The proxy of every feed without its own (lib/feed.h tf_feed_net):
	 * scheme://[user:pass@]host:port, empty: none; and the hosts reached
	 * directly through it. README "Proxies, private CAs and client
	 * certificates". Never logged: it may hold a password. */
	char proxy[1024];
	char no_proxy[TF_MAX_NO_PROXY + 1];
	/* upstream_deny / upstream_allow on top of the built-in deny list. */
	tf_addr_policy upstream;
} tf_config;

/* cfg->map_size_mb in bytes, as tf_store_open takes it (0: the default). */
static inline size_t tf_config_map_bytes(const tf_config *cfg)
{
	return (size_t)cfg->map_size_mb << 20;
}

/* Fills cfg from defaults, the environment and the config file. argv0 is used
 * to find `threatfeed` beside the running binary when THREATFEED_WORKER is
 * unset. On TF_EINVAL, err (if not NULL) holds a one-line reason. */
int tf_config_load(tf_config *cfg, const char *argv0, char *err, size_t errlen);

#endif
