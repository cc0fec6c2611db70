/* HTTP GET for the feed drivers (see fetch.h). Two easy handles, each reused
 * for many requests of a run (options reset each time, connections kept in
 * the multi handle's cache): one for the request being waited for, one for a
 * request started ahead (tf_fetch_prefetch). Transfers are driven by
 * curl_multi_poll() together with the run's wake-up fd: a cancel ends even a
 * transfer whose server sends nothing, within one poll wake-up (docs/SPEC.md §3, §7).
 *
 * Every transfer is bounded the curl way (docs/examples/crawler.c): a
 * protocol allow-list for the URL and for redirects, TF_MAX_REDIRECTS, TLS
 * verification, a connect timeout, a low-speed limit, a total timeout and a
 * body cap enforced while receiving (and up front from Content-Length). */
#include "fetch.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "tf_limits.h"
#include "metrics.h"
#include "util.h"

#define FETCH_USER_AGENT "threatfeed/1.0 (+libcurl)"
#define FETCH_POLL_MS 1000             /* longest wait in one curl_multi_poll */
#define FETCH_INITIAL_BUF (16 * 1024)

/* One transfer and what it has received so far. */
struct xfer {
	CURL *easy;
	struct curl_slist *hdrs;
	int added;                     /* in the multi handle */
	char *key;                     /* the request it answers (request_key) */
	char *buf;
	size_t len, cap, max;
	int over_limit;
	long long *bytes_received;     /* NULL while nobody waits: counted in early */
	long long early;
	tf_fetch_resp resp;            /* headers of the last response */
	tf_fetch_guard guard;          /* the address policy, per transfer */
	char errbuf[CURL_ERROR_SIZE];
};

struct tf_fetch {
	CURLM *multi;
	int wake_fd;
	tf_fetch_cancel_fn cancel;
	void *ctx;
	char *noproxy;                 /* loopback plus the environment's no_proxy */
	/* tf_fetch_set_net: NULL when not set (see tf_feed_net) */
	char *proxy, *proxy_noproxy, *proxy_user, *proxy_pass;
	char *ca_pem, *cert_pem, *key_pem;
	const tf_addr_policy *upstream; /* the caller's, NULL: no check */
	struct xfer x[2];
	/* Into x: the request waited for, and one started early. The callbacks
	 * hold their xfer's address, so the two trade places by pointer. */
	struct xfer *now, *ahead;
};

static int global_ready;

static int global_init(void)
{
	/* The worker is single-threaded; main() may already have done this, and
	 * curl_global_init counts its calls. */
	if (!global_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT))
			return TF_ENOMEM;
		global_ready = 1;
	}
	return TF_OK;
}

static char *make_noproxy(void)
{
	static const char loop[] = "localhost,127.0.0.1,::1";
	const char *env = getenv("no_proxy");
	char *s;

	if (!env || !*env)
		env = getenv("NO_PROXY");
	if (!env || !*env)
		return strdup(loop);
	if (!strcmp(env, "*"))
		return strdup(env);
	if (!(s = malloc(strlen(env) + sizeof loop + 1)))
		return NULL;
	sprintf(s, "%s,%s", loop, env);
	return s;
}

int tf_fetch_new(tf_fetch **out, int wake_fd, tf_fetch_cancel_fn cancel, void *ctx)
{
	tf_fetch *f;
	int rc;

	*out = NULL;
	if ((rc = global_init()))
		return rc;
	if (!(f = calloc(1, sizeof *f)))
		return TF_ENOMEM;
	f->wake_fd = wake_fd;
	f->cancel = cancel;
	f->ctx = ctx;
	f->now = &f->x[0];
	f->ahead = &f->x[1];
	if (!(f->multi = curl_multi_init()) || !(f->now->easy = curl_easy_init()) ||
	    !(f->ahead->easy = curl_easy_init()) || !(f->noproxy = make_noproxy())) {
		tf_fetch_free(f);
		return TF_ENOMEM;
	}
	/* Two transfers at most: keep a couple of idle connections. */
	curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, 4L);
	*out = f;
	return TF_OK;
}

static void xfer_end(tf_fetch *f, struct xfer *x)
{
	if (x->added)
		curl_multi_remove_handle(f->multi, x->easy);
	x->added = 0;
	curl_slist_free_all(x->hdrs);
	x->hdrs = NULL;
	free(x->key);
	x->key = NULL;
	free(x->buf);
	x->buf = NULL;
	x->len = x->cap = 0;
	x->bytes_received = NULL;
	x->early = 0;
	tf_fetch_resp_free(&x->resp);
}

/* Frees a string that may hold a credential, wiping it first. */
static void free_secret(char **s)
{
	if (*s) {
		explicit_bzero(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

static void net_clear(tf_fetch *f)
{
	char **all[] = {&f->proxy, &f->proxy_noproxy, &f->proxy_user, &f->proxy_pass,
	                &f->ca_pem, &f->cert_pem, &f->key_pem};
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		free_secret(all[i]);
}

/* *dst = a copy of src (NULL stays NULL); 0 or -1 when out of memory. */
static int dup_opt(char **dst, const char *src)
{
	*dst = src ? strdup(src) : NULL;
	return src && !*dst ? -1 : 0;
}

int tf_fetch_set_net(tf_fetch *f, const tf_feed_net *net)
{
	net_clear(f);
	f->upstream = net->upstream;
	if (dup_opt(&f->proxy, net->proxy) || dup_opt(&f->proxy_noproxy, net->no_proxy) ||
	    dup_opt(&f->proxy_user, net->proxy_username) ||
	    dup_opt(&f->proxy_pass, net->proxy_secret) || dup_opt(&f->ca_pem, net->ca_pem) ||
	    dup_opt(&f->cert_pem, net->client_cert_pem) || dup_opt(&f->key_pem, net->client_key_pem)) {
		net_clear(f);
		return TF_ENOMEM;
	}
	return TF_OK;
}

void tf_fetch_free(tf_fetch *f)
{
	if (!f)
		return;
	for (int i = 0; i < 2; i++) {
		xfer_end(f, &f->x[i]);
		if (f->x[i].easy)
			curl_easy_cleanup(f->x[i].easy);
	}
	if (f->multi)
		curl_multi_cleanup(f->multi);
	free(f->noproxy);
	net_clear(f);
	free(f);
}

void tf_fetch_basic(tf_fetch_req *req, const char *username, const char *secret)
{
	int auth = username && *username;

	req->username = auth ? username : NULL;
	req->password = auth ? secret : NULL;
}

void tf_fetch_resp_free(tf_fetch_resp *resp)
{
	if (!resp)
		return;
	free(resp->body);
	free(resp->content_type);
	free(resp->date_added_last);
	free(resp->retry_after);
	free(resp->location);
	memset(resp, 0, sizeof *resp);
}

/* ---- the address policy ------------------------------------------------------ */

/* CURLOPT_OPENSOCKETFUNCTION: libcurl asks for every socket it is about to
 * connect, with the resolved address, so the check sees what DNS answered
 * and what a redirect named, not the URL's text. Refusing makes this
 * address fail like an unreachable one; libcurl tries the host's next
 * address, if any. */
static curl_socket_t guarded_socket(void *clientp, curlsocktype purpose,
                                    struct curl_sockaddr *a)
{
	tf_fetch_guard *g = clientp;
	unsigned char addr[16] = {0};
	int known = 1;

	if (purpose == CURLSOCKTYPE_IPCXN && g->policy) {
		if (a->family == AF_INET) {
			const struct sockaddr_in *in = (const void *)&a->addr;
			addr[10] = addr[11] = 0xff;
			memcpy(addr + 12, &in->sin_addr, 4);
		} else if (a->family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const void *)&a->addr;
			memcpy(addr, &in6->sin6_addr, 16);
		} else {
			known = 0; /* a unix socket: no address to judge, none is set */
		}
		if (known && !tf_addr_allowed(g->policy, addr)) {
			if (a->family == AF_INET)
				inet_ntop(AF_INET, addr + 12, g->refused, sizeof g->refused);
			else
				inet_ntop(AF_INET6, addr, g->refused, sizeof g->refused);
			return CURL_SOCKET_BAD;
		}
	}
	return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int tf_fetch_guard_on(void *easy, tf_fetch_guard *g)
{
	g->refused[0] = '\0';
	if (curl_easy_setopt(easy, CURLOPT_OPENSOCKETFUNCTION, guarded_socket) != CURLE_OK ||
	    curl_easy_setopt(easy, CURLOPT_OPENSOCKETDATA, g) != CURLE_OK)
		return TF_EINVAL;
	return TF_OK;
}

int tf_fetch_guard_error(const tf_fetch_guard *g, char *err, size_t errlen)
{
	if (!g->refused[0])
		return 0;
	tf_set_err(err, errlen, "upstream address %s is not allowed (upstream_deny)", g->refused);
	return 1;
}

/* ---- callbacks -------------------------------------------------------------- */

static int reserve(struct xfer *f, size_t want)
{
	size_t cap;
	char *p;

	if (want <= f->cap)
		return 0;
	cap = f->cap ? f->cap : FETCH_INITIAL_BUF;
	while (cap < want)
		cap = cap > SIZE_MAX / 2 ? want : cap * 2;
	if (cap > f->max + 1)
		cap = f->max + 1;
	if (cap < want || !(p = realloc(f->buf, cap)))
		return -1;
	f->buf = p;
	f->cap = cap;
	return 0;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *f = userp;
	size_t n = size * nmemb;

	if (n > f->max - f->len) {
		f->over_limit = 1;
		return 0;       /* CURLE_WRITE_ERROR: abort the transfer */
	}
	if (!f->cap) {
		/* First bytes: size the buffer from Content-Length when it is
		 * plausible, so a large page is not copied log2(n) times. */
		curl_off_t cl = -1;
		if (curl_easy_getinfo(f->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
		    cl > 0 && (curl_off_t)f->max >= cl && reserve(f, (size_t)cl + 1))
			return 0;
	}
	if (reserve(f, f->len + n + 1))
		return 0;
	memcpy(f->buf + f->len, data, n);
	f->len += n;
	if (f->bytes_received)
		*f->bytes_received += (long long)n;
	else
		f->early += (long long)n;
	return n;
}

static void keep_header(char **slot, const char *v, size_t n)
{
	free(*slot);
	*slot = n <= TF_FETCH_MAX_HEADER_VALUE ? tf_strndup(v, n) : NULL;
}

/* Captures the headers drivers need from the last response (every redirect
 * hop starts a new set). Names compare without case (RFC 9110 §5.1). */
static size_t on_header(char *data, size_t size, size_t nmemb, void *userp)
{
	struct xfer *f = userp;
	tf_fetch_resp *resp = &f->resp;
	size_t n = size * nmemb, k, vs, ve;
	static const struct {
		const char *name;
		size_t off;
	} keep[] = {
		{"content-type", offsetof(tf_fetch_resp, content_type)},
		{"x-taxii-date-added-last", offsetof(tf_fetch_resp, date_added_last)},
		{"retry-after", offsetof(tf_fetch_resp, retry_after)},
		{"location", offsetof(tf_fetch_resp, location)},
	};

	if (n >= 5 && !strncasecmp(data, "HTTP/", 5)) {
		for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
			char **slot = (char **)((char *)resp + keep[i].off);
			free(*slot);
			*slot = NULL;
		}
		return n;
	}
	for (k = 0; k < n && data[k] != ':'; k++)
		;
	if (k == n)
		return n;
	for (vs = k + 1; vs < n && (data[vs] == ' ' || data[vs] == '\t'); vs++)
		;
	for (ve = n; ve > vs && isspace((unsigned char)data[ve - 1]); ve--)
		;
	for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
		if (strlen(keep[i].name) == k && !strncasecmp(data, keep[i].name, k)) {
			keep_header((char **)((char *)resp + keep[i].off), data + vs, ve - vs);
			break;
		}
	return n;
}

/* ---- one request ------------------------------------------------------------ */

/* "127.0.0.1:8080" from a URL, for messages (never the userinfo). */
static void host_port(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;

	snprintf(buf, len, "the server");
	if (!u)
		return;
	if (!curl_url_set(u, CURLUPART_URL, url, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &host, 0) &&
	    !curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT))
		snprintf(buf, len, "%s:%s", host, port);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
}

static int http_url(const char *url)
{
	return url && (!strncasecmp(url, "http://", 7) || !strncasecmp(url, "https://", 8));
}

#define SETOPT(h, opt, val)                                                                    \
	do {                                                                                   \
		if (curl_easy_setopt((h), (opt), (val)) != CURLE_OK)                           \
			goto setopt_failed;                                                    \
	} while (0)

/* Headers we add may carry a credential (X-OTX-API-KEY, x-apikey); libcurl
 * would send them on to whatever host a redirect names. */
static int has_extra_headers(const tf_fetch_req *req)
{
	return req->headers[0] != NULL;
}

/* A PEM string as a blob libcurl reads in place: the fetch handle owns
 * the text and outlives every transfer. */
static struct curl_blob *blob_of(struct curl_blob *b, char *pem)
{
	b->data = pem;
	b->len = strlen(pem);
	b->flags = CURL_BLOB_NOCOPY;
	return b;
}

/* The proxy and TLS settings of tf_fetch_set_net. Verification is never
 * relaxed here: a private CA replaces the trusted set, it does not widen
 * what is accepted (docs/SPEC.md "As implemented": no fallback to
 * unverified TLS). */
static int configure_net(tf_fetch *fetch, CURL *h)
{
	struct curl_blob ca, cert, key;

	if (fetch->proxy) {
		/* "" is libcurl's "no proxy, whatever the environment says" */
		SETOPT(h, CURLOPT_PROXY, fetch->proxy);
		SETOPT(h, CURLOPT_NOPROXY, *fetch->proxy && fetch->proxy_noproxy ? fetch->proxy_noproxy
		                                                                 : "");
		if (fetch->proxy_user) {
			SETOPT(h, CURLOPT_PROXYUSERNAME, fetch->proxy_user);
			SETOPT(h, CURLOPT_PROXYPASSWORD, fetch->proxy_pass ? fetch->proxy_pass : "");
		}
	}
	if (fetch->ca_pem) {
		/* only these CAs: libcurl would also read its built-in CA path */
		SETOPT(h, CURLOPT_CAINFO_BLOB, blob_of(&ca, fetch->ca_pem));
		SETOPT(h, CURLOPT_CAPATH, (char *)NULL);
		SETOPT(h, CURLOPT_PROXY_CAINFO_BLOB, blob_of(&ca, fetch->ca_pem));
		SETOPT(h, CURLOPT_PROXY_CAPATH, (char *)NULL);
	}
	if (fetch->cert_pem && fetch->key_pem) {
		SETOPT(h, CURLOPT_SSLCERTTYPE, "PEM");
		SETOPT(h, CURLOPT_SSLCERT_BLOB, blob_of(&cert, fetch->cert_pem));
		SETOPT(h, CURLOPT_SSLKEYTYPE, "PEM");
		SETOPT(h, CURLOPT_SSLKEY_BLOB, blob_of(&key, fetch->key_pem));
	}
	return TF_OK;
setopt_failed:
	return TF_EINVAL;
}

static int configure(tf_fetch *fetch, struct xfer *f, const tf_fetch_req *req,
                     struct curl_slist **hdrs)
{
	CURL *h = f->easy;
	long timeout = req->timeout_s > 0 ? req->timeout_s : TF_REQUEST_TIMEOUT_S;
	char line[512];

	curl_easy_reset(h);
	SETOPT(h, CURLOPT_URL, req->url);
	SETOPT(h, CURLOPT_PROTOCOLS_STR, "http,https");
	SETOPT(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	/* With credential headers, redirects are followed by tf_fetch_get itself,
	 * and only to the same origin. */
	SETOPT(h, CURLOPT_FOLLOWLOCATION, has_extra_headers(req) ? 0L : 1L);
	SETOPT(h, CURLOPT_MAXREDIRS, (long)TF_MAX_REDIRECTS);
	SETOPT(h, CURLOPT_SSL_VERIFYPEER, 1L);
	SETOPT(h, CURLOPT_SSL_VERIFYHOST, 2L);
	SETOPT(h, CURLOPT_CONNECTTIMEOUT, (long)TF_CONNECT_TIMEOUT_S);
	SETOPT(h, CURLOPT_LOW_SPEED_LIMIT, (long)TF_LOW_SPEED_BYTES);
	SETOPT(h, CURLOPT_LOW_SPEED_TIME, (long)TF_LOW_SPEED_TIME_S);
	SETOPT(h, CURLOPT_TIMEOUT, timeout);
	SETOPT(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)f->max);
	SETOPT(h, CURLOPT_NOSIGNAL, 1L);
	SETOPT(h, CURLOPT_NOPROXY, fetch->noproxy);
	SETOPT(h, CURLOPT_USERAGENT, FETCH_USER_AGENT);
	SETOPT(h, CURLOPT_ACCEPT_ENCODING, "gzip");
	SETOPT(h, CURLOPT_WRITEFUNCTION, on_body);
	SETOPT(h, CURLOPT_WRITEDATA, f);
	SETOPT(h, CURLOPT_HEADERFUNCTION, on_header);
	SETOPT(h, CURLOPT_HEADERDATA, f);
	SETOPT(h, CURLOPT_ERRORBUFFER, f->errbuf);
	if (req->username) {
		/* Basic only, and never to another host after a redirect (curl's
		 * default without CURLOPT_UNRESTRICTED_AUTH). */
		SETOPT(h, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SETOPT(h, CURLOPT_USERNAME, req->username);
		SETOPT(h, CURLOPT_PASSWORD, req->password ? req->password : "");
	}
	if (req->accept) {
		struct curl_slist *n;
		snprintf(line, sizeof line, "Accept: %s", req->accept);
		if (!(n = curl_slist_append(*hdrs, line)))
			return TF_ENOMEM;
		*hdrs = n;
	}
	for (size_t i = 0; i < sizeof req->headers / sizeof req->headers[0] && req->headers[i];
	     i++) {
		struct curl_slist *n = curl_slist_append(*hdrs, req->headers[i]);
		if (!n)
			return TF_ENOMEM;
		*hdrs = n;
	}
	if (*hdrs)
		SETOPT(h, CURLOPT_HTTPHEADER, *hdrs);
	f->guard.policy = fetch->upstream;
	if (tf_fetch_guard_on(h, &f->guard))
		return TF_EINVAL;
	return configure_net(fetch, h);
setopt_failed:
	return TF_EINVAL;
}

/* Words for a failed transfer. */
/* Words for a failure of the proxy or of the feed's TLS settings; 0 when cc
 * is none of those. Never the proxy URL: it may hold a password. */
static int net_error(const tf_fetch *fetch, struct xfer *f, CURLcode cc, int *rc, char *err,
                     size_t errlen)
{
	const char *why = f->errbuf[0] ? f->errbuf : curl_easy_strerror(cc);
	int proxied = fetch->proxy && *fetch->proxy;

	*rc = TF_ENETWORK;
	if (cc == CURLE_COULDNT_RESOLVE_PROXY)
		tf_set_err(err, errlen, "could not resolve the proxy's host");
	else if (proxied && cc == CURLE_COULDNT_CONNECT)
		tf_set_err(err, errlen, "could not connect to the proxy: %s", why);
	else if (cc == CURLE_PROXY)
		tf_set_err(err, errlen, "the proxy failed the request: %s", why);
	else if (proxied && cc == CURLE_RECV_ERROR && strstr(why, "CONNECT"))
		tf_set_err(err, errlen, "the proxy refused the tunnel: %s", why);
	else if ((cc == CURLE_RECV_ERROR || cc == CURLE_SSL_CONNECT_ERROR) &&
	         (strstr(why, "certificate required") || strstr(why, "alert handshake failure")) &&
	         !fetch->cert_pem)
		tf_set_err(err, errlen, "the server demands a client certificate (the feed's "
		                        "client_cert_pem and client_key_pem): %s", why);
	else if (cc == CURLE_SSL_CERTPROBLEM)
		tf_set_err(err, errlen, "the feed's client certificate or key cannot be used: %s", why);
	else if (cc == CURLE_SSL_CACERT_BADFILE)
		tf_set_err(err, errlen, "the feed's ca_pem cannot be used: %s", why);
	else
		return 0;
	return 1;
}

static int transfer_error(tf_fetch *fetch, struct xfer *f, const tf_fetch_req *req, CURLcode cc,
                          char *err, size_t errlen)
{
	char where[300];
	long oserr = 0;
	int rc;
	double total = 0;
	long timeout = req->timeout_s > 0 ? req->timeout_s : TF_REQUEST_TIMEOUT_S;
	curl_off_t connect_us = 0;

	host_port(req->url, where, sizeof where);
	curl_easy_getinfo(f->easy, CURLINFO_OS_ERRNO, &oserr);
	curl_easy_getinfo(f->easy, CURLINFO_TOTAL_TIME, &total);
	curl_easy_getinfo(f->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
	/* Before the proxy's words: a refused proxy address is reported as a
	 * failed connect to the proxy otherwise. */
	if (cc == CURLE_COULDNT_CONNECT && tf_fetch_guard_error(&f->guard, err, errlen))
		return TF_ENETWORK;
	if (net_error(fetch, f, cc, &rc, err, errlen))
		return rc;
	switch (cc) {
	case CURLE_WRITE_ERROR:
	case CURLE_FILESIZE_EXCEEDED:
		if (f->over_limit || cc == CURLE_FILESIZE_EXCEEDED) {
			tf_set_err(err, errlen, "response larger than %zu bytes", f->max);
			return TF_ELIMIT;
		}
		tf_set_err(err, errlen, "out of memory receiving the response");
		return TF_ENOMEM;
	case CURLE_COULDNT_CONNECT:
		if (oserr == ECONNREFUSED)
			tf_set_err(err, errlen, "connection refused to %s", where);
		else if (oserr)
			tf_set_err(err, errlen, "could not connect to %s: %s", where, strerror((int)oserr));
		else
			tf_set_err(err, errlen, "could not connect to %s", where);
		return TF_ENETWORK;
	case CURLE_COULDNT_RESOLVE_HOST:
		tf_set_err(err, errlen, "could not resolve the host of %s", where);
		return TF_ENETWORK;
	case CURLE_OPERATION_TIMEDOUT:
		if (!connect_us)
			tf_set_err(err, errlen, "connecting to %s timed out after %d s", where,
			        TF_CONNECT_TIMEOUT_S);
		else if (total + 1 >= (double)timeout)
			tf_set_err(err, errlen, "timed out after %ld s", timeout);
		else
			tf_set_err(err, errlen, "transfer stalled: less than %d byte/s for %d s",
			        TF_LOW_SPEED_BYTES, TF_LOW_SPEED_TIME_S);
		return TF_ENETWORK;
	case CURLE_PEER_FAILED_VERIFICATION:
		tf_set_err(err, errlen, "TLS certificate verification failed for %s%s%s", where,
		        f->errbuf[0] ? ": " : "", f->errbuf);
		return TF_ENETWORK;
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_ISSUER_ERROR:
		tf_set_err(err, errlen, "TLS handshake with %s failed%s%s", where,
		        f->errbuf[0] ? ": " : "", f->errbuf);
		return TF_ENETWORK;
	case CURLE_UNSUPPORTED_PROTOCOL:
		tf_set_err(err, errlen, "redirect to a non-http(s) URL refused");
		return TF_ENETWORK;
	case CURLE_TOO_MANY_REDIRECTS:
		tf_set_err(err, errlen, "more than %d redirects", TF_MAX_REDIRECTS);
		return TF_ENETWORK;
	case CURLE_GOT_NOTHING:
		tf_set_err(err, errlen, "%s closed the connection without answering", where);
		return TF_ENETWORK;
	case CURLE_PARTIAL_FILE:
		tf_set_err(err, errlen, "response truncated after %zu bytes (connection closed early)",
		        f->len);
		return TF_ENETWORK;
	case CURLE_BAD_CONTENT_ENCODING:
		tf_set_err(err, errlen, "response body could not be decoded (bad Content-Encoding)");
		return TF_ENETWORK;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		tf_set_err(err, errlen, "connection to %s lost: %s", where,
		        f->errbuf[0] ? f->errbuf : curl_easy_strerror(cc));
		return TF_ENETWORK;
	case CURLE_OUT_OF_MEMORY:
		tf_set_err(err, errlen, "out of memory");
		return TF_ENOMEM;
	default:
		tf_set_err(err, errlen, "transfer from %s failed: %s", where,
		        f->errbuf[0] ? f->errbuf : curl_easy_strerror(cc));
		return TF_ENETWORK;
	}
}

static int cancelled(tf_fetch *f)
{
	return f->cancel && f->cancel(f->ctx);
}

/* Everything that makes two requests the same, so that a request started
 * ahead is used only for exactly the request it was started for. */
static char *request_key(const tf_fetch_req *req)
{
	const char *parts[4 + sizeof req->headers / sizeof req->headers[0]] = {
		req->url, req->accept, req->username, req->password};
	size_t n = 64, np = 4;
	char *key, *p;

	for (size_t i = 0; i < sizeof req->headers / sizeof req->headers[0] && req->headers[i]; i++)
		parts[np++] = req->headers[i];
	for (size_t i = 0; i < np; i++)
		n += (parts[i] ? strlen(parts[i]) : 0) + 2;
	if (!(p = key = malloc(n)))
		return NULL;
	p += sprintf(p, "%zu %ld", req->max_bytes, req->timeout_s);
	for (size_t i = 0; i < np; i++)
		p += sprintf(p, "%c%s", parts[i] ? '\x1f' : '\x1e', parts[i] ? parts[i] : "");
	return key;
}

/* Configures x for req and adds it to the multi handle. */
static int start(tf_fetch *f, struct xfer *x, const tf_fetch_req *req, char *err, size_t errlen)
{
	int rc = TF_ENOMEM;

	xfer_end(f, x);
	x->max = req->max_bytes ? req->max_bytes : (size_t)TF_MAX_PAGE_BYTES;
	x->over_limit = 0;
	x->errbuf[0] = '\0';
	if (!(x->key = request_key(req)) || (rc = configure(f, x, req, &x->hdrs))) {
		tf_set_err(err, errlen, rc == TF_ENOMEM ? "out of memory" : "could not set up the request");
		return rc;
	}
	if (curl_multi_add_handle(f->multi, x->easy) != CURLM_OK) {
		tf_set_err(err, errlen, "could not start the request");
		return TF_ENOMEM;
	}
	x->added = 1;
	return TF_OK;
}

/* Drives the multi handle until x is done or the run is cancelled. */
static int wait_done(tf_fetch *f, struct xfer *x, CURLcode *result, char *err, size_t errlen)
{
	int running = 1, spurious = 0;

	for (;;) {
		struct curl_waitfd wake = {.fd = f->wake_fd, .events = CURL_WAIT_POLLIN};
		CURLMsg *msg;
		int left;
		CURLMcode mc = curl_multi_perform(f->multi, &running);

		if (mc != CURLM_OK) {
			tf_set_err(err, errlen, "transfer failed: %s", curl_multi_strerror(mc));
			return TF_ENETWORK;
		}
		while ((msg = curl_multi_info_read(f->multi, &left)))
			if (msg->msg == CURLMSG_DONE && msg->easy_handle == x->easy) {
				*result = msg->data.result;
				return TF_OK;
			}
		if (!running)
			return TF_OK;
		/* After repeated wake-ups that cancel() did not drain, leave the fd
		 * out for a short poll rather than spin; cancel() is still asked
		 * after every poll. */
		if (spurious >= 3)
			mc = curl_multi_poll(f->multi, NULL, 0, 10, NULL);
		else
			mc = curl_multi_poll(f->multi, &wake, f->wake_fd >= 0 ? 1 : 0, FETCH_POLL_MS,
			                     NULL);
		if (mc != CURLM_OK) {
			tf_set_err(err, errlen, "transfer failed: %s", curl_multi_strerror(mc));
			return TF_ENETWORK;
		}
		if (wake.revents || spurious >= 3) {
			if (cancelled(f))
				return TF_ECANCELLED;
			spurious = wake.revents ? spurious + 1 : 0;
		} else {
			spurious = 0;
		}
	}
}

static int get_once(tf_fetch *f, const tf_fetch_req *req, tf_fetch_resp *resp,
                    long long *bytes_received, char *err, size_t errlen)
{
	CURLcode result = CURLE_OK;
	struct xfer *x;
	char *key = NULL;
	int rc;

	memset(resp, 0, sizeof *resp);
	if (err && errlen)
		err[0] = '\0';
	if (!f || !req || !http_url(req->url)) {
		tf_set_err(err, errlen, "not an http or https URL");
		return TF_EINVAL;
	}
	if (cancelled(f))
		return TF_ECANCELLED;
	/* The request started ahead is this one, or of no more use. */
	if (f->ahead->added && (key = request_key(req)) && !strcmp(key, f->ahead->key)) {
		struct xfer *t = f->now;
		f->now = f->ahead;
		f->ahead = t;
	}
	x = f->now;
	xfer_end(f, f->ahead);
	if (!x->added && (rc = start(f, x, req, err, errlen)))
		goto out;
	x->bytes_received = bytes_received;
	if (bytes_received)
		*bytes_received += x->early;
	x->early = 0;
	if ((rc = wait_done(f, x, &result, err, errlen)))
		goto out;
	if (result != CURLE_OK) {
		long code = 0; /* an answer cut short (over the cap) still had a status */
		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &code);
		tf_metrics_note_upstream(code);
		rc = transfer_error(f, x, req, result, err, errlen);
		goto out;
	}
	if (reserve(x, x->len + 1)) {
		rc = TF_ENOMEM;
		tf_set_err(err, errlen, "out of memory");
		goto out;
	}
	x->buf[x->len] = '\0';
	*resp = x->resp;
	memset(&x->resp, 0, sizeof x->resp);
	curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &resp->status);
	tf_metrics_note_upstream(resp->status);
	resp->body = x->buf;
	resp->len = x->len;
	x->buf = NULL;
	if (!(resp->status >= 300 && resp->status < 400)) {
		free(resp->location);
		resp->location = NULL;
	}
	rc = TF_OK;
out:
	free(key);
	xfer_end(f, x);
	return rc;
}

int tf_fetch_prefetch(tf_fetch *f, const tf_fetch_req *req)
{
	int running, rc;

	if (!f || !req || !http_url(req->url))
		return TF_EINVAL;
	if ((rc = start(f, f->ahead, req, NULL, 0))) {
		xfer_end(f, f->ahead);
		return rc;
	}
	/* Send it now; the answer waits in the socket until the get. */
	curl_multi_perform(f->multi, &running);
	return TF_OK;
}

/* "scheme://host:port" of url into buf; 0 when it cannot be parsed. */
static int origin(const char *url, char *buf, size_t len)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int ok = 0;

	if (u && !curl_url_set(u, CURLUPART_URL, url, 0) &&
	    !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) &&
	    !curl_url_get(u, CURLUPART_HOST, &host, 0) &&
	    !curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)) {
		snprintf(buf, len, "%s://%s:%s", scheme, host, port);
		ok = 1;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return ok;
}

/* Location resolved against base, into a malloc'd string (or NULL). */
static char *resolve(const char *base, const char *location)
{
	CURLU *u = curl_url();
	char *out = NULL, *copy = NULL;

	if (u && !curl_url_set(u, CURLUPART_URL, base, 0) &&
	    !curl_url_set(u, CURLUPART_URL, location, 0) && !curl_url_get(u, CURLUPART_URL, &out, 0))
		copy = strdup(out);
	curl_free(out);
	curl_url_cleanup(u);
	return copy;
}

int tf_fetch_get(tf_fetch *f, const tf_fetch_req *req, tf_fetch_resp *resp, long long *bytes_received,
                 char *err, size_t errlen)
{
	tf_fetch_req hop;
	char *url = NULL, from[512], to[512];
	int rc;

	if (!req || !has_extra_headers(req))
		return get_once(f, req, resp, bytes_received, err, errlen);
	hop = *req;
	for (int hops = 0;; hops++) {
		char *next;
		rc = get_once(f, &hop, resp, bytes_received, err, errlen);
		if (rc || resp->status < 300 || resp->status > 399 || !resp->location)
			break;
		next = resolve(hop.url, resp->location);
		tf_fetch_resp_free(resp);
		if (hops == TF_MAX_REDIRECTS || !next || !http_url(next)) {
			tf_set_err(err, errlen, !next || http_url(next) ? "more than %d redirects"
			                                             : "redirect to a non-http(s) URL refused",
			        TF_MAX_REDIRECTS);
			free(next);
			rc = TF_ENETWORK;
			break;
		}
		if (!origin(req->url, from, sizeof from) || !origin(next, to, sizeof to) ||
		    strcmp(from, to)) {
			tf_set_err(err, errlen, "redirect to another host refused: it would receive the "
			                     "feed's API key");
			free(next);
			rc = TF_ENETWORK;
			break;
		}
		free(url);
		hop.url = url = next;
	}
	free(url);
	return rc;
}
