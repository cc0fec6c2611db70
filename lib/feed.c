#include "feed.h"
#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "metrics.h"
#include "records.h"
#include "task.h"
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const feed_types[] = {"taxii21", "otx", "virustotal", "stix_bundle"};
/* Fields the API returns but a client cannot set: accepted and ignored, so a
 * script may send back what it read. */
static const char *const read_only[] = {"has_secret", "has_proxy_secret", "has_client_key",
                                        "last_task_id", "last_status", "last_run_at",
                                        "active_task_id", "indicator_count", "created_at",
                                        "updated_at"};
/* Optional top-level fields: null clears them; the write-only ones
 * (secret, proxy_secret, client_key_pem) are kept when a client leaves
 * them out, since it was never shown them. */
static const char *const optional[] = {"collection", "username", "secret", "proxy", "no_proxy",
                                       "proxy_username", "proxy_secret", "ca_pem",
                                       "client_cert_pem", "client_key_pem"};

/* Every option a feed may carry, and the ones each type reads (the drivers in
 * worker/feeds/, and worker/supervisor.c for grace_period_s): the API form
 * shows each option of the feed's type, null when unset. */
static const char *const all_options[] = {"page_size", "requests_per_minute", "targets",
                                          "grace_period_s", "ttl_days", "webhook_url",
                                          "webhook_secret", "has_webhook_secret"};
/* Every type's run ends and may be reported (worker/webhook.h); the API form
 * shows these only when set, so a feed without a webhook looks as before.
 * webhook_secret is write-only like the feed's secret: has_webhook_secret
 * says whether one is set, and a client may send it back (ignored). */
static const struct {
	const char *type;
	const char *const options[5];
} type_options[] = {
	{"taxii21", {"page_size", "grace_period_s", "ttl_days"}},
	{"otx", {"page_size", "grace_period_s", "ttl_days"}},
	{"virustotal", {"targets", "requests_per_minute", "grace_period_s", "ttl_days"}},
	{"stix_bundle", {"grace_period_s", "ttl_days"}},
};

#define FAIL(...) (snprintf(err, errlen, __VA_ARGS__), TF_EINVAL)

static int in_list(const char *s, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(s, list[i]))
			return 1;
	return 0;
}

static int check_str(json_object *v, const char *k, size_t min, size_t max, char *err,
                     size_t errlen)
{
	size_t n;
	if (!json_object_is_type(v, json_type_string))
		return FAIL("%s: must be a string", k);
	n = (size_t)json_object_get_string_len(v);
	if (n < min)
		return FAIL("%s: must not be empty", k);
	if (n > max)
		return FAIL("%s: longer than %zu characters", k, max);
	for (const char *s = json_object_get_string(v); *s; s++)
		if ((unsigned char)*s < 0x20)
			return FAIL("%s: contains control characters", k);
	return TF_OK;
}

static int check_url(json_object *v, char *err, size_t errlen)
{
	const char *s;
	int rc = check_str(v, "url", 1, TF_MAX_URL, err, errlen);
	if (rc)
		return rc;
	s = json_object_get_string(v);
	if (strncasecmp(s, "http://", 7) && strncasecmp(s, "https://", 8))
		return FAIL("url: must be an http or https URL");
	for (; *s; s++)
		if (isspace((unsigned char)*s))
			return FAIL("url: must not contain spaces");
	return TF_OK;
}

static int check_int(json_object *v, const char *k, int64_t min, int64_t max, char *err,
                     size_t errlen)
{
	int64_t x;
	if (!json_object_is_type(v, json_type_int))
		return FAIL("%s: must be an integer", k);
	x = json_object_get_int64(v);
	if (x < min || x > max)
		return FAIL("%s: must be between %lld and %lld", k, (long long)min, (long long)max);
	return TF_OK;
}

static int check_targets(json_object *v, char *err, size_t errlen)
{
	size_t n;
	if (!json_object_is_type(v, json_type_array))
		return FAIL("options.targets: must be an array of strings");
	n = json_object_array_length(v);
	if (n > TF_MAX_TARGETS)
		return FAIL("options.targets: more than %d entries", TF_MAX_TARGETS);
	for (size_t i = 0; i < n; i++)
		if (check_str(json_object_array_get_idx(v, i), "options.targets[]", 1, TF_MAX_URL,
		              err, errlen))
			return TF_EINVAL;
	return TF_OK;
}

/* worker/webhook.c posts the run's end there (README "Webhooks"). */
static int check_webhook_url(json_object *v, char *err, size_t errlen)
{
	if (check_str(v, "options.webhook_url", 1, TF_WEBHOOK_MAX_URL, err, errlen))
		return TF_EINVAL;
	if (!tf_valid_webhook_url(json_object_get_string(v)))
		return FAIL("options.webhook_url: must be an http or https URL without spaces");
	return TF_OK;
}

static int check_options(json_object *opts, char *err, size_t errlen)
{
	if (!json_object_is_type(opts, json_type_object))
		return FAIL("options: must be an object");
	json_object_object_foreach(opts, k, v) {
		int rc;
		if (!in_list(k, all_options, sizeof all_options / sizeof *all_options))
			return FAIL("options.%.64s: unknown option", k);
		/* null: unset, the default applies (the API shows unset options as
		 * null, so a client may send back what it read) */
		if (!v)
			continue;
		if (!strcmp(k, "page_size"))
			rc = check_int(v, "options.page_size", 1, TF_MAX_PAGE_OBJECTS, err, errlen);
		else if (!strcmp(k, "requests_per_minute"))
			rc = check_int(v, "options.requests_per_minute", 1, TF_MAX_REQUESTS_PER_MINUTE, err,
			               errlen);
		else if (!strcmp(k, "targets"))
			rc = check_targets(v, err, errlen);
		else if (!strcmp(k, "ttl_days")) /* lib/index.c: expiry of unrefreshed values */
			rc = check_int(v, "options.ttl_days", 1, TF_MAX_TTL_DAYS, err, errlen);
		else if (!strcmp(k, "webhook_url"))
			rc = check_webhook_url(v, err, errlen);
		else if (!strcmp(k, "webhook_secret"))
			rc = check_str(v, "options.webhook_secret", 1, TF_WEBHOOK_MAX_SECRET, err, errlen);
		else if (!strcmp(k, "has_webhook_secret"))
			rc = TF_OK; /* read-only: what the API showed, sent back */
		else /* grace_period_s */
			rc = check_int(v, "options.grace_period_s", 0, TF_MAX_GRACE_S, err, errlen);
		if (rc)
			return rc;
	}
	return TF_OK;
}


/* ---- enterprise networks: proxy, CA, client certificate ---------------------- */

static const char *scheme_end(const char *url)
{
	static const char *const schemes[] = {"http://", "https://", "socks4://", "socks4a://",
	                                      "socks5://", "socks5h://"};
	for (size_t i = 0; i < sizeof schemes / sizeof *schemes; i++)
		if (!strncasecmp(url, schemes[i], strlen(schemes[i])))
			return url + strlen(schemes[i]);
	return NULL;
}

const char *tf_feed_proxy_problem(const char *url, int allow_userinfo)
{
	const char *host = scheme_end(url), *end;

	if (!host)
		return "must be an http://, https://, socks4://, socks4a://, socks5:// or "
		       "socks5h:// URL";
	end = host + strcspn(host, "/?#");
	if (memchr(host, '@', (size_t)(end - host)) && !allow_userinfo)
		return "must not hold credentials: set proxy_username and proxy_secret";
	if (memrchr(host, '@', (size_t)(end - host)))
		host = (const char *)memrchr(host, '@', (size_t)(end - host)) + 1;
	if (end == host || *host == ':')
		return "names no host";
	if (*end && strcmp(end, "/"))
		return "must be scheme://host:port, without a path";
	for (; *url; url++)
		if ((unsigned char)*url <= 0x20 || (unsigned char)*url == 0x7f)
			return "must not contain spaces or control characters";
	return NULL;
}

int tf_feed_valid_no_proxy(const char *s)
{
	if (strlen(s) > TF_MAX_NO_PROXY)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr(".,-_:*[]/ ", *s))
			return 0;
	return 1;
}

/* The 6-bit value of a base64 digit, -1 for anything else. */
static int b64(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '+' ? 62 : c == '/' ? 63 : -1;
}

/* Whether the base64 between p and e decodes to one DER SEQUENCE whose
 * length is exactly the decoded size: what every certificate and key is. */
static int der_sequence(const char *p, const char *e)
{
	unsigned char head[6];
	size_t bits = 0, n = 0, pad = 0, hl, len = 0;
	unsigned acc = 0;

	for (; p < e; p++) {
		int v = b64((unsigned char)*p);
		if (*p == '=' && (pad || n >= 2) && ++pad <= 2)
			continue;
		if (v < 0 && !isspace((unsigned char)*p))
			return 0;
		if (v < 0)
			continue;
		if (pad)
			return 0;
		acc = (acc << 6 | (unsigned)v) & 0xffffff;
		if ((bits += 6) >= 8) {
			bits -= 8;
			if (n < sizeof head)
				head[n] = (unsigned char)(acc >> bits);
			n++;
		}
	}
	if (n < 2 || head[0] != 0x30)
		return 0;
	if (head[1] < 0x80) {
		len = head[1];
		hl = 2;
	} else {
		hl = 2 + (head[1] & 0x7f);
		if (hl < 3 || hl > sizeof head || n < hl)
			return 0;
		for (size_t i = 2; i < hl; i++)
			len = len << 8 | head[i];
	}
	return hl + len == n;
}

enum pem_kind { PEM_CERTS, PEM_KEY };

/* One PEM block at *p (just after "-----BEGIN "): its label into label,
 * *p moved past its END line. NULL when fine, else what is wrong. */
static const char *pem_block(const char **p, char *label, size_t llen)
{
	const char *s = *p, *dash = strstr(s, "-----"), *body, *end;
	char endline[96];

	if (!dash || (size_t)(dash - s) >= llen || dash == s || memchr(s, '\n', (size_t)(dash - s)))
		return "a BEGIN line is malformed";
	memcpy(label, s, (size_t)(dash - s));
	label[dash - s] = '\0';
	body = dash + 5;
	if (strstr(label, "ENCRYPTED") || strstr(body, "Proc-Type:") == body + strspn(body, "\r\n"))
		return "holds an encrypted key: give the key without a passphrase";
	snprintf(endline, sizeof endline, "-----END %s-----", label);
	if (!(end = strstr(body, endline)))
		return "a block has no matching END line";
	if (!der_sequence(body, end))
		return "a block is not base64 of a certificate or key";
	*p = end + strlen(endline);
	return NULL;
}

static int is_key_label(const char *label)
{
	return !strcmp(label, "PRIVATE KEY") || !strcmp(label, "RSA PRIVATE KEY") ||
	       !strcmp(label, "EC PRIVATE KEY");
}

/* A syntactic check of PEM text (the worker's TLS library parses it for
 * real): every block well formed, of the kind wanted, at least one; text
 * between blocks (openssl's "subject=" lines) is allowed, as OpenSSL does. */
static const char *pem_problem(const char *text, enum pem_kind kind)
{
	const char *p = text, *why;
	char label[64];
	int blocks = 0;

	while ((p = strstr(p, "-----BEGIN "))) {
		p += 11;
		if ((why = pem_block(&p, label, sizeof label)))
			return why;
		if (kind == PEM_CERTS && is_key_label(label))
			return "holds a private key (only a certificate belongs here)";
		if (kind == PEM_CERTS && strcmp(label, "CERTIFICATE") &&
		    strcmp(label, "TRUSTED CERTIFICATE"))
			return "holds a block that is not a CERTIFICATE";
		if (kind == PEM_KEY && !is_key_label(label))
			return "must be a PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block";
		blocks++;
	}
	if (!blocks)
		return kind == PEM_KEY ? "is not a PEM private key (-----BEGIN PRIVATE KEY-----)"
		                       : "is not PEM (-----BEGIN CERTIFICATE-----)";
	if (kind == PEM_KEY && blocks > 1)
		return "must hold one key";
	return NULL;
}

static int check_pem(json_object *v, const char *k, size_t max, enum pem_kind kind, char *err,
                     size_t errlen)
{
	const char *s, *why;
	size_t n;

	if (!json_object_is_type(v, json_type_string))
		return FAIL("%s: must be a string", k);
	s = json_object_get_string(v);
	n = (size_t)json_object_get_string_len(v);
	if (n > max)
		return FAIL("%s: longer than %zu bytes", k, max);
	if (strlen(s) != n)
		return FAIL("%s: contains a NUL byte", k);
	return (why = pem_problem(s, kind)) ? FAIL("%s: %s", k, why) : TF_OK;
}

static int check_proxy(json_object *v, char *err, size_t errlen)
{
	const char *why;

	if (check_str(v, "proxy", 0, TF_MAX_URL, err, errlen))
		return TF_EINVAL;
	if (!json_object_get_string_len(v)) /* "": this feed goes direct */
		return TF_OK;
	return (why = tf_feed_proxy_problem(json_object_get_string(v), 0)) ? FAIL("proxy: %s", why)
	                                                                   : TF_OK;
}

/* Fields of the network settings; 1 when k is one of them (rc set). */
static int check_net_field(const char *k, json_object *v, int *rc, char *err, size_t errlen)
{
	if (!strcmp(k, "proxy"))
		*rc = check_proxy(v, err, errlen);
	else if (!strcmp(k, "no_proxy"))
		*rc = check_str(v, k, 0, TF_MAX_NO_PROXY, err, errlen) ? TF_EINVAL
		      : tf_feed_valid_no_proxy(json_object_get_string(v))
		          ? TF_OK
		          : FAIL("no_proxy: a comma-separated list of host names, domains or addresses");
	else if (!strcmp(k, "proxy_username") || !strcmp(k, "proxy_secret"))
		*rc = check_str(v, k, 1, TF_MAX_FIELD, err, errlen);
	else if (!strcmp(k, "ca_pem"))
		*rc = check_pem(v, k, TF_MAX_CA_PEM, PEM_CERTS, err, errlen);
	else if (!strcmp(k, "client_cert_pem"))
		*rc = check_pem(v, k, TF_MAX_CERT_PEM, PEM_CERTS, err, errlen);
	else if (!strcmp(k, "client_key_pem"))
		*rc = check_pem(v, k, TF_MAX_KEY_PEM, PEM_KEY, err, errlen);
	else
		return 0;
	return 1;
}

/* The settings that only make sense together (README "Proxies, private CAs
 * and client certificates"). */
static int check_net_complete(json_object *f, char *err, size_t errlen)
{
	const char *proxy = tf_json_str(f, "proxy");

	if ((tf_json_str(f, "proxy_username") || tf_json_str(f, "proxy_secret")) &&
	    (!proxy || !*proxy))
		return FAIL("proxy_username: proxy credentials need the feed's own proxy");
	if (tf_json_str(f, "proxy_secret") && !tf_json_str(f, "proxy_username"))
		return FAIL("proxy_username: required with proxy_secret");
	if (!tf_json_str(f, "client_cert_pem") != !tf_json_str(f, "client_key_pem"))
		return FAIL("%s: required with %s",
		            tf_json_str(f, "client_key_pem") ? "client_cert_pem" : "client_key_pem",
		            tf_json_str(f, "client_key_pem") ? "client_key_pem" : "client_cert_pem");
	return TF_OK;
}

void tf_feed_net_of(json_object *feed, const char *global_proxy, const char *global_no_proxy,
                    tf_feed_net *net)
{
	const char *proxy = tf_json_str(feed, "proxy"), *no_proxy = tf_json_str(feed, "no_proxy");

	memset(net, 0, sizeof *net);
	if (proxy) { /* the feed's own, or "" for none */
		net->proxy = proxy;
		net->proxy_username = tf_json_str(feed, "proxy_username");
		net->proxy_secret = tf_json_str(feed, "proxy_secret");
	} else if (global_proxy && *global_proxy) {
		net->proxy = global_proxy;
	}
	if (net->proxy && *net->proxy)
		net->no_proxy = no_proxy ? no_proxy : global_no_proxy ? global_no_proxy : "";
	net->ca_pem = tf_json_str(feed, "ca_pem");
	net->client_cert_pem = tf_json_str(feed, "client_cert_pem");
	net->client_key_pem = tf_json_str(feed, "client_key_pem");
}

static int check_field(const char *k, json_object *v, char *err, size_t errlen)
{
	int rc;

	if (check_net_field(k, v, &rc, err, errlen))
		return rc;
	if (!strcmp(k, "id"))
		return json_object_is_type(v, json_type_string) &&
		               tf_valid_feed_id(json_object_get_string(v))
		           ? TF_OK
		           : FAIL("id: must match [a-z0-9][a-z0-9_-]{0,63} and not be reserved");
	if (!strcmp(k, "name"))
		return check_str(v, k, 1, TF_MAX_NAME, err, errlen);
	if (!strcmp(k, "type"))
		return json_object_is_type(v, json_type_string) &&
		               in_list(json_object_get_string(v), feed_types, 4)
		           ? TF_OK
		           : FAIL("type: must be one of taxii21, otx, virustotal, stix_bundle");
	if (!strcmp(k, "url"))
		return check_url(v, err, errlen);
	if (!strcmp(k, "collection") || !strcmp(k, "username") || !strcmp(k, "secret"))
		return v ? check_str(v, k, 0, TF_MAX_FIELD, err, errlen) : TF_OK;
	if (!strcmp(k, "enabled"))
		return json_object_is_type(v, json_type_boolean) ? TF_OK
		                                                 : FAIL("enabled: must be true or false");
	if (!strcmp(k, "interval_s"))
		return check_int(v, k, 0, TF_MAX_INTERVAL_S, err, errlen);
	if (!strcmp(k, "options"))
		return check_options(v, err, errlen);
	return FAIL("%.64s: unknown field", k);
}

/* A copy of the options object without its null (unset) members: the
 * stored form holds only the options that are set. */
static json_object *without_nulls(json_object *opts)
{
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	json_object_object_foreach(opts, k, v)
		if (v && strcmp(k, "has_webhook_secret"))
			json_object_object_add(o, k, json_object_get(v));
	return o;
}

/* The options a client sends replace the stored ones, but a client cannot
 * send back a webhook_secret it was never shown: one it leaves out is kept
 * (null clears it, a string replaces it). */
static json_object *new_options(json_object *stored, json_object *sent)
{
	json_object *o = without_nulls(sent), *old = NULL, *secret = NULL;

	if (o && !json_object_object_get_ex(sent, "webhook_secret", NULL) &&
	    json_object_object_get_ex(stored, "options", &old) &&
	    json_object_object_get_ex(old, "webhook_secret", &secret) && secret)
		json_object_object_add(o, "webhook_secret", json_object_get(secret));
	return o;
}

/* Copies the settable fields of body over stored, validating each. */
static int merge(json_object *stored, json_object *body, char *err, size_t errlen)
{
	if (!json_object_is_type(body, json_type_object))
		return FAIL("body: must be a JSON object");
	json_object_object_foreach(body, k, v) {
		int rc;
		if (in_list(k, read_only, sizeof read_only / sizeof *read_only))
			continue;
		/* null clears an optional field (e.g. the secret) */
		if (!v && in_list(k, optional, sizeof optional / sizeof *optional)) {
			json_object_object_del(stored, k);
			continue;
		}
		if (!v)
			return FAIL("%.64s: must not be null", k);
		if ((rc = check_field(k, v, err, errlen)))
			return rc;
		if (!strcmp(k, "options"))
			v = new_options(stored, v);
		else
			json_object_get(v);
		if (!v)
			return TF_ENOMEM;
		json_object_object_add(stored, k, v);
	}
	return TF_OK;
}

static int check_complete(json_object *f, char *err, size_t errlen)
{
	static const char *const required[] = {"name", "type", "url"};
	for (size_t i = 0; i < 3; i++)
		if (!json_object_object_get_ex(f, required[i], NULL))
			return FAIL("%s: required", required[i]);
	if (!strcmp(tf_json_str(f, "type"), "taxii21") && !tf_json_str(f, "collection"))
		return FAIL("collection: required for taxii21 feeds");
	return check_net_complete(f, err, errlen);
}

/* A readable id from the name: "Demo TAXII 2.1" → "demo-taxii-2-1". */
static void slug(const char *name, char *out, size_t len)
{
	size_t n = 0;
	for (; *name && n + 1 < len && n < 48; name++) {
		char c = (char)tolower((unsigned char)*name);
		if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			out[n++] = c;
		else if (n && out[n - 1] != '-')
			out[n++] = '-';
	}
	while (n && out[n - 1] == '-')
		n--;
	out[n] = '\0';
	if (!tf_valid_feed_id(out))
		snprintf(out, len, "feed");
}

/* ---- API form --------------------------------------------------------------- */

static void add_str(json_object *o, const char *k, const void *v, size_t vl)
{
	json_object_object_add(o, k, v ? json_object_new_string_len(v, (int)vl) : NULL);
}

/* dst[k] = src[k] (src may be NULL), or null: a field is never left out. */
static void copy_field(json_object *dst, json_object *src, const char *k)
{
	json_object *v = NULL;
	json_object_object_get_ex(src, k, &v);
	json_object_object_add(dst, k, json_object_get(v));
}

/* The options of the feed's type, each one (null when unset), then any other
 * option stored (accepted for every type, read by none of this type's code). */
static json_object *api_options(json_object *stored)
{
	json_object *o = json_object_new_object(), *opts = NULL;
	const char *type = tf_json_str(stored, "type");

	if (!o)
		return NULL;
	json_object_object_get_ex(stored, "options", &opts);
	for (size_t i = 0; type && i < sizeof type_options / sizeof *type_options; i++) {
		if (strcmp(type, type_options[i].type))
			continue;
		for (size_t j = 0; type_options[i].options[j]; j++)
			copy_field(o, opts, type_options[i].options[j]);
	}
	if (json_object_is_type(opts, json_type_object)) {
		json_object_object_foreach(opts, k, v) {
			if (!strcmp(k, "webhook_secret"))
				json_object_object_add(o, "has_webhook_secret", json_object_new_boolean(1));
			else if (!json_object_object_get_ex(o, k, NULL))
				json_object_object_add(o, k, json_object_get(v));
		}
	}
	return o;
}

/* last_task_id, last_status, last_run_at and active_task_id. */
static void api_run_fields(tf_txn *txn, const char *id, json_object *o)
{
	json_object *run = NULL;
	const void *v;
	size_t vl;

	if (!tf_txn_get(txn, TF_TBL_FEEDRUN, id, strlen(id), &v, &vl))
		tf_json_parse(v, vl, 4, &run, NULL, 0);
	copy_field(o, run, "last_task_id");
	copy_field(o, run, "last_status");
	copy_field(o, run, "last_run_at");
	json_object_put(run);
	if (!tf_txn_get(txn, TF_TBL_ACTIVE, id, strlen(id), &v, &vl)) {
		char tid[TF_UUID_LEN + 1];
		tf_task *t;
		add_str(o, "active_task_id", v, vl);
		snprintf(tid, sizeof tid, "%.*s", (int)vl, (const char *)v);
		/* The active run is the feed's latest: its status is the feed's status. */
		if (!tf_task_load(txn, tid, &t)) {
			add_str(o, "last_task_id", tid, TF_UUID_LEN);
			add_str(o, "last_status", tf_status_name(tf_task_status(t)),
			        strlen(tf_status_name(tf_task_status(t))));
			tf_task_free(t);
		}
	} else {
		json_object_object_add(o, "active_task_id", NULL);
	}
}

/* docs/SPEC.md §2: every field in every answer, null when unset, built field by field
 * from the stored form, so the secret (and anything else stored) cannot slip
 * through. */
static int api_form(tf_txn *txn, json_object *stored, json_object **out)
{
	static const char *const settable[] = {"id", "name", "type", "url", "collection", "username"};
	/* the readable network settings; proxy_secret and client_key_pem are
	 * write-only: has_proxy_secret and has_client_key say whether set */
	static const char *const net[] = {"proxy", "no_proxy", "proxy_username", "ca_pem",
	                                  "client_cert_pem"};
	json_object *o = json_object_new_object(), *opts = api_options(stored);
	const char *id = tf_json_str(stored, "id"), *secret = tf_json_str(stored, "secret");
	uint64_t count = 0;

	if (!o || !opts || !id) {
		int rc = o && opts ? TF_ESTORE : TF_ENOMEM;
		json_object_put(o);
		json_object_put(opts);
		return rc;
	}
	for (size_t i = 0; i < sizeof settable / sizeof *settable; i++)
		copy_field(o, stored, settable[i]);
	json_object_object_add(o, "has_secret", json_object_new_boolean(secret && *secret));
	for (size_t i = 0; i < sizeof net / sizeof *net; i++)
		copy_field(o, stored, net[i]);
	json_object_object_add(o, "has_proxy_secret",
	                       json_object_new_boolean(tf_json_str(stored, "proxy_secret") != NULL));
	json_object_object_add(o, "has_client_key",
	                       json_object_new_boolean(tf_json_str(stored, "client_key_pem") != NULL));
	copy_field(o, stored, "enabled");
	copy_field(o, stored, "interval_s");
	json_object_object_add(o, "options", opts);
	api_run_fields(txn, id, o);
	tf_records_count(txn, id, &count);
	json_object_object_add(o, "indicator_count", json_object_new_int64((int64_t)count));
	copy_field(o, stored, "created_at");
	copy_field(o, stored, "updated_at");
	*out = o;
	return TF_OK;
}

static int api_text(tf_txn *txn, json_object *stored, char **json, size_t *len)
{
	json_object *o;
	int rc = api_form(txn, stored, &o);

	if (rc)
		return rc;
	rc = tf_json_dup_text(o, json, len);
	json_object_put(o);
	return rc;
}

void tf_feed_webhook(json_object *feed, const char *global_url, const char *global_secret,
                     const char **url, const char **secret)
{
	json_object *opts = NULL;
	const char *u = NULL, *k = NULL;

	if (json_object_object_get_ex(feed, "options", &opts)) {
		u = tf_json_str(opts, "webhook_url");
		k = tf_json_str(opts, "webhook_secret");
	}
	if (!u || !*u)
		u = global_url && *global_url ? global_url : NULL;
	if (!k || !*k)
		k = global_secret && *global_secret ? global_secret : NULL;
	*url = u;
	*secret = k;
}

int tf_feed_load(tf_txn *txn, const char *id, json_object **out)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_FEEDS, id, strlen(id), &v, &vl);
	if (rc)
		return rc;
	return tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, out, NULL, 0) ? TF_ESTORE : TF_OK;
}

static int save(tf_txn *txn, json_object *stored)
{
	const char *id = tf_json_str(stored, "id"), *text;
	size_t n;
	char ts[TF_TIME_LEN + 1];

	tf_time_format(tf_now_us(), ts, sizeof ts);
	json_object_object_add(stored, "updated_at", json_object_new_string(ts));
	text = tf_json_text(stored, &n);
	return tf_txn_put(txn, TF_TBL_FEEDS, id, strlen(id), text, n);
}

/* ---- operations ------------------------------------------------------------- */

struct write_ctx {
	const char *id;
	json_object *body;
	char *json;
	size_t len;
	char *err;
	size_t errlen;
};

static int create_txn(tf_txn *txn, void *vctx)
{
	struct write_ctx *c = vctx;
	json_object *f = json_object_new_object();
	char id[TF_MAX_FEED_ID + 1], ts[TF_TIME_LEN + 1];
	const void *v;
	size_t vl;
	int rc;

	free(c->json); /* a replay after map growth starts over */
	c->json = NULL;
	if (!f)
		return TF_ENOMEM;
	json_object_object_add(f, "enabled", json_object_new_boolean(1));
	json_object_object_add(f, "interval_s", json_object_new_int(0));
	json_object_object_add(f, "options", json_object_new_object());
	if ((rc = merge(f, c->body, c->err, c->errlen)) ||
	    (rc = check_complete(f, c->err, c->errlen)))
		goto out;
	if (tf_json_str(f, "id")) {
		snprintf(id, sizeof id, "%s", tf_json_str(f, "id"));
		if (!tf_txn_get(txn, TF_TBL_FEEDS, id, strlen(id), &v, &vl)) {
			snprintf(c->err, c->errlen, "a feed with id '%s' already exists", id);
			rc = TF_EEXIST;
			goto out;
		}
	} else {
		char base[TF_MAX_FEED_ID + 1];
		slug(tf_json_str(f, "name"), base, sizeof base);
		snprintf(id, sizeof id, "%s", base);
		for (int i = 2; !tf_txn_get(txn, TF_TBL_FEEDS, id, strlen(id), &v, &vl); i++)
			snprintf(id, sizeof id, "%.48s-%d", base, i);
		json_object_object_add(f, "id", json_object_new_string(id));
	}
	tf_time_format(tf_now_us(), ts, sizeof ts);
	json_object_object_add(f, "created_at", json_object_new_string(ts));
	if (!(rc = save(txn, f)) && !(rc = tf_metrics_feed_created(txn, id)))
		rc = api_text(txn, f, &c->json, &c->len);
out:
	json_object_put(f);
	return rc;
}

int tf_feed_create(tf_store *st, json_object *body, char **json, size_t *len, char *err,
                   size_t errlen)
{
	char dummy[8];
	struct write_ctx c = {.body = body, .err = err ? err : dummy, .errlen = err ? errlen : 8};
	int rc = tf_store_update(st, create_txn, &c);
	if (rc) {
		free(c.json);
		c.json = NULL;
	}
	*json = c.json;
	if (len)
		*len = c.len;
	return rc;
}

static int patch_txn(tf_txn *txn, void *vctx)
{
	struct write_ctx *c = vctx;
	json_object *f, *newid;
	const void *v;
	size_t vl;
	int rc = tf_feed_load(txn, c->id, &f);

	free(c->json);
	c->json = NULL;
	if (rc)
		return rc;
	if (!tf_txn_get(txn, TF_TBL_ACTIVE, c->id, strlen(c->id), &v, &vl)) {
		snprintf(c->err, c->errlen, "a run of this feed is active");
		rc = TF_ECONFLICT;
	} else if (!(rc = merge(f, c->body, c->err, c->errlen)) &&
	           !(rc = check_complete(f, c->err, c->errlen))) {
		if (json_object_object_get_ex(f, "id", &newid) &&
		    strcmp(json_object_get_string(newid), c->id)) {
			snprintf(c->err, c->errlen, "id: cannot be changed");
			rc = TF_EINVAL;
		} else if (!(rc = save(txn, f))) {
			rc = api_text(txn, f, &c->json, &c->len);
		}
	}
	json_object_put(f);
	return rc;
}

int tf_feed_patch(tf_store *st, const char *id, json_object *body, char **json, size_t *len,
                  char *err, size_t errlen)
{
	char dummy[8];
	struct write_ctx c = {.id = id, .body = body, .err = err ? err : dummy,
	                      .errlen = err ? errlen : 8};
	int rc = tf_store_update(st, patch_txn, &c);
	if (rc) {
		free(c.json);
		c.json = NULL;
	}
	*json = c.json;
	if (len)
		*len = c.len;
	return rc;
}

static int delete_txn(tf_txn *txn, void *vctx)
{
	const char *id = vctx;
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_FEEDS, id, strlen(id), &v, &vl);

	if (rc)
		return rc;
	if (!tf_txn_get(txn, TF_TBL_ACTIVE, id, strlen(id), &v, &vl))
		return TF_ECONFLICT;
	if ((rc = tf_records_drop_feed(txn, id)) || (rc = tf_txn_del(txn, TF_TBL_FEEDS, id, strlen(id))))
		return rc;
	tf_txn_del(txn, TF_TBL_FEEDRUN, id, strlen(id));
	tf_txn_del(txn, TF_TBL_SIGNALS, id, strlen(id));
	return tf_metrics_feed_deleted(txn, id);
}

int tf_feed_delete(tf_store *st, const char *id)
{
	return tf_store_update(st, delete_txn, (void *)id);
}

static int read_txn(tf_txn *txn, void *vctx)
{
	struct write_ctx *c = vctx;
	json_object *f;
	int rc = tf_feed_load(txn, c->id, &f);
	if (rc)
		return rc;
	rc = api_text(txn, f, &c->json, &c->len);
	json_object_put(f);
	return rc;
}

int tf_feed_read(tf_store *st, const char *id, char **json, size_t *len)
{
	struct write_ctx c = {.id = id};
	int rc = tf_store_view(st, read_txn, &c);
	*json = c.json;
	if (len)
		*len = c.len;
	return rc;
}

struct list_ctx {
	json_object *arr;
	const char *after; /* NULL: from the first feed */
	int limit;         /* < 0: every feed */
	char next[TF_MAX_FEED_ID + 1]; /* the last feed listed when more follow */
};

static int list_txn(tf_txn *txn, void *vctx)
{
	struct list_ctx *c = vctx;
	json_object *arr = c->arr;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_FEEDS, &cur);

	if (rc)
		return rc;
	if (c->after) {
		rc = tf_cursor_get(cur, TF_SEEK_GE, c->after, strlen(c->after), &k, &kl, &v, &vl);
		if (rc == TF_OK && kl == strlen(c->after) && !memcmp(k, c->after, kl))
			rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	} else {
		rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	}
	while (rc == TF_OK) {
		if (c->limit >= 0 && (int)json_object_array_length(arr) == c->limit) {
			/* more follow: the page ends at the last one listed */
			const char *last = tf_json_str(json_object_array_get_idx(arr, c->limit - 1), "id");
			snprintf(c->next, sizeof c->next, "%s", last ? last : "");
			break;
		}
		json_object *f, *o;
		if (tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &f, NULL, 0)) {
			rc = TF_ESTORE;
			break;
		}
		rc = api_form(txn, f, &o);
		json_object_put(f);
		if (rc)
			break;
		json_object_array_add(arr, o);
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_feed_list(tf_store *st, char **json, size_t *len)
{
	json_object *arr, *root = tf_json_list_root("feeds", &arr);
	struct list_ctx c = {.arr = arr, .limit = -1};
	int rc;

	*json = NULL;
	if (!root)
		return TF_ENOMEM;
	if (!(rc = tf_store_view(st, list_txn, &c)))
		rc = tf_json_dup_text(root, json, len);
	json_object_put(root);
	return rc;
}

int tf_feed_page(tf_store *st, const char *after, int limit, char **json, size_t *len)
{
	json_object *arr, *root = tf_json_list_root("feeds", &arr);
	struct list_ctx c = {.arr = arr, .after = after, .limit = limit};
	int rc;

	*json = NULL;
	if (!root)
		return TF_ENOMEM;
	if (limit < 1 || (after && !tf_valid_feed_id(after)))
		rc = TF_EINVAL;
	else if (!(rc = tf_store_view(st, list_txn, &c))) {
		json_object_object_add(root, "next_cursor",
		                       c.next[0] ? json_object_new_string(c.next) : NULL);
		rc = tf_json_dup_text(root, json, len);
	}
	json_object_put(root);
	return rc;
}

struct ids_ctx {
	char **ids;
	size_t n;
};

static int ids_txn(tf_txn *txn, void *vctx)
{
	struct ids_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_FEEDS, &cur);

	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		char **grown = realloc(c->ids, (c->n + 1) * sizeof *grown);
		if (!grown || !(grown[c->n] = tf_strndup(k, kl))) {
			if (grown)
				c->ids = grown;
			rc = TF_ENOMEM;
			break;
		}
		c->ids = grown;
		c->n++;
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_feed_ids(tf_store *st, char ***ids, size_t *n)
{
	struct ids_ctx c = {0};
	int rc = tf_store_view(st, ids_txn, &c);
	if (rc) {
		for (size_t i = 0; i < c.n; i++)
			free(c.ids[i]);
		free(c.ids);
		c.ids = NULL;
		c.n = 0;
	}
	*ids = c.ids;
	*n = c.n;
	return rc;
}

int tf_feed_cursor(tf_txn *txn, const char *id, json_object **out)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_CURSORS, id, strlen(id), &v, &vl);

	if (rc == TF_ENOTFOUND) {
		*out = json_object_new_object();
		return *out ? TF_OK : TF_ENOMEM;
	}
	if (rc)
		return rc;
	return tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, out, NULL, 0) ? TF_ESTORE : TF_OK;
}

int tf_feed_note_run(tf_txn *txn, const char *id, const char *task_id, const char *status,
                     const char *started_at)
{
	json_object *o = json_object_new_object();
	const char *text;
	size_t n;
	int rc;

	if (!o)
		return TF_ENOMEM;
	json_object_object_add(o, "last_task_id", json_object_new_string(task_id));
	json_object_object_add(o, "last_status", json_object_new_string(status));
	json_object_object_add(o, "last_run_at", started_at ? json_object_new_string(started_at) : NULL);
	text = tf_json_text(o, &n);
	rc = tf_txn_put(txn, TF_TBL_FEEDRUN, id, strlen(id), text, n);
	json_object_put(o);
	return rc;
}
