/* The PostgreSQL backend: the tables of store.h as rows of one key-ordered
 * table, so that everything above the store runs unchanged on either backend.
 *
 *   tf_kv (tbl smallint, k bytea, v bytea, PRIMARY KEY (tbl, k))
 *
 * bytea compares like memcmp (then by length), which is LMDB's key order, so
 * cursors walk the same sequence on both. One key per (tbl, k) is the
 * primary key: "one active run per feed" (TF_TBL_ACTIVE) is a constraint of
 * the database, and so is one queue entry per sequence number.
 *
 * Semantics kept from LMDB (store.h): writers are serialized by a
 * transaction-scoped advisory lock taken first in every update, so a
 * read-then-write inside one update is atomic, as with LMDB's single writer;
 * readers run in REPEATABLE READ snapshots and never wait for writers.
 *
 * Failures: a connection that drops, or a serialization failure, before the
 * COMMIT is sent, re-makes the connection and replays fn (store.h already
 * requires fn to be replayable); a drop during the COMMIT leaves its outcome
 * unknown and fails with TF_ESTORE, never a half page. A full disk
 * (SQLSTATE 53100) is TF_ENOSPACE, as with LMDB.
 *
 * Two connections per store, each used by one transaction at a time: the
 * writer's and the readers'. A worker's driver thread peeks for a cancel
 * (a view) while its writer thread commits (an update): on one connection
 * the peek would wait for the commit. A third, the session's, is made only
 * by a process that holds a lease or listens (store.h "runs on many hosts"):
 * it stays idle between wake-ups, so a lease never waits behind a commit. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "err.h"
#include "tf_limits.h"
#include "log.h"

/* The schema version this build reads and writes; `threatfeed db migrate`
 * brings a database to it. */
#define PG_SCHEMA_VERSION 1
/* Attempts of one transaction across dropped connections and serialization
 * failures, and the pause before each retry (doubling). */
#define PG_ATTEMPTS 6
#define PG_RETRY_MS 50
/* Rows a cursor fetches ahead while it walks without writing. */
#define PG_CURSOR_BATCH 256
/* Advisory lock class of the writer lock (the second key is the schema's
 * hash, so two stores in one database do not serialize each other). */
#define PG_LOCK_CLASS 7406
/* The signals' rows in tf_kv (store.h "signals"): a tbl no tf_table uses, so
 * no transaction of the tables touches them, and no schema change (a
 * database migrated for an older build has them already). */
#define PG_SIGNAL_TBL 100

typedef struct pg_link {
	PGconn *conn;
	pthread_mutex_t mu; /* one transaction at a time on this connection */
	int prepared;
	int lazy;
	int batch_prepared; /* the batch statements, prepared on first use */
} pg_link;

/* Longest lease or channel name (a task id; "queue"). */
#define PG_MAX_NAME 64

typedef struct pg_store {
	tf_store base;
	char *uri;
	pg_link w, r; /* writer's, readers' */
	pg_link s;    /* the session's: leases and LISTEN */
	/* Channels are qualified by the schema, so that stores sharing a
	 * database do not wake each other: "tf_<name>_<schema hash>". */
	char chan_suffix[24];
	char leases[TF_MAX_LEASES][PG_MAX_NAME];
	char channels[TF_MAX_CHANNELS][PG_MAX_NAME];
	int nleases, nchannels;
} pg_store;

typedef struct pg_txn {
	tf_txn base;
	pg_link *c;
	int write;
	int lost;         /* a statement failed because the connection did */
	int retry;        /* a serialization failure or deadlock: replay */
	int full;         /* the database's disk is full */
	/* Per table, bumped by every write to it: cursors' caches go stale. */
	uint64_t wgen[TF_TBL__COUNT];
	PGresult **kept;  /* get results: valid until the next write / the end */
	size_t nkept, capkept;
} pg_txn;

typedef struct pg_cursor {
	tf_cursor base;
	pg_txn *t;
	tf_table tbl;
	unsigned char *key; /* where the cursor is (a copy); NULL: nowhere */
	size_t klen;
	PGresult *batch, *prev; /* rows ahead, and the batch before (pointers
	                         * handed out stay valid while the walk goes on) */
	int row, dir;           /* next row in batch, and its direction (+1/-1) */
	uint64_t wgen;          /* t->wgen[tbl] when batch was fetched */
} pg_cursor;

enum stmt { S_GET, S_PUT, S_DEL, S_FIRST, S_LAST, S_GE, S_GT, S_LT, S__COUNT };

static const char *const stmt_sql[S__COUNT] = {
	[S_GET] = "SELECT v FROM tf_kv WHERE tbl = $1 AND k = $2",
	[S_PUT] = ("INSERT INTO tf_kv (tbl, k, v) VALUES ($1, $2, $3) "
	           "ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v"),
	[S_DEL] = "DELETE FROM tf_kv WHERE tbl = $1 AND k = $2",
	[S_FIRST] = "SELECT k, v FROM tf_kv WHERE tbl = $1 ORDER BY k LIMIT $2",
	[S_LAST] = "SELECT k, v FROM tf_kv WHERE tbl = $1 ORDER BY k DESC LIMIT $2",
	[S_GE] = "SELECT k, v FROM tf_kv WHERE tbl = $1 AND k >= $3 ORDER BY k LIMIT $2",
	[S_GT] = "SELECT k, v FROM tf_kv WHERE tbl = $1 AND k > $3 ORDER BY k LIMIT $2",
	[S_LT] = "SELECT k, v FROM tf_kv WHERE tbl = $1 AND k < $3 ORDER BY k DESC LIMIT $2",
};
static const char *const stmt_name[S__COUNT] = {"get", "put", "del", "first",
                                                "last", "ge",  "gt",  "lt"};
static const int stmt_nparams[S__COUNT] = {2, 3, 2, 2, 2, 3, 3, 3};

/* Schema version 1. Later versions append their steps to migrations[]. */
static const char *const migrations[] = {
	"CREATE TABLE tf_kv (tbl smallint NOT NULL, k bytea NOT NULL, v bytea NOT NULL, "
	"PRIMARY KEY (tbl, k))",
};

static void pause_ms(int ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

/* ---- connections ----------------------------------------------------------- */

/* libpq's message, on one line (it ends with a newline and may have more). */
static const char *msg(PGconn *conn)
{
	static _Thread_local char buf[512];
	char *p;

	snprintf(buf, sizeof buf, "%s", conn ? PQerrorMessage(conn) : "out of memory");
	for (p = buf; *p; p++)
		if (*p == '\n' || *p == '\r' || *p == '\t')
			*p = ' ';
	while (p > buf && p[-1] == ' ')
		*--p = 0;
	return buf;
}

/* Notices ("relation already exists, skipping") are not for our users. */
static void quiet(void *arg, const char *message)
{
	(void)arg, (void)message;
}

#define STR_(x) #x
#define STR(x) STR_(x)

static int exec_simple(PGconn *conn, const char *sql)
{
	PGresult *res = PQexec(conn, sql);
	ExecStatusType s = PQresultStatus(res);
	PQclear(res);
	return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? TF_OK : TF_ESTORE;
}

/* The server's side of the keepalives (ignored on a unix socket), on every
 * connection: it is the server that must notice a vanished host and end its
 * sessions — the leases of the session connection, and the writer lock a
 * write connection may hold mid-transaction, which every other host's
 * writes wait behind. tcp_user_timeout covers a peer gone while data is
 * unacknowledged. */
static int session_settings(PGconn *conn)
{
	char sql[256];

	snprintf(sql, sizeof sql,
	         "SET tcp_keepalives_idle = %d; SET tcp_keepalives_interval = %d; "
	         "SET tcp_keepalives_count = %d; SET tcp_user_timeout = %d",
	         TF_PG_KEEPALIVE_IDLE_S, TF_PG_KEEPALIVE_INTERVAL_S, TF_PG_KEEPALIVE_COUNT,
	         TF_LEASE_DEAD_S * 1000);
	return exec_simple(conn, sql);
}

/* Keepalives on our side too: a commit or a wait on a server that vanished
 * fails after TF_LEASE_DEAD_S instead of hanging for the kernel's hours.
 * Given before the URI, so the URI's own settings win. */
static PGconn *connect_to(const char *uri, char *err, size_t errlen)
{
	static const char *const keys[] = {"keepalives", "keepalives_idle", "keepalives_interval",
	                                   "keepalives_count", "dbname", NULL};
	const char *vals[] = {"1", STR(TF_PG_KEEPALIVE_IDLE_S), STR(TF_PG_KEEPALIVE_INTERVAL_S),
	                      STR(TF_PG_KEEPALIVE_COUNT), uri, NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);

	if (conn && PQstatus(conn) == CONNECTION_OK && session_settings(conn) == TF_OK) {
		PQsetNoticeProcessor(conn, quiet, NULL);
		return conn;
	}
	if (err)
		snprintf(err, errlen, "cannot connect to the PostgreSQL store: %s", msg(conn));
	if (conn)
		PQfinish(conn);
	return NULL;
}

static int prepare_batch(pg_link *c);

static int prepare_all(pg_link *c)
{
	for (int i = 0; i < S__COUNT; i++) {
		PGresult *res = PQprepare(c->conn, stmt_name[i], stmt_sql[i], stmt_nparams[i], NULL);
		int ok = PQresultStatus(res) == PGRES_COMMAND_OK;
		if (!ok)
			tf_err("store: cannot prepare %s: %s", stmt_name[i], msg(c->conn));
		PQclear(res);
		if (!ok)
			return TF_ESTORE;
	}
	if (prepare_batch(c))
		return TF_ESTORE;
	c->prepared = 1;
	return TF_OK;
}

/* (Re)connects c if it is not connected; prepares the statements. */
static int conn_ready(pg_store *st, pg_link *c, char *err, size_t errlen)
{
	if (c->conn && PQstatus(c->conn) == CONNECTION_OK && c->prepared)
		return TF_OK;
	if (c->conn)
		PQfinish(c->conn);
	c->prepared = 0;
	if (!(c->conn = connect_to(st->uri, err, errlen)))
		return TF_ESTORE;
	if (c->lazy && exec_simple(c->conn, "SET synchronous_commit = off"))
		return TF_ESTORE;
	return prepare_all(c);
}

static void conn_close(pg_link *c)
{
	if (c->conn)
		PQfinish(c->conn);
	c->conn = NULL;
	pthread_mutex_destroy(&c->mu);
}

/* ---- schema ---------------------------------------------------------------- */

/* The schema version of the connected database: 0 when it has none. */
static int schema_version(PGconn *conn, int *version)
{
	PGresult *res = PQexec(conn, "SELECT to_regclass('tf_schema') IS NOT NULL");
	int have = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
	           PQgetvalue(res, 0, 0)[0] == 't';
	int ok = PQresultStatus(res) == PGRES_TUPLES_OK;

	PQclear(res);
	*version = 0;
	if (!ok)
		return TF_ESTORE;
	if (!have)
		return TF_OK;
	res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM tf_schema");
	ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;
	if (ok)
		*version = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return ok ? TF_OK : TF_ESTORE;
}

static int pg_migrate(const char *location, int *from, int *to, char *err, size_t errlen)
{
	PGconn *conn = connect_to(location, err, errlen);
	int rc = TF_ESTORE, v = 0;
	const int known = (int)(sizeof migrations / sizeof migrations[0]);

	*from = *to = 0;
	if (!conn)
		return TF_ESTORE;
	/* One migrator at a time: a second waits, then finds nothing to do. */
	if (exec_simple(conn, "BEGIN") ||
	    exec_simple(conn, "SELECT pg_advisory_xact_lock(7406, 0)") ||
	    exec_simple(conn, "CREATE TABLE IF NOT EXISTS tf_schema (version integer NOT NULL)") ||
	    schema_version(conn, &v))
		goto sqlfail;
	*from = v;
	if (v > known) {
		snprintf(err, errlen,
		         "the store's schema is version %d, newer than this build knows (%d)", v,
		         known);
		goto out;
	}
	for (; v < known; v++) {
		char sql[96];
		if (exec_simple(conn, migrations[v]))
			goto sqlfail;
		snprintf(sql, sizeof sql, "INSERT INTO tf_schema (version) VALUES (%d)", v + 1);
		if (exec_simple(conn, sql))
			goto sqlfail;
	}
	if (exec_simple(conn, "COMMIT"))
		goto sqlfail;
	*to = v;
	rc = TF_OK;
	goto out;
sqlfail:
	snprintf(err, errlen, "migration failed: %s", msg(conn));
out:
	PQfinish(conn);
	return rc;
}

/* ---- open / close ---------------------------------------------------------- */

static int schema_suffix(pg_store *st)
{
	PGresult *res = PQexec(st->r.conn, "SELECT current_schema()");
	int ok = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1;

	if (ok) {
		const char *schema = PQgetvalue(res, 0, 0);
		snprintf(st->chan_suffix, sizeof st->chan_suffix, "_%016llx",
		         (unsigned long long)tf_hash64(schema, strlen(schema)));
	}
	PQclear(res);
	return ok ? TF_OK : TF_ESTORE;
}

static void pg_close_store(tf_store *bst)
{
	pg_store *st = (pg_store *)bst;

	conn_close(&st->w);
	conn_close(&st->r);
	conn_close(&st->s);
	free(st->uri);
	free(st);
}

static int pg_open(tf_store **out, const char *location, size_t map_size, char *err,
                   size_t errlen)
{
	char dummy[8];
	pg_store *st = calloc(1, sizeof *st);
	int v = 0, rc;

	(void)map_size;
	if (!err)
		err = dummy, errlen = sizeof dummy;
	*out = NULL;
	if (!st || !(st->uri = strdup(location))) {
		free(st);
		return TF_ENOMEM;
	}
	st->base.ops = &tf_pg_ops;
	pthread_mutex_init(&st->w.mu, NULL);
	pthread_mutex_init(&st->r.mu, NULL);
	pthread_mutex_init(&st->s.mu, NULL);
	/* The readers' connection checks the schema; the writer's is made on
	 * the first update (a handler that only reads never opens it). */
	if (!(st->r.conn = connect_to(st->uri, err, errlen))) {
		rc = TF_ESTORE;
		goto fail;
	}
	if (schema_version(st->r.conn, &v)) {
		snprintf(err, errlen, "cannot read the store's schema version: %s", msg(st->r.conn));
		rc = TF_ESTORE;
		goto fail;
	}
	if (v != PG_SCHEMA_VERSION) {
		if (v == 0)
			snprintf(err, errlen,
			         "the PostgreSQL store has no threatfeed schema: run `threatfeed db migrate`");
		else
			snprintf(err, errlen,
			         "the PostgreSQL store's schema is version %d; this build knows %d%s", v,
			         PG_SCHEMA_VERSION,
			         v < PG_SCHEMA_VERSION ? ": run `threatfeed db migrate`" : "");
		rc = TF_ESTORE;
		goto fail;
	}
	if ((rc = prepare_all(&st->r))) {
		snprintf(err, errlen, "cannot prepare the store's statements: %s", msg(st->r.conn));
		goto fail;
	}
	if ((rc = schema_suffix(st))) {
		snprintf(err, errlen, "cannot read the store's schema name: %s", msg(st->r.conn));
		goto fail;
	}
	*out = &st->base;
	return TF_OK;
fail:
	pg_close_store(&st->base);
	return rc;
}

/* ---- statements ---------------------------------------------------------- */

static void keep(pg_txn *t, PGresult *res)
{
	if (t->nkept == t->capkept) {
		size_t cap = t->capkept ? t->capkept * 2 : 16;
		PGresult **k = realloc(t->kept, cap * sizeof *k);
		if (!k) { /* cannot keep it alive: the caller's pointer would dangle */
			tf_err("store: out of memory keeping a result");
			abort();
		}
		t->kept = k, t->capkept = cap;
	}
	t->kept[t->nkept++] = res;
}

static void release_kept(pg_txn *t)
{
	for (size_t i = 0; i < t->nkept; i++)
		PQclear(t->kept[i]);
	t->nkept = 0;
}

/* Classifies a failed statement for the transaction's retry decision. */
static int failed(pg_txn *t, PGresult *res)
{
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (PQstatus(t->c->conn) != CONNECTION_OK || (state && !strncmp(state, "08", 2)) ||
	    (state && !strncmp(state, "57P0", 4))) {
		t->lost = 1;
		return TF_ESTORE;
	}
	if (state && (!strcmp(state, "40001") || !strcmp(state, "40P01"))) {
		t->retry = 1;
		return TF_ESTORE;
	}
	if (state && !strcmp(state, "53100")) {
		t->full = 1;
		return TF_ENOSPACE;
	}
	tf_err("store: %s", msg(t->c->conn));
	return TF_ESTORE;
}

/* Runs prepared statement s with the table, an optional count or value and
 * an optional key. Binary in and out: keys and values are bytes. */
static PGresult *run_stmt(pg_txn *t, enum stmt s, tf_table tbl, const void *key, size_t klen,
                          const void *val, size_t vlen, int limit)
{
	char tbls[8], lims[16];
	const char *values[3];
	int lengths[3], formats[3] = {0, 1, 1};
	int n = 0;

	snprintf(tbls, sizeof tbls, "%d", (int)tbl);
	values[n] = tbls, lengths[n++] = 0;
	if (s == S_PUT) {
		values[n] = key, lengths[n] = (int)klen, formats[n++] = 1;
		values[n] = val, lengths[n] = (int)vlen, formats[n++] = 1;
	} else if (s == S_GET || s == S_DEL) {
		values[n] = key, lengths[n] = (int)klen, formats[n++] = 1;
	} else {
		snprintf(lims, sizeof lims, "%d", limit);
		values[n] = lims, lengths[n] = 0, formats[n++] = 0;
		if (s == S_GE || s == S_GT || s == S_LT)
			values[n] = key, lengths[n] = (int)klen, formats[n++] = 1;
	}
	return PQexecPrepared(t->c->conn, stmt_name[s], n, values, lengths, formats, 1);
}

static int pg_get(tf_txn *bt, tf_table tbl, const void *key, size_t klen, const void **val,
                  size_t *vlen)
{
	pg_txn *t = (pg_txn *)bt;
	PGresult *res = run_stmt(t, S_GET, tbl, key, klen, NULL, 0, 0);

	*val = NULL, *vlen = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		int rc = failed(t, res);
		PQclear(res);
		return rc;
	}
	if (PQntuples(res) == 0) {
		PQclear(res);
		return TF_ENOTFOUND;
	}
	*val = PQgetvalue(res, 0, 0);
	*vlen = (size_t)PQgetlength(res, 0, 0);
	keep(t, res);
	return TF_OK;
}

static int write_stmt(pg_txn *t, enum stmt s, tf_table tbl, const void *key, size_t klen,
                      const void *val, size_t vlen)
{
	PGresult *res;
	int rc = TF_OK;

	if (!t->write)
		return TF_EPERM;
	res = run_stmt(t, s, tbl, key, klen, val, vlen, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = failed(t, res);
	else if (s == S_DEL && !strcmp(PQcmdTuples(res), "0"))
		rc = TF_ENOTFOUND;
	PQclear(res);
	/* After the statement: key or val may point into a kept result. */
	release_kept(t);
	t->wgen[tbl]++;
	return rc;
}

static int pg_put(tf_txn *bt, tf_table tbl, const void *key, size_t klen, const void *val,
                  size_t vlen)
{
	return write_stmt((pg_txn *)bt, S_PUT, tbl, key, klen, val, vlen);
}

static int pg_del(tf_txn *bt, tf_table tbl, const void *key, size_t klen)
{
	return write_stmt((pg_txn *)bt, S_DEL, tbl, key, klen, NULL, 0);
}

/* ---- transactions ---------------------------------------------------------- */

static void txn_end(pg_txn *t)
{
	release_kept(t);
	free(t->kept);
	t->kept = NULL, t->capkept = 0;
}

/* One attempt: BEGIN, fn, COMMIT. *sent tells whether the COMMIT went out. */
static int attempt(pg_store *st, pg_txn *t, tf_txn_fn fn, void *ctx, int *sent)
{
	static const char begin_w[] = "BEGIN ISOLATION LEVEL READ COMMITTED; "
	                              "SELECT pg_advisory_xact_lock(7406, hashtext(current_schema()))";
	static const char begin_r[] = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
	PGresult *res;
	int rc;

	*sent = 0;
	if ((rc = conn_ready(st, t->c, NULL, 0))) {
		t->lost = 1;
		return rc;
	}
	res = PQexec(t->c->conn, t->write ? begin_w : begin_r);
	if (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = failed(t, res);
		PQclear(res);
		return rc;
	}
	PQclear(res);
	rc = fn(&t->base, ctx);
	if (!rc && t->write)
		rc = tf_journal_flush(&t->base);
	txn_end(t);
	if (rc || t->lost) {
		if (!t->lost)
			exec_simple(t->c->conn, "ROLLBACK");
		return rc ? rc : TF_ESTORE;
	}
	*sent = 1;
	res = PQexec(t->c->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = failed(t, res);
	else if (strcmp(PQcmdStatus(res), "COMMIT")) /* it was aborted: ROLLBACK */
		rc = TF_ESTORE;
	PQclear(res);
	return rc;
}

static int transact(pg_store *st, pg_link *c, int write, tf_txn_fn fn, void *ctx)
{
	int rc = TF_ESTORE, sent = 0, wait = PG_RETRY_MS;

	pthread_mutex_lock(&c->mu);
	for (int i = 0; i < PG_ATTEMPTS; i++) {
		pg_txn t = {.base.ops = &tf_pg_ops, .c = c, .write = write};

		rc = attempt(st, &t, fn, ctx, &sent);
		if (!t.lost && !t.retry)
			break;
		if (t.lost && sent) {
			/* The COMMIT went out and the answer did not come back. */
			tf_err("store: connection lost during a commit: its outcome is unknown");
			rc = TF_ESTORE;
			break;
		}
		tf_warn("store: %s; retrying the transaction",
		        t.lost ? "connection to PostgreSQL lost" : "serialization failure");
		if (t.lost && c->conn) {
			PQfinish(c->conn);
			c->conn = NULL;
		}
		pause_ms(wait);
		wait *= 2;
		rc = TF_ESTORE;
	}
	pthread_mutex_unlock(&c->mu);
	return rc;
}

static int pg_update(tf_store *bst, tf_txn_fn fn, void *ctx)
{
	pg_store *st = (pg_store *)bst;
	return transact(st, &st->w, 1, fn, ctx);
}

static int pg_view(tf_store *bst, tf_txn_fn fn, void *ctx)
{
	pg_store *st = (pg_store *)bst;
	return transact(st, &st->r, 0, fn, ctx);
}

/* ---- cursors --------------------------------------------------------------- */

static int pg_cursor_open(tf_txn *bt, tf_table tbl, tf_cursor **out)
{
	pg_cursor *c = calloc(1, sizeof *c);

	if (!c)
		return TF_ENOMEM;
	c->base.ops = &tf_pg_ops;
	c->t = (pg_txn *)bt;
	c->tbl = tbl;
	*out = &c->base;
	return TF_OK;
}

static void drop_batches(pg_cursor *c)
{
	PQclear(c->prev);
	PQclear(c->batch);
	c->prev = c->batch = NULL;
}

static int set_position(pg_cursor *c, const void *k, size_t kl)
{
	unsigned char *copy = malloc(kl ? kl : 1);

	if (!copy)
		return TF_ENOMEM;
	memcpy(copy, k, kl);
	free(c->key);
	c->key = copy, c->klen = kl;
	return TF_OK;
}

/* Fetches up to n rows for op from the current position into a new batch. */
static int fetch(pg_cursor *c, enum tf_seek op, const void *key, size_t klen, int n)
{
	enum stmt s;
	PGresult *res;

	switch (op) {
	case TF_SEEK_FIRST: s = S_FIRST; break;
	case TF_SEEK_LAST: s = S_LAST; break;
	case TF_SEEK_GE: s = S_GE; break;
	case TF_SEEK_NEXT: s = c->key ? S_GT : S_FIRST, key = c->key, klen = c->klen; break;
	default: s = c->key ? S_LT : S_LAST, key = c->key, klen = c->klen; break;
	}
	res = run_stmt(c->t, s, c->tbl, key, klen, NULL, 0, n);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		int rc = failed(c->t, res);
		PQclear(res);
		return rc;
	}
	PQclear(c->prev);
	c->prev = c->batch;
	c->batch = res;
	c->row = 0;
	c->dir = (s == S_LAST || s == S_LT) ? -1 : 1;
	c->wgen = c->t->wgen[c->tbl];
	return TF_OK;
}

static int pg_cursor_get(tf_cursor *bc, enum tf_seek op, const void *key, size_t klen,
                         const void **k, size_t *kl, const void **v, size_t *vl)
{
	pg_cursor *c = (pg_cursor *)bc;
	int want = op == TF_SEEK_PREV ? -1 : 1, rc = TF_OK;
	/* Walking on in the batch's direction with no write since: no query. */
	int cached = (op == TF_SEEK_NEXT || op == TF_SEEK_PREV) && c->batch && c->key &&
	             c->dir == want && c->wgen == c->t->wgen[c->tbl] && c->row < PQntuples(c->batch);

	if (k)
		*k = NULL, *kl = 0;
	if (v)
		*v = NULL, *vl = 0;
	if (!cached) {
		int n = op == TF_SEEK_NEXT || op == TF_SEEK_PREV ? PG_CURSOR_BATCH : 1;
		/* A seek's first row is all most callers want; a walk after it
		 * fetches ahead. */
		if ((rc = fetch(c, op, key, klen, n)))
			return rc;
	}
	if (c->row >= PQntuples(c->batch)) {
		if (op == TF_SEEK_GE || op == TF_SEEK_FIRST || op == TF_SEEK_LAST) {
			free(c->key);
			c->key = NULL, c->klen = 0;
		}
		return TF_ENOTFOUND;
	}
	{
		const char *rk = PQgetvalue(c->batch, c->row, 0);
		size_t rkl = (size_t)PQgetlength(c->batch, c->row, 0);
		if ((rc = set_position(c, rk, rkl)))
			return rc;
		if (k)
			*k = rk, *kl = rkl;
		if (v)
			*v = PQgetvalue(c->batch, c->row, 1), *vl = (size_t)PQgetlength(c->batch, c->row, 1);
		c->row++;
	}
	return TF_OK;
}

static int pg_cursor_del(tf_cursor *bc)
{
	pg_cursor *c = (pg_cursor *)bc;
	int rc;

	if (!c->key)
		return TF_EINVAL;
	{
		/* Its own delete leaves the rows ahead of the cursor as they are:
		 * a rollback walking and deleting keeps its batch. */
		int fresh = c->wgen == c->t->wgen[c->tbl];
		rc = write_stmt(c->t, S_DEL, c->tbl, c->key, c->klen, NULL, 0);
		if (fresh)
			c->wgen = c->t->wgen[c->tbl];
	}
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

static void pg_cursor_close(tf_cursor *bc)
{
	pg_cursor *c = (pg_cursor *)bc;

	drop_batches(c);
	free(c->key);
	free(c);
}

/* ---- rollback in one statement ----------------------------------------------- */

/* Every undo entry of the run is deleted; restoring, each journaled key gets
 * the prior value of its *oldest* entry in the run (or is deleted when that
 * entry says it was absent) — what replaying the entries newest first ends
 * with. The key length is journal.c's little-endian 4 bytes at offset 2. */
static const char undo_sql[] =
	"WITH u AS (DELETE FROM tf_kv WHERE tbl = $1 AND k >= $2 AND k < $3 RETURNING k, v), "
	"x AS (SELECT k, v, get_byte(v, 2) + (get_byte(v, 3) << 8) + (get_byte(v, 4) << 16) + "
	"      (get_byte(v, 5) << 24) AS kl FROM u), "
	"e AS (SELECT DISTINCT ON (t, key) t, had, key, prior FROM "
	"      (SELECT k, get_byte(v, 0)::smallint AS t, get_byte(v, 1) AS had, "
	"              substr(v, 7, kl) AS key, substr(v, 7 + kl) AS prior FROM x) y "
	"      ORDER BY t, key, k), "
	"d AS (DELETE FROM tf_kv USING e WHERE $4 AND e.had = 0 AND tf_kv.tbl = e.t "
	"      AND tf_kv.k = e.key RETURNING 1), "
	"i AS (INSERT INTO tf_kv (tbl, k, v) SELECT t, key, prior FROM e WHERE $4 AND had = 1 "
	"      ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v RETURNING 1) "
	"SELECT (SELECT count(*) FROM x WHERE get_byte(v, 0) = $5), "
	"       (SELECT count(*) FROM d), (SELECT count(*) FROM i)";

struct undo_req {
	const char *task_id;
	int restore;
	uint64_t records;
};

static int undo_txn(tf_txn *bt, void *ctx)
{
	pg_txn *t = (pg_txn *)bt;
	struct undo_req *u = ctx;
	unsigned char lo[TF_UUID_LEN], hi[TF_UNDO_KEY_LEN + 1];
	char tbl[8], rec[8];
	const char *values[5] = {tbl, (const char *)lo, (const char *)hi,
	                         u->restore ? "true" : "false", rec};
	int lengths[5] = {0, TF_UUID_LEN, sizeof hi, 0, 0}, formats[5] = {0, 1, 1, 0, 0};
	PGresult *res;
	int rc = TF_OK;

	snprintf(tbl, sizeof tbl, "%d", (int)TF_TBL_UNDO);
	snprintf(rec, sizeof rec, "%d", (int)TF_TBL_RECORDS);
	memcpy(lo, u->task_id, TF_UUID_LEN);
	memcpy(hi, u->task_id, TF_UUID_LEN);
	memset(hi + TF_UUID_LEN, 0xff, sizeof hi - TF_UUID_LEN);
	res = PQexecParams(t->c->conn, undo_sql, 5, NULL, values, lengths, formats, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rc = failed(t, res);
	else
		u->records = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	for (int i = 0; i < TF_TBL__COUNT; i++)
		t->wgen[i]++;
	return rc;
}

static int pg_undo_all(tf_store *bst, const char *task_id, int restore, uint64_t *records)
{
	pg_store *st = (pg_store *)bst;
	struct undo_req u = {task_id, restore, 0};
	int rc = transact(st, &st->w, 1, undo_txn, &u);

	if (!rc && records)
		*records = restore ? u.records : 0;
	return rc;
}

/* ---- durability ------------------------------------------------------------ */

static int pg_set_lazy(tf_store *bst, int lazy)
{
	pg_store *st = (pg_store *)bst;
	int rc = TF_OK;

	pthread_mutex_lock(&st->w.mu);
	st->w.lazy = lazy;
	if (st->w.conn && PQstatus(st->w.conn) == CONNECTION_OK)
		rc = exec_simple(st->w.conn, lazy ? "SET synchronous_commit = off"
		                                  : "SET synchronous_commit = on");
	pthread_mutex_unlock(&st->w.mu);
	return rc;
}

/* A synchronous commit waits for the WAL up to its own record, which comes
 * after every lazy commit before it: an xid makes the commit write one. */
static int pg_sync(tf_store *bst)
{
	pg_store *st = (pg_store *)bst;
	int rc = TF_OK;

	pthread_mutex_lock(&st->w.mu);
	if (st->w.conn && PQstatus(st->w.conn) == CONNECTION_OK)
		rc = exec_simple(st->w.conn, "BEGIN; SET LOCAL synchronous_commit = on; "
		                             "SELECT txid_current(); COMMIT");
	pthread_mutex_unlock(&st->w.mu);
	return rc;
}

static size_t pg_map_size(tf_store *st)
{
	(void)st;
	return 0;
}

/* ---- signals (store.h): single statements, never the advisory lock ----------- */

static const char sig_write_sql[] =
	"INSERT INTO tf_kv (tbl, k, v) VALUES (" STR(PG_SIGNAL_TBL) ", $1, $2) "
	"ON CONFLICT (tbl, k) DO UPDATE SET v = CASE "
	"WHEN NOT $3::boolean THEN EXCLUDED.v "
	"WHEN get_byte(EXCLUDED.v, 0) > get_byte(tf_kv.v, 0) "
	"THEN overlay(tf_kv.v placing substring(EXCLUDED.v from 1 for 1) from 1 for 1) "
	"ELSE tf_kv.v END RETURNING v";
static const char sig_del_sql[] =
	"DELETE FROM tf_kv WHERE tbl = " STR(PG_SIGNAL_TBL) " AND k = $1";

/* One autocommit statement on the writer's connection (outside any
 * transaction: the caller holds none on it), committed synchronously even
 * when the connection is lazy; once more on a fresh connection. */
static int sig_exec(pg_store *st, const char *sql, int n, const char *const *vals,
                    const int *lens, const int *fmts, PGresult **out)
{
	int rc = TF_ESTORE;

	*out = NULL;
	pthread_mutex_lock(&st->w.mu);
	for (int i = 0; i < 2 && rc; i++) {
		PGresult *res;
		ExecStatusType es;
		if ((rc = conn_ready(st, &st->w, NULL, 0)))
			continue;
		if (st->w.lazy)
			exec_simple(st->w.conn, "SET synchronous_commit = on");
		res = PQexecParams(st->w.conn, sql, n, NULL, vals, lens, fmts, 1);
		es = PQresultStatus(res);
		if (st->w.lazy)
			exec_simple(st->w.conn, "SET synchronous_commit = off");
		if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
			*out = res;
			rc = TF_OK;
			break;
		}
		tf_warn("store: signal write: %s", msg(st->w.conn));
		PQclear(res);
		if (PQstatus(st->w.conn) != CONNECTION_OK) {
			PQfinish(st->w.conn);
			st->w.conn = NULL;
		} else {
			break; /* the statement failed, not the connection */
		}
	}
	pthread_mutex_unlock(&st->w.mu);
	return rc;
}

static int pg_sig_write(tf_store *bst, const void *key, size_t klen, const void *val,
                        size_t vlen, int raise, void *out, size_t cap, size_t *outlen)
{
	const char *vals[3] = {key, val, raise ? "t" : "f"};
	int lens[3] = {(int)klen, (int)vlen, 0}, fmts[3] = {1, 1, 0};
	PGresult *res;
	int rc = sig_exec((pg_store *)bst, sig_write_sql, 3, vals, lens, fmts, &res);

	if (rc)
		return rc;
	if (PQntuples(res) != 1) {
		PQclear(res);
		return TF_ESTORE;
	}
	*outlen = (size_t)PQgetlength(res, 0, 0);
	if (out)
		memcpy(out, PQgetvalue(res, 0, 0), *outlen < cap ? *outlen : cap);
	PQclear(res);
	return TF_OK;
}

static int pg_sig_del(tf_store *bst, const void *key, size_t klen)
{
	const char *vals[1] = {key};
	int lens[1] = {(int)klen}, fmts[1] = {1};
	PGresult *res;
	int rc = sig_exec((pg_store *)bst, sig_del_sql, 1, vals, lens, fmts, &res);

	if (!rc && !strcmp(PQcmdTuples(res), "0"))
		rc = TF_ENOTFOUND;
	PQclear(res);
	return rc;
}

/* Inside the caller's transaction, on its connection: a plain read takes
 * no lock a writer of the signals would wait for. */
static int pg_sig_get(tf_txn *bt, const void *key, size_t klen, void *out, size_t cap,
                      size_t *outlen)
{
	pg_txn *t = (pg_txn *)bt;
	PGresult *res = run_stmt(t, S_GET, (tf_table)PG_SIGNAL_TBL, key, klen, NULL, 0, 0);
	int rc = TF_OK;

	*outlen = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rc = failed(t, res);
	else if (PQntuples(res) == 0)
		rc = TF_ENOTFOUND;
	else {
		*outlen = (size_t)PQgetlength(res, 0, 0);
		memcpy(out, PQgetvalue(res, 0, 0), *outlen < cap ? *outlen : cap);
	}
	PQclear(res);
	return rc;
}

static int pg_sig_scan(tf_txn *bt, const void *prefix, size_t plen, size_t max, tf_signal_fn fn,
                       void *ctx)
{
	pg_txn *t = (pg_txn *)bt;
	PGresult *res = run_stmt(t, S_GE, (tf_table)PG_SIGNAL_TBL, prefix, plen, NULL, 0,
	                         max > 10000 ? 10000 : (int)max);
	int rc = TF_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rc = failed(t, res);
		PQclear(res);
		return rc;
	}
	for (int i = 0; i < PQntuples(res) && !rc; i++) {
		const char *k = PQgetvalue(res, i, 0);
		size_t kl = (size_t)PQgetlength(res, i, 0);
		if (kl < plen || memcmp(k, prefix, plen))
			break;
		rc = fn(k, kl, PQgetvalue(res, i, 1), (size_t)PQgetlength(res, i, 1), ctx);
	}
	PQclear(res);
	return rc;
}

/* ---- leases and notifications (store.h "runs on many hosts") ---------------- */

/* A lease is a shared session advisory lock keyed by the schema and the
 * name: shared, because a run's supervisor and worker each hold one, and
 * either alive keeps the run alive. The server drops it with the session. */
static const char lease_sql[] =
	"SELECT pg_advisory_lock_shared(hashtext(current_schema()), hashtext($1))";
static const char held_sql[] =
	"SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
	"AND objsubid = 2 AND database = (SELECT oid FROM pg_database "
	"WHERE datname = current_database()) AND classid = hashtext(current_schema())::oid "
	"AND objid = hashtext($1)::oid)";
static int exec_name(PGconn *conn, const char *sql, const char *name)
{
	const char *v[1] = {name};
	PGresult *res = PQexecParams(conn, sql, 1, NULL, v, NULL, NULL, 0);
	ExecStatusType s = PQresultStatus(res);
	PQclear(res);
	return s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK ? TF_OK : TF_ESTORE;
}

static int listen_on(pg_store *st, const char *name)
{
	char chan[PG_MAX_NAME + 32], sql[2 * sizeof chan + 16];
	char *id;
	int rc;

	snprintf(chan, sizeof chan, "tf_%s%s", name, st->chan_suffix);
	if (!(id = PQescapeIdentifier(st->s.conn, chan, strlen(chan))))
		return TF_ESTORE;
	snprintf(sql, sizeof sql, "LISTEN %s", id);
	PQfreemem(id);
	rc = exec_simple(st->s.conn, sql);
	return rc;
}

/* (Re)makes the session with every lease and channel it had. Called with
 * s.mu held. *remade = 1 when a new connection was made. */
static int session_ready(pg_store *st, int *remade)
{
	pg_link *c = &st->s;

	*remade = 0;
	if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
		return TF_OK;
	if (c->conn)
		PQfinish(c->conn);
	if (!(c->conn = connect_to(st->uri, NULL, 0)))
		return TF_ESTORE;
	*remade = 1;
	for (int i = 0; i < st->nleases; i++)
		if (exec_name(c->conn, lease_sql, st->leases[i]))
			goto fail;
	for (int i = 0; i < st->nchannels; i++)
		if (listen_on(st, st->channels[i]))
			goto fail;
	return TF_OK;
fail:
	tf_err("store: cannot set up the session: %s", msg(c->conn));
	PQfinish(c->conn);
	c->conn = NULL;
	return TF_ESTORE;
}

/* Adds name to list (no duplicates) when there is room. */
static int remember(char (*list)[PG_MAX_NAME], int *n, int max, const char *name)
{
	for (int i = 0; i < *n; i++)
		if (!strcmp(list[i], name))
			return TF_OK;
	if (*n >= max || strlen(name) >= PG_MAX_NAME)
		return TF_ELIMIT;
	snprintf(list[(*n)++], PG_MAX_NAME, "%s", name);
	return TF_OK;
}

static int pg_lease(tf_store *bst, const char *name)
{
	pg_store *st = (pg_store *)bst;
	int remade, rc;

	pthread_mutex_lock(&st->s.mu);
	if (!(rc = remember(st->leases, &st->nleases, TF_MAX_LEASES, name)) &&
	    !(rc = session_ready(st, &remade)) && !remade)
		rc = exec_name(st->s.conn, lease_sql, name); /* a new session took it already */
	pthread_mutex_unlock(&st->s.mu);
	return rc;
}

static int pg_lease_held(tf_txn *bt, const char *name, int *held)
{
	pg_txn *t = (pg_txn *)bt;
	const char *v[1] = {name};
	PGresult *res = PQexecParams(t->c->conn, held_sql, 1, NULL, v, NULL, NULL, 0);
	int rc = TF_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		rc = failed(t, res);
	else
		*held = PQgetvalue(res, 0, 0)[0] == 't';
	PQclear(res);
	return rc;
}

/* One statement in the caller's transaction: no map, only the table. */
static int pg_space(tf_txn *bt, uint64_t *used, uint64_t *map)
{
	pg_txn *t = (pg_txn *)bt;
	PGresult *res = PQexec(t->c->conn, "SELECT pg_total_relation_size('tf_kv')");
	int rc = TF_OK;

	*used = *map = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		rc = failed(t, res);
	else
		*used = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

/* On the writer's connection, outside any transaction: NOTIFY is delivered
 * at its commit, which is at once. */
static int pg_notify(tf_store *bst, const char *name)
{
	pg_store *st = (pg_store *)bst;
	char chan[PG_MAX_NAME + 32];
	int rc = TF_ESTORE;

	snprintf(chan, sizeof chan, "tf_%s%s", name, st->chan_suffix);
	pthread_mutex_lock(&st->w.mu);
	for (int i = 0; i < 2 && rc; i++) /* once more on a fresh connection */
		if (!(rc = conn_ready(st, &st->w, NULL, 0)) &&
		    (rc = exec_name(st->w.conn, "SELECT pg_notify($1, '')", chan)) &&
		    PQstatus(st->w.conn) != CONNECTION_OK) {
			PQfinish(st->w.conn);
			st->w.conn = NULL;
		}
	pthread_mutex_unlock(&st->w.mu);
	return rc;
}

static int pg_listen(tf_store *bst, const char *name, int *fd)
{
	pg_store *st = (pg_store *)bst;
	int remade, rc;

	pthread_mutex_lock(&st->s.mu);
	if (!(rc = remember(st->channels, &st->nchannels, TF_MAX_CHANNELS, name)) &&
	    !(rc = session_ready(st, &remade)) && !remade)
		rc = listen_on(st, name);
	*fd = rc ? -1 : PQsocket(st->s.conn);
	pthread_mutex_unlock(&st->s.mu);
	return rc;
}

static int pg_notifications(tf_store *bst, int *n, int *fd)
{
	pg_store *st = (pg_store *)bst;
	PGnotify *note;
	int remade = 0, rc = TF_OK;

	pthread_mutex_lock(&st->s.mu);
	if (!st->s.conn || !PQconsumeInput(st->s.conn) || PQstatus(st->s.conn) != CONNECTION_OK) {
		tf_warn("store: session to PostgreSQL lost; re-making it");
		if (st->s.conn)
			PQfinish(st->s.conn);
		st->s.conn = NULL;
		rc = session_ready(st, &remade);
		*n = 1;
	} else {
		while ((note = PQnotifies(st->s.conn))) {
			(*n)++;
			PQfreemem(note);
		}
	}
	if (fd)
		*fd = st->s.conn ? PQsocket(st->s.conn) : -1;
	pthread_mutex_unlock(&st->s.mu);
	return rc;
}

/* ---- batched reads and journaled writes ------------------------------------- */

/* A page of records is a few statements, not three round trips per record
 * (issue 13 §7): the keys, values and undo headers of a batch go to the
 * server as binary arrays, and one statement reads the prior rows, writes
 * the undo entries (journal.c's format, numbered on from the transaction's
 * sequence) and upserts or deletes the rows. Every sub-statement of a WITH
 * sees the snapshot from before the statement, so the priors read are the
 * values the writes replace; a key that repeats in a batch therefore starts
 * a new statement, whose snapshot sees the earlier write. */

/* Rows, and bytes of keys and values, in one statement's arrays: bounds the
 * memory the arrays take here and on the server (an array may not exceed
 * 1 GB). A page of records is one chunk. */
#define PG_BATCH_ROWS 4096
#define PG_BATCH_BYTES (32u << 20)
#define PG_OID_BYTEA 17
#define PG_OID_INT2 21

static const char batch_get_sql[] =
	"SELECT q.i, o.v FROM unnest($2::bytea[]) WITH ORDINALITY AS q(k, i) "
	"JOIN tf_kv o ON o.tbl = $1::int2 AND o.k = q.k";

/* $1..$5: table, key, value (NULL: delete), undo header — journal.c's
 * table(1) had_prior(1) klen(4 LE), where had_prior says 0: known absent,
 * 1: known present with prior $5, 2: unknown, read here — and prior. $6
 * the undo table, $7 the task id, $8 the sequence number before the first
 * entry. A delete of an absent key writes nothing and takes no number.
 * Known priors spare a lookup, and a key known absent is a plain insert:
 * writers hold the writer lock, so no other can insert it meanwhile. */
static const char batch_write_sql[] =
	"WITH n AS (SELECT * FROM unnest($1::int2[], $2::bytea[], $3::bytea[], $4::bytea[], "
	"                                $5::bytea[]) WITH ORDINALITY AS n(tbl, k, v, h, p, ord)), "
	"j0 AS (SELECT tbl, k, v, h, ord, p AS prior FROM n WHERE get_byte(h, 1) < 2 "
	"       UNION ALL "
	"       SELECT n.tbl, n.k, n.v, n.h, n.ord, o.v FROM n "
	"       LEFT JOIN tf_kv o ON o.tbl = n.tbl AND o.k = n.k WHERE get_byte(n.h, 1) = 2), "
	"j AS (SELECT tbl, k, v, set_byte(h, 1, (prior IS NOT NULL)::int) AS h, prior, "
	"             row_number() OVER (ORDER BY ord) AS seq "
	"      FROM j0 WHERE v IS NOT NULL OR prior IS NOT NULL), "
	"u AS (INSERT INTO tf_kv (tbl, k, v) "
	"      SELECT $6::int2, $7::bytea || int8send($8::int8 + seq), "
	"             h || k || coalesce(prior, ''::bytea) FROM j), "
	"c AS (INSERT INTO tf_kv (tbl, k, v) SELECT tbl, k, v FROM j "
	"      WHERE v IS NOT NULL AND prior IS NULL), "
	"r AS (INSERT INTO tf_kv (tbl, k, v) SELECT tbl, k, v FROM j "
	"      WHERE v IS NOT NULL AND prior IS NOT NULL "
	"      ON CONFLICT (tbl, k) DO UPDATE SET v = EXCLUDED.v), "
	"d AS (DELETE FROM tf_kv o USING j WHERE j.v IS NULL AND o.tbl = j.tbl AND o.k = j.k) "
	"SELECT count(*) FROM j";

/* Called with every (re)connection: most connections (the handler's
 * readers, a CLI command) never write a batch, and parsing these costs a
 * few milliseconds, so they are prepared on first use. */
static int prepare_batch(pg_link *c)
{
	c->batch_prepared = 0;
	return TF_OK;
}

static int batch_ready(pg_txn *t)
{
	static const struct {
		const char *name, *sql;
		int nparams;
	} st[] = {{"batch_get", batch_get_sql, 2}, {"batch_write", batch_write_sql, 8}};

	for (size_t i = 0; i < sizeof st / sizeof *st && !t->c->batch_prepared; i++) {
		PGresult *res = PQprepare(t->c->conn, st[i].name, st[i].sql, st[i].nparams, NULL);
		int rc = PQresultStatus(res) == PGRES_COMMAND_OK ? TF_OK : failed(t, res);
		PQclear(res);
		if (rc)
			return rc;
	}
	t->c->batch_prepared = 1;
	return TF_OK;
}

/* A one-dimensional array in PostgreSQL's binary format (array_recv):
 * ndim, has-nulls flag, element type, length, lower bound, then each
 * element as its length (-1: NULL) and bytes, all integers big-endian. */
typedef struct pg_arr {
	char *p;
	size_t len, cap;
	int oom;
} pg_arr;

static void arr_put(pg_arr *a, const void *d, size_t n)
{
	if (a->oom || !n)
		return;
	if (a->len + n > a->cap) {
		size_t cap = a->cap ? a->cap : 4096;
		char *p;
		while (cap < a->len + n)
			cap *= 2;
		if (!(p = realloc(a->p, cap))) {
			a->oom = 1;
			return;
		}
		a->p = p, a->cap = cap;
	}
	memcpy(a->p + a->len, d, n);
	a->len += n;
}

static void arr_be32(pg_arr *a, uint32_t v)
{
	unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};
	arr_put(a, b, 4);
}

static void arr_start(pg_arr *a, uint32_t oid, size_t n)
{
	a->len = 0;
	arr_be32(a, 1);
	arr_be32(a, 1);
	arr_be32(a, oid);
	arr_be32(a, (uint32_t)n);
	arr_be32(a, 1);
}

/* d NULL: a NULL element. */
static void arr_elem(pg_arr *a, const void *d, size_t n)
{
	arr_be32(a, d ? (uint32_t)n : 0xffffffffu);
	if (d)
		arr_put(a, d, n);
}

static void arrs_free(pg_arr *a, int n)
{
	for (int i = 0; i < n; i++)
		free(a[i].p);
}

/* Where the chunk that starts at i ends: at the row or byte bound, or at a
 * key written earlier in the chunk (prev[j]: 1 + the index of key j's
 * previous write in the batch, 0: none; NULL: no key repeats). */
static size_t chunk_end(const size_t *prev, const size_t *sizes, size_t i, size_t n)
{
	size_t end = i, bytes = 0;

	while (end < n && end - i < PG_BATCH_ROWS && (!prev || prev[end] <= i)) {
		if (end > i && bytes + sizes[end] > PG_BATCH_BYTES)
			break;
		bytes += sizes[end++];
	}
	return end;
}

struct occ {
	const tf_jw *w;
	size_t i;
};

static int occ_cmp(const void *va, const void *vb)
{
	const struct occ *a = va, *b = vb;
	size_t m = a->w->klen < b->w->klen ? a->w->klen : b->w->klen;
	int c = m ? memcmp(a->w->key, b->w->key, m) : 0;

	if (a->w->tbl != b->w->tbl)
		return a->w->tbl < b->w->tbl ? -1 : 1;
	if (c)
		return c;
	if (a->w->klen != b->w->klen)
		return a->w->klen < b->w->klen ? -1 : 1;
	return a->i < b->i ? -1 : a->i > b->i;
}

/* *prev for chunk_end (NULL when no key repeats). */
static int find_repeats(const tf_jw *w, size_t n, size_t **prev)
{
	struct occ *o;
	int any = 0;

	*prev = NULL;
	if (n < 2)
		return TF_OK;
	if (!(o = malloc(n * sizeof *o)) || !(*prev = calloc(n, sizeof **prev))) {
		free(o);
		return TF_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		o[i] = (struct occ){&w[i], i};
	qsort(o, n, sizeof *o, occ_cmp);
	for (size_t i = 1; i < n; i++) {
		struct occ a = o[i - 1], b = o[i];
		if (a.w->tbl == b.w->tbl && a.w->klen == b.w->klen &&
		    (!a.w->klen || !memcmp(a.w->key, b.w->key, a.w->klen)))
			(*prev)[b.i] = a.i + 1, any = 1;
	}
	free(o);
	if (!any) {
		free(*prev);
		*prev = NULL;
	}
	return TF_OK;
}

static int write_chunk(pg_txn *t, const char *task_id, uint64_t seq, const tf_jw *w, size_t n,
                       pg_arr *a, uint64_t *wrote)
{
	char undo[8], seqs[24];
	const char *values[8];
	int lengths[8], formats[8] = {1, 1, 1, 1, 1, 0, 1, 0};
	PGresult *res;
	int rc = TF_OK;

	arr_start(&a[0], PG_OID_INT2, n);
	for (int k = 1; k < 5; k++)
		arr_start(&a[k], PG_OID_BYTEA, n);
	for (size_t i = 0; i < n; i++) {
		uint32_t kl = (uint32_t)w[i].klen;
		unsigned char tbl[2] = {0, (unsigned char)w[i].tbl};
		unsigned char h[6] = {(unsigned char)w[i].tbl, w[i].known ? w[i].prior != NULL : 2,
		                      (unsigned char)kl, (unsigned char)(kl >> 8),
		                      (unsigned char)(kl >> 16), (unsigned char)(kl >> 24)};
		arr_elem(&a[0], tbl, 2);
		arr_elem(&a[1], w[i].key ? w[i].key : "", w[i].klen);
		arr_elem(&a[2], w[i].val, w[i].vlen);
		arr_elem(&a[3], h, 6);
		arr_elem(&a[4], w[i].known ? w[i].prior : NULL, w[i].plen);
	}
	for (int k = 0; k < 5; k++)
		if (a[k].oom)
			return TF_ENOMEM;
	snprintf(undo, sizeof undo, "%d", (int)TF_TBL_UNDO);
	snprintf(seqs, sizeof seqs, "%llu", (unsigned long long)seq);
	for (int k = 0; k < 5; k++)
		values[k] = a[k].p, lengths[k] = (int)a[k].len;
	values[5] = undo, lengths[5] = 0;
	values[6] = task_id, lengths[6] = TF_UUID_LEN;
	values[7] = seqs, lengths[7] = 0;
	res = PQexecPrepared(t->c->conn, "batch_write", 8, values, lengths, formats, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		rc = failed(t, res);
	else
		*wrote = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rc;
}

static int pg_write_j(tf_txn *bt, const char *task_id, uint64_t first_seq, const tf_jw *w,
                      size_t n, uint64_t *entries)
{
	pg_txn *t = (pg_txn *)bt;
	pg_arr a[5] = {{0}};
	size_t *prev = NULL, *sizes = NULL;
	int rc;

	*entries = 0;
	if (!t->write)
		return TF_EPERM;
	if ((rc = batch_ready(t)) || (rc = find_repeats(w, n, &prev)))
		return rc;
	if (!(sizes = malloc(n * sizeof *sizes))) {
		free(prev);
		return TF_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		sizes[i] = w[i].klen + (w[i].val ? w[i].vlen : 0) + (w[i].known ? w[i].plen : 0) + 40;
	for (size_t i = 0, end; i < n && !rc; i = end) {
		uint64_t wrote = 0;
		end = chunk_end(prev, sizes, i, n);
		rc = write_chunk(t, task_id, first_seq + *entries, w + i, end - i, a, &wrote);
		*entries += wrote;
	}
	arrs_free(a, 5);
	free(sizes);
	free(prev);
	/* After the statements: keys or values may point into kept results. */
	release_kept(t);
	for (size_t i = 0; i < n; i++)
		t->wgen[w[i].tbl]++;
	t->wgen[TF_TBL_UNDO]++;
	return rc;
}

static int get_chunk(pg_txn *t, tf_table tbl, size_t n, const void *const *keys,
                     const size_t *klens, const void **vals, size_t *vlens, pg_arr *a)
{
	char tbls[8];
	const char *values[2];
	int lengths[2], formats[2] = {0, 1};
	PGresult *res;

	arr_start(a, PG_OID_BYTEA, n);
	for (size_t i = 0; i < n; i++)
		arr_elem(a, keys[i] ? keys[i] : "", klens[i]);
	if (a->oom)
		return TF_ENOMEM;
	snprintf(tbls, sizeof tbls, "%d", (int)tbl);
	values[0] = tbls, lengths[0] = 0;
	values[1] = a->p, lengths[1] = (int)a->len;
	res = PQexecPrepared(t->c->conn, "batch_get", 2, values, lengths, formats, 1);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		int rc = failed(t, res);
		PQclear(res);
		return rc;
	}
	for (int r = 0; r < PQntuples(res); r++) {
		const unsigned char *v = (const unsigned char *)PQgetvalue(res, r, 0);
		uint64_t i = PQgetlength(res, r, 0) == 8 ? tf_get_be64(v) : 0;
		if (i < 1 || i > n) {
			PQclear(res);
			return TF_ESTORE;
		}
		vals[i - 1] = PQgetvalue(res, r, 1);
		vlens[i - 1] = (size_t)PQgetlength(res, r, 1);
	}
	keep(t, res);
	return TF_OK;
}

static int pg_get_many(tf_txn *bt, tf_table tbl, size_t n, const void *const *keys,
                       const size_t *klens, const void **vals, size_t *vlens)
{
	pg_txn *t = (pg_txn *)bt;
	pg_arr a = {0};
	int rc = TF_OK;

	for (size_t i = 0; i < n; i++)
		vals[i] = NULL, vlens[i] = 0;
	if (n && (rc = batch_ready(t)))
		return rc;
	for (size_t i = 0, end; i < n && !rc; i = end) {
		size_t bytes = 0;
		for (end = i; end < n && end - i < PG_BATCH_ROWS; bytes += klens[end++] + 4)
			if (end > i && bytes + klens[end] + 4 > PG_BATCH_BYTES)
				break;
		rc = get_chunk(t, tbl, end - i, keys + i, klens + i, vals + i, vlens + i, &a);
	}
	arrs_free(&a, 1);
	return rc;
}

const tf_store_ops tf_pg_ops = {
	.name = "postgresql", .open = pg_open, .close = pg_close_store, .update = pg_update,
	.view = pg_view, .get = pg_get, .put = pg_put, .del = pg_del,
	.cursor_open = pg_cursor_open, .cursor_get = pg_cursor_get, .cursor_del = pg_cursor_del,
	.cursor_close = pg_cursor_close, .undo_all = pg_undo_all, .set_lazy = pg_set_lazy, .sync = pg_sync,
	.map_size = pg_map_size, .migrate = pg_migrate, .lease = pg_lease,
	.lease_held = pg_lease_held, .notify = pg_notify, .listen = pg_listen,
	.notifications = pg_notifications,
	.space = pg_space,
	.get_many = pg_get_many, .write_j = pg_write_j,
	.signal_write = pg_sig_write, .signal_del = pg_sig_del, .signal_get = pg_sig_get,
	.signal_scan = pg_sig_scan,
};
