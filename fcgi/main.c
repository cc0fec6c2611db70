/* threatfeed.fcgi — the FastCGI responder for /api/ (docs/SPEC.md §2).
 *
 *   threatfeed.fcgi              accept on fd 0 (lighttpd bin-path, spawn-fcgi,
 *                                mod_fcgid), or run once as plain CGI when fd 0
 *                                is not a FastCGI listening socket
 *   threatfeed.fcgi SOCKET       listen on a socket path or HOST:PORT
 *
 * One request at a time per process; run several processes for concurrency.
 * Stateless: everything lives in the store, so processes come and go freely.
 * This file is the FastCGI plumbing only; the request pipeline is app.c. */
#include <errno.h>
#include <fcgiapp.h>
#include <stdint.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "log.h"

extern char **environ;

/* Consecutive accept() failures tolerated (with a pause each) before giving
 * up: a listening socket that is gone must not leave a spinning process. */
#define TF_MAX_ACCEPT_ERRORS 50
#define TF_ACCEPT_PAUSE_US   100000

static volatile sig_atomic_t stopping;

/* SIGTERM/SIGINT: finish the request in hand, then leave. libfcgi's accept
 * returns on the EINTR (FCGI_FAIL_ACCEPT_ON_INTR) and sees the shutdown. */
static void on_term(int sig)
{
	(void)sig;
	stopping = 1;
	FCGX_ShutdownPending();
}

static void signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sigemptyset(&sa.sa_mask);
	/* A client or web server gone mid-answer is a failed write, not death. */
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	sa.sa_handler = on_term;
	sa.sa_flags = 0;   /* no SA_RESTART: accept() must return */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
}

static long fcgx_read(void *ctx, char *buf, size_t len)
{
	int n = FCGX_GetStr(buf, len > INT32_MAX ? INT32_MAX : (int)len, ctx);
	return n > 0 ? n : (FCGX_GetError(ctx) ? -1 : 0);
}

static int fcgx_write(void *ctx, const char *buf, size_t len)
{
	return len <= INT32_MAX && FCGX_PutStr(buf, (int)len, ctx) == (int)len ? 0 : -1;
}

static long stdio_read(void *ctx, char *buf, size_t len)
{
	size_t n = fread(buf, 1, len, ctx);
	return n ? (long)n : (ferror((FILE *)ctx) ? -1 : 0);
}

static int stdio_write(void *ctx, const char *buf, size_t len)
{
	return fwrite(buf, 1, len, ctx) == len ? 0 : -1;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: threatfeed.fcgi [SOCKET]\n"
	        "\n"
	        "The threatfeed API as a FastCGI responder (mount it at /api/).\n"
	        "\n"
	        "  (no argument)  accept on fd 0, as started by lighttpd (bin-path),\n"
	        "                 spawn-fcgi or mod_fcgid; when fd 0 is not a FastCGI\n"
	        "                 socket, answer one request as a plain CGI program\n"
	        "  SOCKET         listen on a Unix socket path (created with the umask:\n"
	        "                 the web server's user needs write permission on it)\n"
	        "                 or on 127.0.0.1:PORT (':PORT' listens on every interface;\n"
	        "                 FCGI_WEB_SERVER_ADDRS limits who may connect)\n"
	        "  -h, --help     this text\n"
	        "  -V, --version  print the version\n"
	        "\n"
	        "Environment: THREATFEED_DB (store), THREATFEED_CONF (config file:\n"
	        "api_token, trust_remote_user, ...), THREATFEED_STATE_DIR, THREATFEED_WORKER,\n"
	        "THREATFEED_LOG=stderr|syslog (default: syslog under FastCGI).\n");
}

/* syslog under a web server (stderr may be closed or a shared error log);
 * stderr for plain CGI runs and when asked. */
static int log_to_stderr(int cgi)
{
	const char *v = getenv("THREATFEED_LOG");
	if (v && !strcmp(v, "stderr"))
		return 1;
	if (v && !strcmp(v, "syslog"))
		return 0;
	return cgi;
}

static int run_cgi(const char *argv0)
{
	tf_app app;

	tf_app_init(&app, argv0);
	tf_app_handle(&app, environ, stdio_read, stdin, stdio_write, stdout);
	tf_app_close(&app);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int run_fastcgi(const char *argv0, const char *bind)
{
	FCGX_Request rq;
	tf_app app;
	int fd = 0, errors = 0;
	tf_resp probe;

	if (bind && (fd = FCGX_OpenSocket(bind, 128)) < 0) {
		tf_err("main: cannot listen on %s: %s", bind, strerror(errno));
		return 1;
	}
	tf_app_init(&app, argv0);
	/* Open the store now (we never fork before this point), so the first
	 * request is not slower; a failure is retried per request. */
	tf_resp_init(&probe);
	if (!app.cfg_rc)
		tf_app_store(&app, &probe);
	tf_resp_free(&probe);
	if (FCGX_InitRequest(&rq, fd, FCGI_FAIL_ACCEPT_ON_INTR)) {
		tf_err("main: FCGX_InitRequest failed");
		return 1;
	}
	while (!stopping) {
		if (FCGX_Accept_r(&rq) < 0) {
			if (stopping)
				break;
			if (++errors > TF_MAX_ACCEPT_ERRORS) {
				tf_err("main: accept keeps failing (%s): exiting", strerror(errno));
				break;
			}
			usleep(TF_ACCEPT_PAUSE_US);
			continue;
		}
		errors = 0;
		tf_app_handle(&app, rq.envp, fcgx_read, rq.in, fcgx_write, rq.out);
		FCGX_Finish_r(&rq);
	}
	FCGX_Free(&rq, 1);
	tf_app_close(&app);
	return stopping ? 0 : 1;
}

int main(int argc, char **argv)
{
	const char *bind = NULL;
	int cgi;

	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		usage(stdout);
		return 0;
	}
	if (argc > 1 && (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version"))) {
		printf("threatfeed.fcgi %s\n", TF_VERSION);
		return 0;
	}
	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		usage(stderr);
		return 2;
	}
	if (argc == 2)
		bind = argv[1];
	signals();
	if (FCGX_Init()) {
		fprintf(stderr, "threatfeed.fcgi: FCGX_Init failed\n");
		return 1;
	}
	cgi = !bind && FCGX_IsCGI();
	tf_log_init("threatfeed.fcgi", log_to_stderr(cgi));
	return cgi ? run_cgi(argv[0]) : run_fastcgi(argv[0], bind);
}
