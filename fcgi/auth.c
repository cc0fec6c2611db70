#include "auth.h"
#include "router.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sha256.h"

const char *tf_auth_mode(const tf_config *cfg)
{
	if (cfg->api_token[0] || cfg->ntokens)
		return "token";
	return cfg->trust_remote_user ? "remote_user" : "none";
}

int tf_auth_ct_equal(const char *secret, const char *given, size_t given_len)
{
	size_t slen = strlen(secret);
	unsigned char diff = slen != given_len;

	/* Walk the secret, never the input: the time says nothing about how
	 * much of a guess was right. */
	for (size_t i = 0; i < slen; i++)
		diff |= (unsigned char)secret[i] ^ (unsigned char)(i < given_len ? given[i] : 0);
	return diff == 0 && slen > 0;
}

/* "Bearer <token>" (RFC 6750 §2.1; the scheme is case-insensitive per
 * RFC 9110 §11.1). Returns the token span or NULL. */
static const char *bearer_token(const char *h, size_t *len)
{
	const char *end;

	if (!h || strncasecmp(h, "Bearer", 6) || (h[6] != ' ' && h[6] != '\t'))
		return NULL;
	h += 6;
	while (*h == ' ' || *h == '\t')
		h++;
	end = h + strlen(h);
	while (end > h && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*len = (size_t)(end - h);
	return *len ? h : NULL;
}

static int b64val(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

int tf_auth_basic_password(const char *h, char *buf, size_t size, size_t *len)
{
	size_t n = 0;
	unsigned acc = 0;
	int bits = 0;
	const char *colon;

	if (!h || strncasecmp(h, "Basic", 5) || (h[5] != ' ' && h[5] != '\t'))
		return -1;
	for (h += 5; *h == ' ' || *h == '\t'; h++)
		;
	for (; *h && *h != '=' && *h != ' ' && *h != '\t'; h++) {
		int v = b64val((unsigned char)*h);
		if (v < 0)
			return -1;
		acc = (acc << 6 | (unsigned)v) & 0xffffff;
		if ((bits += 6) >= 8) {
			if (n + 1 >= size)
				return -1;
			bits -= 8;
			buf[n++] = (char)((acc >> bits) & 0xff);
		}
	}
	buf[n] = '\0';
	/* RFC 7617 §2: user-id ":" password; the user-id cannot hold a colon */
	if (memchr(buf, '\0', n) || !(colon = memchr(buf, ':', n)))
		return -1;
	*len = n - (size_t)(colon + 1 - buf);
	memmove(buf, colon + 1, *len + 1);
	return *len ? 0 : -1;
}

int tf_auth_digest_equal(const unsigned char *digest, const char *given, size_t given_len)
{
	unsigned char d[TF_SHA256_LEN];
	unsigned char diff = 0;

	tf_sha256(given, given_len, d);
	for (size_t i = 0; i < TF_SHA256_LEN; i++)
		diff |= d[i] ^ digest[i];
	return diff == 0 && given_len > 0;
}

const tf_token *tf_auth_named_token(const tf_config *cfg, const char *given, size_t given_len)
{
	const tf_token *found = NULL;

	/* Every token is compared, whichever matches: the time says nothing
	 * about which one (or whether one) was right. */
	for (int i = 0; i < cfg->ntokens; i++) {
		const tf_token *t = &cfg->tokens[i];
		int ok = t->hashed ? tf_auth_digest_equal(t->digest, given, given_len)
		                   : tf_auth_ct_equal(t->secret, given, given_len);
		if (ok && !found)
			found = t;
	}
	return found;
}

int tf_auth_user_role(const tf_config *cfg, const char *user)
{
	for (int i = 0; i < cfg->nrole_users; i++)
		if (!strcmp(cfg->role_users[i].name, user))
			return cfg->role_users[i].role;
	return cfg->remote_user_role;
}

static void set_who(tf_req *req, const char *auth, const char *remote_user)
{
	req->auth = auth;
	/* api_token is the one token of before roles: it can do everything. */
	req->role = !strcmp(auth, "export_token") || !strcmp(auth, "metrics_token")
	                ? TF_ROLE_VIEWER   /* their routes are all they reach */
	                : TF_ROLE_ADMIN;
	if (remote_user && *remote_user)
		snprintf(req->requested_by, sizeof req->requested_by, "%s", remote_user);
	else
		snprintf(req->requested_by, sizeof req->requested_by, "%s",
		         !strcmp(auth, "token")           ? "api-token"
		         : !strcmp(auth, "metrics_token") ? "metrics-token"
		                                          : "anonymous");
}

/* The one route the metrics token opens (matched here, before routing, on
 * the parsed segments: nothing else is revealed to its holder). */
static int metrics_request(const tf_req *req)
{
	return (req->method & (TF_M_GET | TF_M_HEAD)) && req->nseg == 2 &&
	       !strcmp(req->seg[0], "api") && !strcmp(req->seg[1], "metrics");
}

/* The export token (config export_token) opens the export routes only, for
 * reading, given as a Bearer token or, for devices that cannot send
 * headers, as ?token= (README.md says what that costs). */
static int export_token_ok(const tf_config *cfg, const tf_req *req)
{
	const tf_qparam *q = tf_req_query(req, "token");
	const tf_route *rt;
	const char *tok;
	size_t len = 0;

	if (!cfg->export_token[0] || !(req->method & (TF_M_GET | TF_M_HEAD)) ||
	    !(rt = tf_router_peek(req)) || !rt->export_token)
		return 0;
	if ((tok = bearer_token(tf_req_env(req, "HTTP_AUTHORIZATION"), &len)) &&
	    tf_auth_ct_equal(cfg->export_token, tok, len))
		return 1;
	return q && tf_auth_ct_equal(cfg->export_token, q->value, strlen(q->value));
}

int tf_auth_check(const tf_config *cfg, tf_req *req, tf_resp *resp)
{
	const char *user = tf_req_env(req, "REMOTE_USER");
	size_t len = 0;
	const char *tok = bearer_token(tf_req_env(req, "HTTP_AUTHORIZATION"), &len);
	const tf_token *named;
	char basic[512];

	/* TAXII clients send HTTP Basic (TAXII 2.1 §1.6.5): the password is the
	 * token, the user name anything (README "TAXII 2.1 server"). */
	if (!tok && req->taxii &&
	    !tf_auth_basic_password(tf_req_env(req, "HTTP_AUTHORIZATION"), basic, sizeof basic, &len))
		tok = basic;

	if (export_token_ok(cfg, req)) {
		set_who(req, "export_token", user);
		return 0;
	}
	if (cfg->api_token[0] && tok && tf_auth_ct_equal(cfg->api_token, tok, len)) {
		set_who(req, "token", user);
		return 0;
	}
	if (tok && (named = tf_auth_named_token(cfg, tok, len))) {
		set_who(req, "token", NULL);
		snprintf(req->requested_by, sizeof req->requested_by, "%s", named->name);
		req->role = named->role;
		return 0;
	}
	if (cfg->metrics_token[0] && tok && metrics_request(req) &&
	    tf_auth_ct_equal(cfg->metrics_token, tok, len)) {
		set_who(req, "metrics_token", user);
		return 0;
	}
	if (cfg->trust_remote_user && user && *user) {
		set_who(req, "remote_user", user);
		req->role = tf_auth_user_role(cfg, user);
		return 0;
	}
	if (!cfg->api_token[0] && !cfg->ntokens && !cfg->trust_remote_user) {
		set_who(req, "none", user);
		return 0;
	}
	resp->www_authenticate = req->taxii ? 2 : 1;
	return tf_resp_error(resp, 401, "unauthorized",
	                     req->taxii ? "a valid token is required: HTTP Basic with the token as "
	                                  "password, or 'Authorization: Bearer'" :
	                     cfg->api_token[0] || cfg->ntokens
	                         ? "a valid 'Authorization: Bearer' token is required"
	                         : "authentication required");
}

typedef struct hostport {
	const char *host;
	size_t hlen;
	const char *port;   /* NULL when absent */
	size_t plen;
} hostport;

/* Splits "host[:port]" / "[v6]:port" of length n. 0, or -1 when malformed. */
static int split_hostport(const char *s, size_t n, hostport *hp)
{
	const char *end = s + n, *colon = NULL;

	if (!n)
		return -1;
	if (*s == '[') {
		const char *rb = memchr(s, ']', n);
		if (!rb)
			return -1;
		if (rb + 1 < end && rb[1] != ':')
			return -1;
		colon = rb + 1 < end ? rb + 1 : NULL;
	} else {
		colon = memchr(s, ':', n);
	}
	hp->host = s;
	hp->hlen = colon ? (size_t)(colon - s) : n;
	hp->port = colon ? colon + 1 : NULL;
	hp->plen = colon ? (size_t)(end - colon - 1) : 0;
	if (!hp->hlen || (hp->port && !hp->plen))
		return -1;
	return 0;
}

static int is_default_port(const hostport *hp, const char *def)
{
	return !hp->port || (hp->plen == strlen(def) && !memcmp(hp->port, def, hp->plen));
}

int tf_auth_origin_matches(const char *origin, const char *host)
{
	const char *def, *rest;
	hostport o, h;

	if (!origin || !host)
		return 0;
	if (!strncasecmp(origin, "http://", 7)) {
		def = "80";
		rest = origin + 7;
	} else if (!strncasecmp(origin, "https://", 8)) {
		def = "443";
		rest = origin + 8;
	} else {
		return 0;   /* "null", file:, extensions: never same-origin */
	}
	/* An origin has no path, user info or query. */
	if (strpbrk(rest, "/?#@ ") || split_hostport(rest, strlen(rest), &o) ||
	    split_hostport(host, strlen(host), &h))
		return 0;
	if (o.hlen != h.hlen || strncasecmp(o.host, h.host, o.hlen))
		return 0;
	if (is_default_port(&o, def) && is_default_port(&h, def))
		return 1;
	return o.port && h.port && o.plen == h.plen && !memcmp(o.port, h.port, o.plen);
}

int tf_auth_csrf(const tf_req *req, tf_resp *resp)
{
	const char *site = tf_req_env(req, "HTTP_SEC_FETCH_SITE");
	const char *origin = tf_req_env(req, "HTTP_ORIGIN");

	if (!(req->method & TF_M_WRITE))
		return 0;
	if (site && !strcasecmp(site, "cross-site"))
		return tf_resp_error(resp, 403, "csrf", "cross-site write refused");
	if (origin && !tf_auth_origin_matches(origin, tf_req_env(req, "HTTP_HOST")))
		return tf_resp_error(resp, 403, "csrf", "Origin does not match Host: write refused");
	return 0;
}

int tf_auth_role_check(const tf_req *req, int need, tf_resp *resp)
{
	if (req->role >= need)
		return 0;
	return tf_resp_error(resp, 403, "forbidden_role",
	                     "role %s may not do this: it needs the %s role", tf_role_name(req->role),
	                     tf_role_name(need));
}
