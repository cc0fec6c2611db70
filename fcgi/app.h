/* The per-process state of the handler and the request pipeline. One tf_app
 * per process: config loaded once, store opened once (lazily, after any
 * fork), nothing request-specific. Each request lives in its own tf_req and
 * tf_resp, built and torn down inside tf_app_handle(). */
#ifndef TF_APP_H
#define TF_APP_H

#include "config.h"
#include "request.h"
#include "respond.h"
#include "store.h"

#ifndef TF_VERSION
#error "TF_VERSION comes from the VERSION file (the Makefile passes -DTF_VERSION)"
#endif

typedef struct tf_app {
	tf_config cfg;
	int cfg_rc;             /* TF_OK, or why the config could not be loaded */
	tf_store *st;           /* NULL until opened; see tf_app_store() */
	int store_rc;           /* last open result, to log changes only */
} tf_app;

/* Loads the config (never fatal: a broken config answers every request with
 * a 500 instead of a respawn loop under the web server). */
void tf_app_init(tf_app *app, const char *argv0);
void tf_app_close(tf_app *app);

/* The store, opened on first use and again after a failure (a store that
 * appears later, or gets fixed permissions, is picked up without a restart).
 * 0 with app->st set, or -1 with a 503 in resp. */
int tf_app_store(tf_app *app, tf_resp *resp);

/* One request: parse → authenticate → route → CSRF → query validators →
 * body → handler → ETag → write. envp: the request's CGI parameters. Never
 * fails: every outcome is a response written through wr. */
void tf_app_handle(tf_app *app, char **envp, tf_read_fn rd, void *rctx, tf_write_fn wr,
                   void *wctx);

#endif
