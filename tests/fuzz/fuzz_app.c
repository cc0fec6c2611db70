/* libFuzzer harness: the FastCGI handler end to end — tf_app_handle()
 * (fcgi/app.c) with its real handlers on a real LMDB store, the way
 * tests/unit/test_app.c drives it, for a short sequence of requests.
 *
 * Input: requests separated by a line "%%". Each request is
 *     METHOD SP URI              (the query is what follows '?')
 *     Name: value                (headers, as HTTP_NAME CGI parameters)
 *     NAME=value                 (any other CGI parameter, e.g. CONTENT_LENGTH)
 *     <empty line>
 *     body
 * CONTENT_LENGTH is the body's length and CONTENT_TYPE application/json
 * unless a line sets them. "{task}" in the URI stands for the last task_id
 * an answer of this input held, so cancels and task reads of a real task
 * are reachable (ids are random). The store is a fresh one in a tmpfs directory for
 * every input, so a crash reproduces from its input alone; runs are left to
 * agents (runs = agents: a consume only enqueues) and the worker binary is
 * /bin/false, so nothing the fuzzer sends starts a run.
 *
 * Invariants checked on every response: a CGI "Status: NNN" line with a
 * status the SPEC uses, the header block ended by an empty line, and a body
 * that, when the response is JSON, parses (an error body with "error" and
 * "code"). FUZZ_APP_TRACE=1 in the environment prints each response's
 * status line and the start of its body, to read what an input did. */
#include "fuzz.h"

#include <ftw.h>
#include <unistd.h>

#include "app.h"
#include "err.h"
#include "json.h"

#define MAX_REQUESTS 8
#define MAX_PARAMS   48
#define OUT_CAP      (4 * 1024 * 1024)

struct src {
	const char *p;
	size_t left;
};

static long rd(void *ctx, char *buf, size_t len)
{
	struct src *b = ctx;
	size_t n = len < b->left ? len : b->left;

	if (n > 13)
		n = 13; /* short reads, like a socket */
	memcpy(buf, b->p, n);
	b->p += n;
	b->left -= n;
	return (long)n;
}

struct out {
	char *buf;
	size_t len;
	int overflow;
};

static int wr(void *ctx, const char *buf, size_t len)
{
	struct out *o = ctx;

	if (len > OUT_CAP - o->len) {
		o->overflow = 1;
		return -1;
	}
	memcpy(o->buf + o->len, buf, len);
	o->len += len;
	return 0;
}

static char last_task[64];

/* Remembers an answer's task_id for "{task}" in later URIs. */
static void note_task(json_object *doc)
{
	const char *id = tf_json_str(doc, "task_id");

	if (id && strlen(id) < sizeof last_task)
		snprintf(last_task, sizeof last_task, "%s", id);
}

static void check_response(struct out *o)
{
	int status = 0;
	char *sep, *body;
	json_object *doc = NULL;

	if (o->overflow)
		return; /* an export larger than the cap: the writer stopped it */
	FUZZ_CHECK(o->len < OUT_CAP);
	o->buf[o->len] = '\0';
	if (getenv("FUZZ_APP_TRACE"))
		fprintf(stderr, "fuzz_app: %.300s\n", o->buf);
	FUZZ_CHECK(sscanf(o->buf, "Status: %d ", &status) == 1);
	FUZZ_CHECK(status >= 200 && status <= 599);
	FUZZ_CHECK((sep = strstr(o->buf, "\r\n\r\n")) != NULL);
	body = sep + 4;
	*sep = '\0';
	if (*body && strstr(o->buf, "Content-Type: application/json") &&
	    (size_t)(body - o->buf) < o->len) {
		FUZZ_CHECK(tf_json_parse(body, o->len - (size_t)(body - o->buf), 64, &doc, NULL, 0) ==
		           TF_OK);
		if (status >= 400)
			FUZZ_CHECK(tf_json_str(doc, "error") && tf_json_str(doc, "code"));
		note_task(doc);
		json_object_put(doc);
	}
}

/* "Content-Type" → "HTTP_CONTENT_TYPE=value" into buf (NULL if too long). */
static char *cgi_header(const char *line, const char *colon, char *buf, size_t len)
{
	size_t n = 0;
	const char *v = colon + 1;

	n = (size_t)snprintf(buf, len, "HTTP_");
	for (const char *c = line; c < colon && n + 1 < len; c++)
		buf[n++] = *c == '-' ? '_' : (char)(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
	while (*v == ' ')
		v++;
	if (n + strlen(v) + 2 > len)
		return NULL;
	buf[n++] = '=';
	strcpy(buf + n, v);
	return buf;
}

/* One request: text (NUL-terminated, may be modified) → tf_app_handle. */
static void one(tf_app *app, char *text, size_t size, struct out *o)
{
	char *env[MAX_PARAMS + 8], hbuf[MAX_PARAMS][512], m[64], u[2048], q[2048], cl[64];
	char *p = text, *eol, *sp, *body, *qm;
	size_t n = 0, nh = 0;
	int have_cl = 0, have_ct = 0;
	struct src src;

	eol = memchr(p, '\n', size);
	if (eol)
		*eol = '\0';
	sp = strchr(p, ' ');
	snprintf(m, sizeof m, "REQUEST_METHOD=%.*s", sp ? (int)(sp - p) : (int)strlen(p), p);
	snprintf(u, sizeof u, "REQUEST_URI=%s", sp ? sp + 1 : "/");
	if ((qm = strstr(u, "{task}")) && strlen(u) + sizeof last_task < sizeof u) {
		char rest[sizeof u];
		snprintf(rest, sizeof rest, "%s", qm + 6);
		snprintf(qm, sizeof u - (size_t)(qm - u), "%s%s", last_task, rest);
	}
	qm = strchr(u, '?');
	snprintf(q, sizeof q, "QUERY_STRING=%.2000s", qm ? qm + 1 : "");
	env[n++] = m;
	env[n++] = u;
	env[n++] = q;
	env[n++] = "HTTP_HOST=127.0.0.1:8080";
	body = eol ? eol + 1 : text + size;
	for (p = body; p < text + size;) {
		char *colon, *eq;
		if (!(eol = memchr(p, '\n', (size_t)(text + size - p))))
			eol = text + size;
		*eol = '\0';
		if (eol == p) {
			p = eol + 1;
			break;
		}
		if (nh < MAX_PARAMS) {
			if ((colon = strchr(p, ':')) && (!(eq = strchr(p, '=')) || colon < eq)) {
				if (cgi_header(p, colon, hbuf[nh], sizeof hbuf[nh]))
					env[n++] = hbuf[nh++];
			} else {
				have_cl |= !strncmp(p, "CONTENT_LENGTH=", 15);
				have_ct |= !strncmp(p, "CONTENT_TYPE=", 13);
				env[n++] = p;
				nh++;
			}
		}
		p = eol + 1;
	}
	body = p < text + size ? p : text + size;
	src.p = body;
	src.left = (size_t)(text + size - body);
	if (!have_cl) {
		snprintf(cl, sizeof cl, "CONTENT_LENGTH=%zu", src.left);
		env[n++] = cl;
	}
	if (!have_ct)
		env[n++] = "CONTENT_TYPE=application/json";
	env[n] = NULL;
	o->len = 0;
	o->overflow = 0;
	tf_app_handle(app, env, rd, &src, wr, o);
	check_response(o);
}

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct out o;
	char dir[64] = "/dev/shm/tf_fuzz_app_XXXXXX", db[128], *text, *req;
	tf_app app;
	int k = 0;

	if (!o.buf && !(o.buf = malloc(OUT_CAP + 1)))
		abort();
	if (access("/dev/shm", W_OK))
		snprintf(dir, sizeof dir, "/tmp/tf_fuzz_app_XXXXXX");
	if (!mkdtemp(dir))
		abort();
	snprintf(db, sizeof db, "%s/db", dir);
	setenv("THREATFEED_DB", db, 1);
	setenv("THREATFEED_STATE_DIR", dir, 1);
	setenv("THREATFEED_RUNS", "agents", 1);
	setenv("THREATFEED_WORKER", "/bin/false", 1);
	unsetenv("THREATFEED_CONF");
	memset(&app, 0, sizeof app);
	tf_app_init(&app, "fuzz_app");
	FUZZ_CHECK(app.cfg_rc == TF_OK);
	last_task[0] = '\0';
	text = fuzz_cstr(data, size);
	/* requests separated by "\n%%\n" lines */
	for (req = text; req && k < MAX_REQUESTS; k++) {
		size_t left = (size_t)(text + size - req);
		char *next = memmem(req, left, "\n%%\n", 4);
		size_t len = next ? (size_t)(next - req) : left;
		if (next) {
			*next = '\0';
			next += 4;
		}
		one(&app, req, len, &o);
		req = next;
	}
	free(text);
	tf_app_close(&app);
	FUZZ_CHECK(nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS) == 0);
	return 0;
}
