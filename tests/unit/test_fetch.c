/* worker/fetch against the fault-injecting test upstream
 * (tests/upstream/upstream.py, started here on 127.0.0.1 with a port file).
 * Behaviour only: no assertion on how long anything took. Run from the
 * repository root, or set TF_UPSTREAM to the script. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#include "err.h"
#include "fetch.h"

#define COLLECTION "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
#define TAXII_MEDIA "application/taxii+json;version=2.1"

static pid_t up_pid = -1;
static int up_port;
static char port_file[128];

static void msleep(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static int start_upstream(void **state)
{
	const char *script = getenv("TF_UPSTREAM");
	(void)state;

	if (!script || !*script)
		script = "tests/upstream/upstream.py";
	if (access(script, R_OK)) {
		fprintf(stderr, "test_fetch: %s not found (run from the repository root or set "
		                "TF_UPSTREAM)\n", script);
		return -1;
	}
	snprintf(port_file, sizeof port_file, "/tmp/tf-test-fetch-%d.port", (int)getpid());
	unlink(port_file);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	up_pid = fork();
	if (up_pid < 0)
		return -1;
	if (up_pid == 0) {
		int null = open("/dev/null", O_RDWR);
		if (null >= 0) {
			dup2(null, STDIN_FILENO);
			dup2(null, STDOUT_FILENO);
		}
		execlp("python3", "python3", script, "--port", "0", "--port-file", port_file,
		       "--objects", "50", "--page-size", "10", "--username", "u", "--password", "p",
		       "--quiet", "--lifetime-s", "600", (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 300; i++) { /* up to 30 s on a loaded machine */
		FILE *f = fopen(port_file, "r");
		int status;
		if (f) {
			int ok = fscanf(f, "%d", &up_port) == 1;
			fclose(f);
			if (ok && up_port > 0)
				return 0;
		}
		if (waitpid(up_pid, &status, WNOHANG) == up_pid) {
			up_pid = -1;
			fprintf(stderr, "test_fetch: the upstream exited at start\n");
			return -1;
		}
		msleep(100);
	}
	return -1;
}

static int stop_upstream(void **state)
{
	(void)state;
	if (up_pid > 0) {
		kill(up_pid, SIGTERM);
		waitpid(up_pid, NULL, 0);
		up_pid = -1;
	}
	unlink(port_file);
	curl_global_cleanup();
	return 0;
}

static size_t discard(char *d, size_t s, size_t n, void *u)
{
	(void)d;
	(void)u;
	return s * n;
}

/* POST to the upstream's control API: 0 when it answered 200. */
static int ctl(const char *what, const char *json)
{
	CURL *h = curl_easy_init();
	struct curl_slist *hd = curl_slist_append(NULL, "Content-Type: application/json");
	char url[256];
	long code = 0;

	snprintf(url, sizeof url, "http://127.0.0.1:%d/_ctl/%s", up_port, what);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, json);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hd);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	if (curl_easy_perform(h) == CURLE_OK)
		curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
	curl_slist_free_all(hd);
	curl_easy_cleanup(h);
	return code == 200 ? 0 : -1;
}

static void faults(const char *json)
{
	assert_int_equal(ctl("reset", "{}"), 0);
	if (json)
		assert_int_equal(ctl("faults", json), 0);
}

static char *url(const char *path)
{
	static char buf[512];
	snprintf(buf, sizeof buf, "http://127.0.0.1:%d%s", up_port, path);
	return buf;
}

struct body {
	char *p;
	size_t n;
};

static size_t keep_body(char *d, size_t s, size_t n, void *u)
{
	struct body *b = u;
	char *grown = realloc(b->p, b->n + s * n + 1);
	if (!grown)
		return 0;
	memcpy(grown + b->n, d, s * n);
	b->p = grown;
	b->n += s * n;
	b->p[b->n] = '\0';
	return s * n;
}

/* A number from the upstream's /_ctl/stats (e.g. "objects_pages"). */
static long stat_of(const char *name)
{
	CURL *h = curl_easy_init();
	struct body b = {0};
	char u[256];
	json_object *o = NULL, *v;
	long n = -1;

	snprintf(u, sizeof u, "http://127.0.0.1:%d/_ctl/stats", up_port);
	curl_easy_setopt(h, CURLOPT_URL, u);
	curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
	if (curl_easy_perform(h) == CURLE_OK && b.p)
		o = json_tokener_parse(b.p);
	curl_easy_cleanup(h);
	free(b.p);
	if (o && json_object_object_get_ex(o, name, &v))
		n = (long)json_object_get_int64(v);
	json_object_put(o);
	return n;
}

/* ---- the cancel side: a pipe and a flag, as the run's wake-up works ------ */

typedef struct waker {
	int fds[2];
	volatile int stop;       /* what cancel() reports */
	int wake_only;           /* the thread wakes without asking to stop */
	int calls;
	long delay_ms;
	pthread_t thread;
} waker;

static int cancel_cb(void *ctx)
{
	waker *w = ctx;
	char buf[16];

	w->calls++;
	while (read(w->fds[0], buf, sizeof buf) > 0) /* drain: the caller's job */
		;
	return w->stop;
}

static void *wake_later(void *arg)
{
	waker *w = arg;
	msleep(w->delay_ms);
	if (!w->wake_only)
		w->stop = 1;
	if (write(w->fds[1], "!", 1) != 1)
		abort();
	return NULL;
}

static void waker_init(waker *w)
{
	memset(w, 0, sizeof *w);
	assert_int_equal(pipe2(w->fds, O_NONBLOCK | O_CLOEXEC), 0);
}

static void waker_close(waker *w)
{
	close(w->fds[0]);
	close(w->fds[1]);
}

static tf_fetch *new_fetch(waker *w)
{
	tf_fetch *f = NULL;
	assert_int_equal(tf_fetch_new(&f, w->fds[0], cancel_cb, w), TF_OK);
	assert_non_null(f);
	return f;
}

static tf_fetch_req taxii_req(const char *u)
{
	tf_fetch_req req = {0};
	req.url = u;
	req.accept = TAXII_MEDIA;
	req.username = "u";
	req.password = "p";
	return req;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_get_ok(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req;
	long long bytes = 0;
	char err[256];
	(void)state;

	faults(NULL);
	waker_init(&w);
	f = new_fetch(&w);
	req = taxii_req(url("/taxii2/"));
	assert_int_equal(tf_fetch_get(f, &req, &resp, &bytes, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	assert_non_null(resp.body);
	assert_int_equal(strlen(resp.body), resp.len);
	assert_non_null(strstr(resp.body, "\"api_roots\""));
	assert_string_equal(resp.content_type, TAXII_MEDIA);
	assert_null(resp.location);
	assert_int_equal(bytes, (long long)resp.len);
	assert_true(w.calls >= 1); /* asked once before the request */
	tf_fetch_resp_free(&resp);

	/* the same handle again: an objects page with its date header */
	req = taxii_req(url("/api1/collections/" COLLECTION "/objects/?limit=5"));
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	assert_non_null(resp.date_added_last);
	assert_non_null(strstr(resp.date_added_last, "2024-01-01T00:00:04."));
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_auth_and_redirect(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req;
	char err[256];
	(void)state;

	faults(NULL);
	waker_init(&w);
	f = new_fetch(&w);
	/* without credentials: 401 with an HTML page is an answer, not an error */
	req = taxii_req(url("/taxii2/"));
	req.username = req.password = NULL;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 401);
	assert_non_null(resp.content_type);
	assert_non_null(strstr(resp.content_type, "text/html"));
	tf_fetch_resp_free(&resp);

	/* a missing trailing slash: 308, followed, credentials kept (same host) */
	req = taxii_req(url("/taxii2"));
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	assert_null(resp.location);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_body_cap(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	waker_init(&w);
	f = new_fetch(&w);
	/* refused from Content-Length */
	faults(NULL);
	req.url = url("/bundles/poisonivy.json");
	req.max_bytes = 1000;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ELIMIT);
	assert_string_equal(err, "response larger than 1000 bytes");
	assert_null(resp.body);

	/* refused while receiving: chunked, no length announced */
	faults("{\"huge\":{\"bytes\":400000,\"chunked\":true}}");
	req.max_bytes = 100000;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ELIMIT);
	assert_string_equal(err, "response larger than 100000 bytes");

	/* and the same handle still works afterwards */
	faults(NULL);
	req.max_bytes = 0;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.len, 89906);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

/* A transfer stalled by fault (started ahead with tf_fetch_prefetch when
 * ahead is set) ends on a cancel; the handle is reusable after. */
static void stalled_cancel(const char *fault, int ahead)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];

	faults(fault);
	waker_init(&w);
	f = new_fetch(&w);
	w.delay_ms = 100;
	assert_int_equal(pthread_create(&w.thread, NULL, wake_later, &w), 0);
	req.url = url("/bundles/poisonivy.json");
	if (ahead)
		assert_int_equal(tf_fetch_prefetch(f, &req), TF_OK);
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ECANCELLED);
	assert_null(resp.body);
	pthread_join(w.thread, NULL);

	/* the handle is reusable after an abort */
	faults(NULL);
	w.stop = 0;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_cancel_stalled_body(void **state)
{
	(void)state;
	stalled_cancel("{\"stall\":{\"after_bytes\":100,\"seconds\":60}}", 0);
}

static void test_cancel_stalled_headers(void **state)
{
	(void)state;
	stalled_cancel("{\"stall\":{\"after_bytes\":-1,\"seconds\":60}}", 0);
}

static void test_cancel_before_start(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	faults(NULL);
	waker_init(&w);
	f = new_fetch(&w);
	w.stop = 1;
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ECANCELLED);
	assert_int_equal(w.calls, 1);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_spurious_wake(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	/* the fd becomes readable but cancel() says go on: the transfer ends
	 * normally */
	faults("{\"stall\":{\"after_bytes\":100,\"seconds\":1}}");
	waker_init(&w);
	f = new_fetch(&w);
	w.delay_ms = 50;
	w.wake_only = 1;
	assert_int_equal(pthread_create(&w.thread, NULL, wake_later, &w), 0);
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	pthread_join(w.thread, NULL);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.len, 89906);
	assert_true(w.calls >= 2); /* before the request, and on the wake-up */
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_redirect_refused(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	waker_init(&w);
	f = new_fetch(&w);
	req.url = url("/bundles/poisonivy.json");
	faults("{\"redirect\":{\"location\":\"ftp://127.0.0.1/x\",\"code\":302}}");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "redirect to a non-http(s) URL refused");
	faults("{\"redirect\":{\"location\":\"file:///etc/passwd\",\"code\":301}}");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "redirect to a non-http(s) URL refused");
	/* a redirect loop ends at TF_MAX_REDIRECTS */
	faults("{\"redirect\":{\"location\":\"/bundles/poisonivy.json\",\"code\":302}}");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_non_null(strstr(err, "redirects"));

	/* non-http URLs are refused before any transfer */
	req.url = "ftp://127.0.0.1/x";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_EINVAL);
	req.url = "file:///etc/passwd";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_EINVAL);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_connection_refused(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof sa;
	int s = socket(AF_INET, SOCK_STREAM, 0), port;
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char u[128], want[128], err[256];
	(void)state;

	/* a port that was free a moment ago and has no listener */
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	port = ntohs(sa.sin_port);
	close(s);
	snprintf(u, sizeof u, "http://127.0.0.1:%d/taxii2/", port);
	snprintf(want, sizeof want, "connection refused to 127.0.0.1:%d", port);
	waker_init(&w);
	f = new_fetch(&w);
	req.url = u;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, want);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_retry_after_captured(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req;
	char err[256];
	(void)state;

	faults("{\"status\":{\"code\":429,\"retry_after\":7}}");
	waker_init(&w);
	f = new_fetch(&w);
	req = taxii_req(url("/api1/collections/" COLLECTION "/objects/?limit=5"));
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 429);
	assert_string_equal(resp.retry_after, "7");
	assert_null(resp.date_added_last);
	assert_non_null(strstr(resp.body, "\"title\""));
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_truncated(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	faults("{\"truncate\":true}");
	waker_init(&w);
	f = new_fetch(&w);
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_non_null(strstr(err, "truncated"));
	assert_null(resp.body);
	tf_fetch_free(f);
	waker_close(&w);
}

static void test_total_timeout(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	/* a stalled server and no cancel: the request's own timeout ends it */
	faults("{\"stall\":{\"after_bytes\":100,\"seconds\":30}}");
	waker_init(&w);
	f = new_fetch(&w);
	req.url = url("/bundles/poisonivy.json");
	req.timeout_s = 1;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "timed out after 1 s");
	assert_null(resp.body);
	tf_fetch_free(f);
	waker_close(&w);
}

/* A request started ahead is the one a later get of the same request
 * continues (the upstream answers it once); a get of another request drops
 * it; a prefetch never waited for costs nothing but the request. */
static void test_prefetch(void **state)
{
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req, other;
	long long bytes = 0;
	char err[256], a[512], b[512];
	(void)state;

	faults(NULL);
	waker_init(&w);
	f = new_fetch(&w);
	snprintf(a, sizeof a, "%s", url("/api1/collections/" COLLECTION "/objects/?limit=5"));
	snprintf(b, sizeof b, "%s", url("/api1/collections/" COLLECTION "/objects/?limit=7"));
	req = taxii_req(a);
	/* A run's connection is open by then (discovery, root, collection). */
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	tf_fetch_resp_free(&resp);
	assert_int_equal(tf_fetch_prefetch(f, &req), TF_OK);
	msleep(100); /* the upstream answers meanwhile */
	assert_int_equal(tf_fetch_get(f, &req, &resp, &bytes, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	assert_non_null(resp.date_added_last);
	assert_int_equal(bytes, (long long)resp.len);
	assert_non_null(strstr(resp.body, "\"objects\""));
	tf_fetch_resp_free(&resp);
	assert_int_equal(stat_of("objects_pages"), 2); /* not 3: asked once */

	/* started ahead for a, then b is asked for: b's answer, a dropped */
	assert_int_equal(tf_fetch_prefetch(f, &req), TF_OK);
	other = taxii_req(b);
	assert_int_equal(tf_fetch_get(f, &other, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	{
		json_object *o = json_tokener_parse(resp.body), *objs;
		assert_true(json_object_object_get_ex(o, "objects", &objs));
		assert_int_equal(json_object_array_length(objs), 7);
		json_object_put(o);
	}
	tf_fetch_resp_free(&resp);

	/* same URL, other credentials: not the same request */
	assert_int_equal(tf_fetch_prefetch(f, &req), TF_OK);
	other = taxii_req(a);
	other.password = "wrong";
	assert_int_equal(tf_fetch_get(f, &other, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 401);
	tf_fetch_resp_free(&resp);

	/* never waited for: freed with the handle */
	assert_int_equal(tf_fetch_prefetch(f, &req), TF_OK);
	tf_fetch_free(f);
	waker_close(&w);
}

/* A prefetched page that stalls is cancelled like any other transfer. */
static void test_prefetch_stalled_cancel(void **state)
{
	(void)state;
	stalled_cancel("{\"stall\":{\"after_bytes\":100,\"seconds\":120}}", 1);
}

static void test_no_wake_fd(void **state)
{
	tf_fetch *f = NULL;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	/* -1 and no cancel function: plain bounded GETs (test_connection) */
	faults(NULL);
	assert_int_equal(tf_fetch_new(&f, -1, NULL, NULL), TF_OK);
	req.url = url("/bundles/poisonivy.json");
	req.timeout_s = 5;
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
}

/* A proxy that does not answer: the error names the proxy and never its
 * password; no_proxy sends the loopback upstream direct past it. */
static void test_proxy_settings(void **state)
{
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t sl = sizeof sa;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	char proxy[64], err[256];
	tf_feed_net net = {.proxy = proxy, .no_proxy = "", .proxy_username = "pu",
	                   .proxy_secret = "pw-PLUGH"};
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	(void)state;

	faults(NULL);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);
	assert_int_equal(getsockname(s, (struct sockaddr *)&sa, &sl), 0);
	snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", ntohs(sa.sin_port));
	close(s);
	waker_init(&w);
	f = new_fetch(&w);
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	if (!strstr(err, "could not connect to the proxy") || strstr(err, "PLUGH"))
		fail_msg("proxy error: %s", err);
	net.no_proxy = "localhost,127.0.0.1";
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

/* The address policy (README "Which addresses feeds may reach"): checked on
 * the address connected, so a URL, a redirect and a resolved name are all
 * caught; 169.254.169.254 is safe to name here because the check refuses
 * before any packet is sent. */
static void test_address_policy(void **state)
{
	tf_config cfg;
	tf_feed_net net = {.upstream = &cfg.upstream};
	waker w;
	tf_fetch *f;
	tf_fetch_resp resp;
	tf_fetch_req req = {0};
	char err[256];
	(void)state;

	faults(NULL);
	tf_addr_policy_default(&cfg.upstream);
	waker_init(&w);
	f = new_fetch(&w);
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	req.url = "http://169.254.169.254/latest/meta-data/";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address 169.254.169.254 is not allowed (upstream_deny)");
	req.url = "http://[fe80::1]:8080/";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address fe80::1 is not allowed (upstream_deny)");
	req.url = "http://0.0.0.0:1/";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address 0.0.0.0 is not allowed (upstream_deny)");

	/* loopback is allowed by default: the test upstream answers */
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	tf_fetch_resp_free(&resp);

	/* a redirect from the allowed upstream to a denied address: refused at
	 * the hop, whether libcurl follows it or tf_fetch_get does (with
	 * credential headers; same origin only, so the refusal there is the
	 * origin rule's) */
	faults("{\"redirect\":{\"location\":\"http://169.254.169.254/\",\"code\":302}}");
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address 169.254.169.254 is not allowed (upstream_deny)");
	faults(NULL);

	/* an operator's deny of loopback, and an allow carving one host out (a
	 * new handle each time: the policy is fixed for a handle's life, and
	 * its cached connections were checked when they were opened) */
	assert_int_equal(tf_cidr_list_add("127.0.0.0/8, ::1", cfg.upstream.deny,
	                                  &cfg.upstream.ndeny, TF_MAX_UPSTREAM_RULES * 2), TF_OK);
	tf_fetch_free(f);
	f = new_fetch(&w);
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address 127.0.0.1 is not allowed (upstream_deny)");
	/* through a proxy, the proxy's address is the one connected and checked
	 * (the target's name would be the proxy's to resolve) */
	net.proxy = "http://127.0.0.1:9";
	net.no_proxy = "";
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	req.url = "http://feeds.example.test/x";
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_ENETWORK);
	assert_string_equal(err, "upstream address 127.0.0.1 is not allowed (upstream_deny)");
	net.proxy = NULL;
	net.no_proxy = NULL;
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	req.url = url("/bundles/poisonivy.json");
	assert_int_equal(tf_cidr_list_add("127.0.0.1", cfg.upstream.allow, &cfg.upstream.nallow,
	                                  TF_MAX_UPSTREAM_RULES), TF_OK);
	tf_fetch_free(f);
	f = new_fetch(&w);
	assert_int_equal(tf_fetch_set_net(f, &net), TF_OK);
	assert_int_equal(tf_fetch_get(f, &req, &resp, NULL, err, sizeof err), TF_OK);
	assert_int_equal(resp.status, 200);
	tf_fetch_resp_free(&resp);
	tf_fetch_free(f);
	waker_close(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_get_ok),
		cmocka_unit_test(test_auth_and_redirect),
		cmocka_unit_test(test_body_cap),
		cmocka_unit_test(test_cancel_stalled_body),
		cmocka_unit_test(test_cancel_stalled_headers),
		cmocka_unit_test(test_cancel_before_start),
		cmocka_unit_test(test_spurious_wake),
		cmocka_unit_test(test_redirect_refused),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_retry_after_captured),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_total_timeout),
		cmocka_unit_test(test_no_wake_fd),
		cmocka_unit_test(test_prefetch),
		cmocka_unit_test(test_prefetch_stalled_cancel),
		cmocka_unit_test(test_proxy_settings),
		cmocka_unit_test(test_address_policy),
	};
	return cmocka_run_group_tests_name("fetch", tests, start_upstream, stop_upstream);
}
