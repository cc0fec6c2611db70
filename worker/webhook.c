#include "webhook.h"
#include "err.h"
#include "feed.h"
#include "fetch.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "store.h"
#include "task.h"
#include "util.h"

#include <curl/curl.h>
#include <signal.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int tf_webhook_sign(const char *secret, const void *body, size_t len, char hex[65])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int n = 0;

	hex[0] = '\0';
	if (!HMAC(EVP_sha256(), secret, (int)strlen(secret), body, len, mac, &n) || n != 32)
		return TF_ESYS;
	for (unsigned int i = 0; i < n; i++)
		snprintf(hex + 2 * i, 3, "%02x", mac[i]);
	return TF_OK;
}

int tf_webhook_retryable(int curl_failed, long http_status)
{
	return curl_failed || http_status >= 500 || http_status == 429;
}

int tf_webhook_backoff_s(int attempt)
{
	int s = TF_WEBHOOK_BACKOFF_S;
	for (int i = 1; i < attempt && s < TF_WEBHOOK_MAX_BACKOFF_S; i++)
		s *= 2;
	return s < TF_WEBHOOK_MAX_BACKOFF_S ? s : TF_WEBHOOK_MAX_BACKOFF_S;
}

/* ---- what to send ------------------------------------------------------------ */

struct event {
	const tf_config *cfg;
	const char *task_id;
	char *body;          /* the task JSON */
	size_t len;
	int terminal;
	char *url, *secret;  /* copies: the feed is gone with the transaction */
};

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int load_txn(tf_txn *txn, void *vctx)
{
	struct event *e = vctx;
	json_object *feed = NULL;
	const char *text, *url, *secret;
	tf_task *t;
	size_t n;
	int rc = tf_task_load(txn, e->task_id, &t);

	if (rc)
		return rc;
	e->terminal = tf_status_terminal(tf_task_status(t));
	text = tf_task_json(t, &n);
	/* A feed deleted since its run ended: the global webhook still applies. */
	tf_feed_load(txn, tf_task_feed_id(t), &feed);
	tf_feed_webhook(feed, e->cfg->webhook_url, e->cfg->webhook_secret, &url, &secret);
	e->body = text ? malloc(n + 1) : NULL;
	if (e->body) {
		memcpy(e->body, text, n);
		e->body[n] = '\0';
		e->len = n;
	}
	e->url = dup_or_null(url);
	e->secret = dup_or_null(secret);
	json_object_put(feed);
	tf_task_free(t);
	return !e->body || (url && !e->url) || (secret && !e->secret) ? TF_ENOMEM : TF_OK;
}

static void event_free(struct event *e)
{
	free(e->body);
	free(e->url);
	if (e->secret)
		explicit_bzero(e->secret, strlen(e->secret));
	free(e->secret);
}

/* ---- one attempt --------------------------------------------------------------- */

static size_t discard(char *p, size_t size, size_t n, void *vctx)
{
	size_t *seen = vctx;
	(void)p;
	*seen += size * n;
	return *seen > TF_WEBHOOK_MAX_RESPONSE ? 0 : size * n; /* 0: stop reading it */
}

static struct curl_slist *add_header(struct curl_slist *l, const char *name, const char *value)
{
	char line[160];
	struct curl_slist *n;

	snprintf(line, sizeof line, "%s: %s", name, value);
	if (!l)
		return NULL;
	n = curl_slist_append(l, line);
	if (!n)
		curl_slist_free_all(l);
	return n;
}

static struct curl_slist *headers(const struct event *e, const char *sig, int attempt)
{
	char v[80];
	struct curl_slist *l = curl_slist_append(NULL, "Content-Type: application/json");

	l = add_header(l, "Expect", ""); /* no 100-continue round trip for a small body */
	l = add_header(l, TF_WEBHOOK_EVENT_HEADER, "run.finished");
	l = add_header(l, TF_WEBHOOK_ID_HEADER, e->task_id);
	snprintf(v, sizeof v, "%lld", (long long)time(NULL));
	l = add_header(l, TF_WEBHOOK_TS_HEADER, v);
	snprintf(v, sizeof v, "%d", attempt);
	l = add_header(l, TF_WEBHOOK_TRY_HEADER, v);
	if (sig) {
		snprintf(v, sizeof v, "sha256=%s", sig);
		l = add_header(l, TF_WEBHOOK_SIG_HEADER, v);
	}
	return l;
}

/* One POST: *status the HTTP status (0: no answer, -1: an address the
 * policy refuses), why a line for the log. */
static void post(CURL *h, const struct event *e, const char *sig, int attempt, long *status,
                 char *why, size_t whylen)
{
	char errbuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = headers(e, sig, attempt);
	/* The feeds' address policy holds for webhooks too: a webhook URL is
	 * the same way to make this host POST to its cloud's metadata. */
	tf_fetch_guard guard = {.policy = &e->cfg->upstream};
	long timeout = e->cfg->webhook_timeout_s;
	size_t seen = 0;
	CURLcode cc;

	*status = 0;
	if (!hdrs) {
		snprintf(why, whylen, "out of memory");
		return;
	}
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, e->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L); /* a redirect is an answer, final */
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT,
	                 timeout < TF_WEBHOOK_CONNECT_TIMEOUT_S ? timeout
	                                                        : (long)TF_WEBHOOK_CONNECT_TIMEOUT_S);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, timeout);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "localhost,127.0.0.1,::1");
	curl_easy_setopt(h, CURLOPT_USERAGENT, "threatfeed/" TF_VERSION);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, e->body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)e->len);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &seen);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	tf_fetch_guard_on(h, &guard);
	cc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, status);
	if (cc == CURLE_WRITE_ERROR && *status) /* a long answer body: the status is enough */
		cc = CURLE_OK;
	if (cc != CURLE_OK)
		*status = 0;
	if (cc == CURLE_COULDNT_CONNECT && tf_fetch_guard_error(&guard, why, whylen))
		*status = -1; /* neither an answer nor worth another attempt */
	else if (cc != CURLE_OK)
		snprintf(why, whylen, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
	else
		snprintf(why, whylen, "HTTP %ld", *status);
	curl_slist_free_all(hdrs);
}

static void sleep_s(int s)
{
	struct timespec ts = {.tv_sec = s};
	while (nanosleep(&ts, &ts) != 0)
		;
}

/* Every attempt logged; TF_OK once a 2xx came back. */
static int deliver(const struct event *e)
{
	char sig[65], why[CURL_ERROR_SIZE + 32];
	CURL *h = curl_easy_init();
	int attempts = e->cfg->webhook_attempts, rc = TF_EUPSTREAM;

	if (!h)
		return TF_ENOMEM;
	if (e->secret && tf_webhook_sign(e->secret, e->body, e->len, sig)) {
		curl_easy_cleanup(h);
		return TF_ESYS;
	}
	if (!e->secret)
		tf_warn("webhook %s: no webhook_secret set: sending it unsigned", e->task_id);
	for (int n = 1; n <= attempts; n++) {
		long status;
		post(h, e, e->secret ? sig : NULL, n, &status, why, sizeof why);
		if (status >= 200 && status < 300) {
			tf_info("webhook %s: delivered (attempt %d, %s)", e->task_id, n, why);
			rc = TF_OK;
			break;
		}
		if (!tf_webhook_retryable(status == 0, status)) {
			tf_warn("webhook %s: attempt %d: %s: not retried", e->task_id, n, why);
			break;
		}
		if (n == attempts) {
			tf_warn("webhook %s: attempt %d: %s: giving up after %d attempts", e->task_id,
			        n, why, attempts);
			break;
		}
		tf_warn("webhook %s: attempt %d: %s: retrying in %d s", e->task_id, n, why,
		        tf_webhook_backoff_s(n));
		sleep_s(tf_webhook_backoff_s(n));
	}
	curl_easy_cleanup(h);
	return rc;
}

int tf_webhook_notify_main(const tf_config *cfg, const char *task_id)
{
	struct event e = {.cfg = cfg, .task_id = task_id};
	tf_store *st;
	char err[256];
	int rc;

	if (!tf_valid_uuid(task_id))
		return 2;
	signal(SIGPIPE, SIG_IGN); /* a receiver that hangs up is a failed attempt */
	if (tf_store_open(&st, cfg->db_path, tf_config_map_bytes(cfg), err, sizeof err)) {
		tf_err("webhook %s: %s", task_id, err);
		return 1;
	}
	rc = tf_store_view(st, load_txn, &e);
	tf_store_close(st); /* not held open through the retries */
	if (rc)
		tf_err("webhook %s: cannot read the task: %s", task_id, tf_strerror(rc));
	else if (!e.terminal)
		tf_warn("webhook %s: the run has not ended: nothing sent", task_id);
	else if (e.url)
		rc = deliver(&e);
	event_free(&e);
	return rc ? 1 : 0;
}
