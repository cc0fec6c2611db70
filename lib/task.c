#include "task.h"
#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "metrics.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const status_names[TF_ST__COUNT] = {
	"queued", "running", "stopping", "cancelling",
	"completed", "failed", "stopped", "cancelled",
};

static const char *const stage_names[TF_SG__COUNT] = {
	"queued", "connecting", "discovering", "fetching", "processing",
	"storing", "rate_limited", "stopping", "rolling_back", "done",
};

/* docs/SPEC.md §2/§3 state machine. A cancel moves queued/running to stopping or
 * cancelling; stopping may rise to cancelling (stop_now → cancel_job). A
 * queued run cancelled before it starts ends without ever running. failed is
 * reachable from every active state (crash, worker lost). */
static const unsigned char legal[TF_ST__COUNT][TF_ST__COUNT] = {
	[TF_ST_QUEUED] = {[TF_ST_RUNNING] = 1, [TF_ST_STOPPING] = 1, [TF_ST_CANCELLING] = 1,
	                  [TF_ST_FAILED] = 1},
	[TF_ST_RUNNING] = {[TF_ST_STOPPING] = 1, [TF_ST_CANCELLING] = 1, [TF_ST_COMPLETED] = 1,
	                   [TF_ST_FAILED] = 1},
	[TF_ST_STOPPING] = {[TF_ST_CANCELLING] = 1, [TF_ST_STOPPED] = 1, [TF_ST_FAILED] = 1},
	[TF_ST_CANCELLING] = {[TF_ST_CANCELLED] = 1, [TF_ST_FAILED] = 1},
};

const char *tf_status_name(tf_status s)
{
	return s < TF_ST__COUNT ? status_names[s] : "unknown";
}

int tf_status_parse(const char *name, tf_status *out)
{
	for (int i = 0; name && i < TF_ST__COUNT; i++)
		if (!strcmp(name, status_names[i])) {
			*out = (tf_status)i;
			return TF_OK;
		}
	return TF_EINVAL;
}

int tf_status_terminal(tf_status s)
{
	return s >= TF_ST_COMPLETED && s < TF_ST__COUNT;
}

int tf_status_active(tf_status s)
{
	return s <= TF_ST_CANCELLING;
}

int tf_status_can(tf_status from, tf_status to)
{
	return from < TF_ST__COUNT && to < TF_ST__COUNT && legal[from][to];
}

const char *tf_stage_name(tf_stage s)
{
	return s < TF_SG__COUNT ? stage_names[s] : "unknown";
}

const char *tf_cancel_mode_name(tf_cancel_mode m)
{
	return m == TF_CANCEL_JOB ? "cancel_job" : m == TF_CANCEL_STOP_NOW ? "stop_now" : "none";
}

int tf_cancel_mode_parse(const char *name, tf_cancel_mode *out)
{
	if (name && !strcmp(name, "stop_now"))
		*out = TF_CANCEL_STOP_NOW;
	else if (name && !strcmp(name, "cancel_job"))
		*out = TF_CANCEL_JOB;
	else
		return TF_EINVAL;
	return TF_OK;
}

/* ---- the in-memory task ------------------------------------------------- */

struct tf_task {
	json_object *obj;
	char id[TF_UUID_LEN + 1];
	char feed_id[TF_MAX_FEED_ID + 1];
	tf_status status;
	/* The cancel mode the tables hold; a higher one shown comes from the
	 * signal store (merged by tf_task_load) and is counted when saved. */
	tf_cancel_mode stored_mode;
	tf_cancel_mode first_mode; /* of a merged request: the mode first asked for */
};

static void set_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

/* Copies src into dst (cap bytes with the NUL) as valid UTF-8: cut only at a
 * character boundary, invalid bytes replaced by '?'. The stored task is
 * parsed with UTF-8 validation, so a text cut mid-character (or upstream
 * bytes that are not UTF-8) would make it unreadable. */
static void copy_text(char *dst, size_t cap, const char *src)
{
	const unsigned char *p = (const unsigned char *)src;
	size_t n = 0;

	while (*p) {
		size_t len = 1;
		int ok = 1;
		if (*p >= 0x80) {
			uint32_t cp;
			if (*p >= 0xc2 && *p <= 0xdf)
				len = 2, cp = *p & 0x1f;
			else if (*p >= 0xe0 && *p <= 0xef)
				len = 3, cp = *p & 0x0f;
			else if (*p >= 0xf0 && *p <= 0xf4)
				len = 4, cp = *p & 0x07;
			else
				ok = 0, cp = 0;
			for (size_t i = 1; ok && i < len; i++) {
				if ((p[i] & 0xc0) != 0x80)
					ok = 0;
				else
					cp = (cp << 6) | (p[i] & 0x3f);
			}
			if (ok && ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
			           (len == 4 && (cp < 0x10000 || cp > 0x10ffff))))
				ok = 0;
			if (!ok)
				len = 1;
		}
		if (n + len >= cap)
			break;
		if (ok)
			memcpy(dst + n, p, len);
		else
			dst[n] = '?';
		n += len;
		p += len;
	}
	dst[n] = '\0';
}

static void set_now(json_object *o, const char *k)
{
	char ts[TF_TIME_LEN + 1];
	tf_time_format(tf_now_us(), ts, sizeof ts);
	set_str(o, k, ts);
}

static void set_i64(json_object *o, const char *k, int64_t v)
{
	json_object_object_add(o, k, json_object_new_int64(v));
}

/* A nullable integer: -1 stands for JSON null. */
static void set_opt(json_object *o, const char *k, int64_t v)
{
	json_object_object_add(o, k, v < 0 ? NULL : json_object_new_int64(v));
}

static json_object *new_task_obj(const char *id, const char *feed_id)
{
	json_object *o = json_object_new_object();
	tf_progress p = {.percent = -1, .pages_total = -1};

	if (!o)
		return NULL;
	set_str(o, "task_id", id);
	set_str(o, "feed_id", feed_id);
	set_str(o, "status", "queued");
	set_str(o, "stage", "queued");
	set_str(o, "message", "waiting to start");
	json_object_object_add(o, "progress", json_object_new_object());
	json_object_object_add(o, "cancel", NULL);
	set_i64(o, "rolled_back", 0);
	json_object_object_add(o, "error", NULL);
	json_object_object_add(o, "warnings", json_object_new_array());
	set_now(o, "created_at");
	json_object_object_add(o, "started_at", NULL);
	set_now(o, "updated_at");
	json_object_object_add(o, "finished_at", NULL);
	{
		tf_task tmp = {.obj = o};
		tf_task_set_progress(&tmp, &p);
	}
	return o;
}

static int wrap(json_object *obj, tf_task **out)
{
	tf_task *t;
	const char *id = tf_json_str(obj, "task_id"), *feed = tf_json_str(obj, "feed_id");
	const char *status = tf_json_str(obj, "status");

	if (!id || !feed || !status || strlen(id) != TF_UUID_LEN || strlen(feed) > TF_MAX_FEED_ID)
		return TF_ESTORE;
	if (!(t = calloc(1, sizeof *t)))
		return TF_ENOMEM;
	t->obj = obj;
	memcpy(t->id, id, TF_UUID_LEN + 1);
	snprintf(t->feed_id, sizeof t->feed_id, "%s", feed);
	if (tf_status_parse(status, &t->status)) {
		free(t);
		return TF_ESTORE;
	}
	*out = t;
	return TF_OK;
}

/* ---- cancel requests in the signal store (store.h "signals") --------------
 * A cancel is written there, never under the writer lock, so it is durable
 * and answered while a worker holds that lock (docs/SPEC.md §3). Every
 * load of an active task merges it in: the API, the supervisor and the
 * worker's checks see it at once, and the first write of the task (a
 * progress commit, the run's end) records it in the tables.
 * Key: 'c' task_id. Value: mode(1, raised in place by a later request)
 * first mode(1) requested_at(8, µs, big-endian) requested_by. */
#define SIG_KEY_LEN (1 + TF_UUID_LEN)
#define SIG_HEAD (1 + 1 + 8)

typedef struct cancel_sig {
	tf_cancel_mode mode, first;
	int64_t at_us;
	char by[TF_MAX_NAME + 1];
} cancel_sig;

static void sig_key(const char *task_id, unsigned char *k)
{
	k[0] = 'c';
	memcpy(k + 1, task_id, TF_UUID_LEN);
}

static size_t sig_encode(tf_cancel_mode mode, int64_t at_us, const char *by, unsigned char *v)
{
	size_t bl = strlen(by);
	uint64_t at = (uint64_t)at_us;

	if (bl > TF_MAX_NAME)
		bl = TF_MAX_NAME;
	v[0] = v[1] = (unsigned char)mode;
	for (int i = 9; i >= 2; i--, at >>= 8)
		v[i] = (unsigned char)at;
	memcpy(v + SIG_HEAD, by, bl);
	return SIG_HEAD + bl;
}

static int sig_decode(const unsigned char *v, size_t vl, cancel_sig *s)
{
	uint64_t at = 0;

	if (vl < SIG_HEAD || vl > SIG_HEAD + TF_MAX_NAME || v[0] < TF_CANCEL_STOP_NOW ||
	    v[0] > TF_CANCEL_JOB || v[1] < TF_CANCEL_STOP_NOW || v[1] > v[0])
		return TF_ESTORE;
	s->mode = (tf_cancel_mode)v[0];
	s->first = (tf_cancel_mode)v[1];
	for (int i = 2; i <= 9; i++)
		at = at << 8 | v[i];
	s->at_us = (int64_t)at;
	memcpy(s->by, v + SIG_HEAD, vl - SIG_HEAD);
	s->by[vl - SIG_HEAD] = '\0';
	return TF_OK;
}

/* TF_ENOTFOUND when no cancel of task_id waits in the signal store. */
static int sig_read(tf_txn *txn, const char *task_id, cancel_sig *s)
{
	unsigned char k[SIG_KEY_LEN], v[SIG_HEAD + TF_MAX_NAME];
	size_t vl;
	int rc;

	sig_key(task_id, k);
	if ((rc = tf_txn_signal_get(txn, k, sizeof k, v, sizeof v, &vl)))
		return rc;
	return sig_decode(v, vl, s);
}

static int request_cancel_at(tf_task *t, tf_cancel_mode mode, const char *by, int64_t at_us);

static int merge_signal(tf_txn *txn, tf_task *t)
{
	cancel_sig s;
	int rc;

	t->stored_mode = tf_task_cancel_mode(t);
	if (!tf_status_active(t->status))
		return TF_OK;
	if ((rc = sig_read(txn, t->id, &s)))
		return rc == TF_ENOTFOUND || rc == TF_ESTORE ? TF_OK : rc; /* a bad entry: ignored */
	t->first_mode = s.first;
	rc = request_cancel_at(t, s.mode, s.by, s.at_us);
	return rc == TF_ECONFLICT ? TF_OK : rc;
}

int tf_task_cancel_drop_signal(tf_store *st, const char *task_id)
{
	unsigned char k[SIG_KEY_LEN];
	int rc;

	sig_key(task_id, k);
	rc = tf_store_signal_del(st, k, sizeof k);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_task_load(tf_txn *txn, const char *task_id, tf_task **out)
{
	const void *v;
	size_t vl;
	json_object *obj;
	int rc = tf_txn_get(txn, TF_TBL_TASKS, task_id, strlen(task_id), &v, &vl);

	if (rc)
		return rc;
	if (tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &obj, NULL, 0))
		return TF_ESTORE;
	if ((rc = wrap(obj, out))) {
		json_object_put(obj);
		return rc;
	}
	if ((rc = merge_signal(txn, *out))) {
		tf_task_free(*out);
		*out = NULL;
	}
	return rc;
}

int tf_task_save(tf_txn *txn, tf_task *t)
{
	size_t len;
	const char *text;
	tf_cancel_mode mode = tf_task_cancel_mode(t);
	int rc;

	/* A request that raised the mode is counted (metrics.h) when the tables
	 * first record it — a stop_now raised to cancel_job before that, both —
	 * and a repeat is not. */
	if (mode > t->stored_mode && t->first_mode > t->stored_mode && t->first_mode < mode &&
	    (rc = tf_metrics_cancel_requested(txn, t->feed_id, t->first_mode)))
		return rc;
	if (mode > t->stored_mode && (rc = tf_metrics_cancel_requested(txn, t->feed_id, mode)))
		return rc;
	set_now(t->obj, "updated_at");
	text = tf_json_text(t->obj, &len);
	if ((rc = tf_txn_put(txn, TF_TBL_TASKS, t->id, TF_UUID_LEN, text, len)))
		return rc;
	t->stored_mode = mode;
	return TF_OK;
}

void tf_task_free(tf_task *t)
{
	if (!t)
		return;
	json_object_put(t->obj);
	free(t);
}

const char *tf_task_id(const tf_task *t) { return t->id; }
const char *tf_task_feed_id(const tf_task *t) { return t->feed_id; }
tf_status tf_task_status(const tf_task *t) { return t->status; }

tf_cancel_mode tf_task_cancel_mode(const tf_task *t)
{
	json_object *c;
	tf_cancel_mode m = TF_CANCEL_NONE;
	if (json_object_object_get_ex(t->obj, "cancel", &c) && c)
		tf_cancel_mode_parse(tf_json_str(c, "mode"), &m);
	return m;
}

int64_t tf_task_cancel_requested_us(const tf_task *t)
{
	json_object *c;
	int64_t us;
	if (json_object_object_get_ex(t->obj, "cancel", &c) && c &&
	    !tf_time_parse(tf_json_str(c, "requested_at"), &us))
		return us;
	return 0;
}

int tf_task_set_status(tf_task *t, tf_status s)
{
	if (!tf_status_can(t->status, s))
		return TF_ESTATE;
	t->status = s;
	set_str(t->obj, "status", tf_status_name(s));
	if (s == TF_ST_RUNNING)
		set_now(t->obj, "started_at");
	if (tf_status_terminal(s)) {
		set_now(t->obj, "finished_at");
		set_str(t->obj, "stage", tf_stage_name(TF_SG_DONE));
	}
	return TF_OK;
}

void tf_task_set_stage(tf_task *t, tf_stage stage, const char *message)
{
	set_str(t->obj, "stage", tf_stage_name(stage));
	if (message) {
		char buf[TF_MAX_MESSAGE_LEN + 1];
		copy_text(buf, sizeof buf, message);
		set_str(t->obj, "message", buf);
	}
}

static int64_t get_num(json_object *o, const char *k, int64_t dflt)
{
	int64_t v;
	return tf_json_get_int(o, k, &v) == TF_OK ? v : dflt;
}

void tf_task_get_progress(const tf_task *t, tf_progress *p)
{
	json_object *o = NULL;
	json_object_object_get_ex(t->obj, "progress", &o);
	p->percent = (int)get_num(o, "percent", -1);
	p->pages_done = get_num(o, "pages_done", 0);
	p->pages_total = get_num(o, "pages_total", -1);
	p->objects_processed = get_num(o, "objects_processed", 0);
	p->indicators_created = get_num(o, "indicators_created", 0);
	p->indicators_updated = get_num(o, "indicators_updated", 0);
	p->indicators_skipped = get_num(o, "indicators_skipped", 0);
	p->bytes_received = get_num(o, "bytes_received", 0);
}

void tf_task_set_progress(tf_task *t, const tf_progress *p)
{
	json_object *o = json_object_new_object();
	if (!o)
		return;
	set_opt(o, "percent", p->percent > 100 ? 100 : p->percent);
	set_i64(o, "pages_done", p->pages_done);
	set_opt(o, "pages_total", p->pages_total);
	set_i64(o, "objects_processed", p->objects_processed);
	set_i64(o, "indicators_created", p->indicators_created);
	set_i64(o, "indicators_updated", p->indicators_updated);
	set_i64(o, "indicators_skipped", p->indicators_skipped);
	set_i64(o, "bytes_received", p->bytes_received);
	json_object_object_add(t->obj, "progress", o);
}

/* tf_task_request_cancel with the request's own time: a request read from
 * the signal store shows when it was made, not when it was merged. */
static int request_cancel_at(tf_task *t, tf_cancel_mode mode, const char *by, int64_t at_us)
{
	tf_cancel_mode cur = tf_task_cancel_mode(t);
	json_object *c;
	tf_status next;

	if (tf_status_terminal(t->status))
		return TF_ECONFLICT;
	if (mode <= cur)
		return TF_OK; /* repeating, or asking to lower: harmless, nothing changes */
	next = mode == TF_CANCEL_JOB ? TF_ST_CANCELLING : TF_ST_STOPPING;
	if (tf_task_set_status(t, next))
		return TF_ECONFLICT;
	if (!json_object_object_get_ex(t->obj, "cancel", &c) || !c) {
		char who[TF_MAX_NAME + 1], ts[TF_TIME_LEN + 1];
		c = json_object_new_object();
		set_str(c, "mode", NULL);
		tf_time_format(at_us, ts, sizeof ts);
		set_str(c, "requested_at", ts);
		copy_text(who, sizeof who, by ? by : "anonymous");
		set_str(c, "requested_by", who);
		json_object_object_add(c, "acknowledged_at", NULL);
		json_object_object_add(c, "forced", json_object_new_boolean(0));
		json_object_object_add(t->obj, "cancel", c);
	}
	set_str(c, "mode", tf_cancel_mode_name(mode));
	tf_task_set_stage(t, mode == TF_CANCEL_JOB ? TF_SG_ROLLING_BACK : TF_SG_STOPPING,
	                  mode == TF_CANCEL_JOB ? "cancel requested: rolling back"
	                                        : "stop requested: keeping committed data");
	return TF_OK;
}

int tf_task_request_cancel(tf_task *t, tf_cancel_mode mode, const char *by)
{
	return request_cancel_at(t, mode, by, tf_now_us());
}

static json_object *cancel_obj(tf_task *t)
{
	json_object *c = NULL;
	json_object_object_get_ex(t->obj, "cancel", &c);
	return c;
}

void tf_task_ack_cancel(tf_task *t)
{
	json_object *c = cancel_obj(t), *ack = NULL;
	if (c && (!json_object_object_get_ex(c, "acknowledged_at", &ack) || !ack))
		set_now(c, "acknowledged_at");
}

void tf_task_set_forced(tf_task *t)
{
	json_object *c = cancel_obj(t);
	if (c)
		json_object_object_add(c, "forced", json_object_new_boolean(1));
}

void tf_task_set_rolled_back(tf_task *t, uint64_t n)
{
	set_i64(t->obj, "rolled_back", (int64_t)n);
}

void tf_task_set_error(tf_task *t, const char *msg)
{
	char buf[TF_MAX_ERROR_LEN + 1];
	if (!msg) {
		json_object_object_add(t->obj, "error", NULL);
		return;
	}
	copy_text(buf, sizeof buf, msg);
	set_str(t->obj, "error", buf);
}

void tf_task_add_warning(tf_task *t, const char *msg)
{
	json_object *w;
	char buf[TF_MAX_WARNING_LEN + 1];
	size_t n;

	if (!json_object_object_get_ex(t->obj, "warnings", &w) ||
	    !json_object_is_type(w, json_type_array)) {
		w = json_object_new_array();
		json_object_object_add(t->obj, "warnings", w);
	}
	n = json_object_array_length(w);
	if (n >= TF_MAX_WARNINGS)
		return;
	if (n == TF_MAX_WARNINGS - 1)
		snprintf(buf, sizeof buf, "… more warnings omitted");
	else
		copy_text(buf, sizeof buf, msg ? msg : "");
	json_object_array_add(w, json_object_new_string(buf));
}

const char *tf_task_json(tf_task *t, size_t *len)
{
	return tf_json_text(t->obj, len);
}

/* ---- store operations ---------------------------------------------------- */

struct create_ctx {
	const char *feed_id;
	char *task_id, *active_id;
	int64_t due_at_us; /* 0: always; else only when the feed is due then */
};

/* Is the feed's schedule due at c->due_at_us? Runs inside the create txn. */
static int due(tf_txn *txn, struct create_ctx *c, const void *feed, size_t feedlen)
{
	json_object *f = NULL, *run = NULL;
	const void *v;
	size_t vl;
	int64_t interval = 0, last = 0;
	int enabled = 1, rc = TF_ECONFLICT;

	if (tf_json_parse(feed, feedlen, TF_MAX_FEED_JSON_DEPTH, &f, NULL, 0))
		return TF_ESTORE;
	tf_json_get_bool(f, "enabled", &enabled);
	tf_json_get_int(f, "interval_s", &interval);
	if (enabled && interval > 0) {
		if (!tf_txn_get(txn, TF_TBL_FEEDRUN, c->feed_id, strlen(c->feed_id), &v, &vl))
			tf_json_parse(v, vl, 4, &run, NULL, 0);
		if (!tf_json_str(run, "last_run_at") || tf_time_parse(tf_json_str(run, "last_run_at"), &last) ||
		    last + interval * 1000000 <= c->due_at_us)
			rc = TF_OK;
	}
	json_object_put(run);
	json_object_put(f);
	return rc;
}

static int create_txn(tf_txn *txn, void *vctx)
{
	struct create_ctx *c = vctx;
	const void *v;
	size_t vl, len;
	unsigned char seqkey[8];
	uint64_t seq;
	json_object *obj;
	const char *text;
	int rc;

	if ((rc = tf_txn_get(txn, TF_TBL_FEEDS, c->feed_id, strlen(c->feed_id), &v, &vl)))
		return rc;
	if (c->due_at_us && (rc = due(txn, c, v, vl)))
		return rc;
	rc = tf_txn_get(txn, TF_TBL_ACTIVE, c->feed_id, strlen(c->feed_id), &v, &vl);
	if (rc == TF_OK) {
		snprintf(c->active_id, TF_UUID_LEN + 1, "%.*s", (int)vl, (const char *)v);
		return TF_ECONFLICT;
	}
	if (rc != TF_ENOTFOUND)
		return rc;
	if ((rc = tf_uuid_v4(c->task_id, TF_UUID_LEN + 1)))
		return rc;
	if (!(obj = new_task_obj(c->task_id, c->feed_id)))
		return TF_ENOMEM;
	text = tf_json_text(obj, &len);
	if (!(rc = tf_txn_put(txn, TF_TBL_TASKS, c->task_id, TF_UUID_LEN, text, len)) &&
	    !(rc = tf_txn_seq_next(txn, "task", &seq))) {
		tf_put_be64(seqkey, seq);
		if (!(rc = tf_txn_put(txn, TF_TBL_TORDER, seqkey, 8, c->task_id, TF_UUID_LEN)) &&
		    !(rc = tf_txn_put(txn, TF_TBL_QUEUE, seqkey, 8, c->task_id, TF_UUID_LEN)))
			rc = tf_txn_put(txn, TF_TBL_ACTIVE, c->feed_id, strlen(c->feed_id), c->task_id,
			                TF_UUID_LEN);
	}
	json_object_put(obj);
	return rc ? rc : tf_task_number_queue(txn);
}

int tf_task_number_queue(tf_txn *txn)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl, waiting = 0, place = 0;
	int rc = tf_cursor_open(txn, TF_TBL_QUEUE, &cur);

	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl))
		waiting++;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		char id[TF_UUID_LEN + 1], msg[96];
		const char *now;
		tf_task *t;
		if (vl != TF_UUID_LEN)
			continue;
		memcpy(id, v, TF_UUID_LEN);
		id[TF_UUID_LEN] = '\0';
		if (tf_task_load(txn, id, &t))
			continue;
		place++;
		snprintf(msg, sizeof msg, "queued: %zu of %zu waiting for a run slot", place, waiting);
		now = tf_json_str(t->obj, "message");
		if (t->status == TF_ST_QUEUED && (!now || strcmp(now, msg))) {
			tf_task_set_stage(t, TF_SG_QUEUED, msg);
			rc = tf_task_save(txn, t);
		}
		tf_task_free(t);
		if (rc)
			break;
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_task_create(tf_store *st, const char *feed_id, char *task_id, char *active_id)
{
	struct create_ctx c = {feed_id, task_id, active_id, 0};
	return tf_store_update(st, create_txn, &c);
}

int tf_task_create_if_due(tf_store *st, const char *feed_id, int64_t now_us, char *task_id)
{
	char active[TF_UUID_LEN + 1];
	struct create_ctx c = {feed_id, task_id, active, now_us > 0 ? now_us : 1};
	return tf_store_update(st, create_txn, &c);
}

/* The top-level "status" of a stored task's text, without parsing it: a
 * status poll of a finished task is most of the API's traffic (dashboards),
 * and its stored text is its answer. One pass skipping strings and nested
 * values; the last "status" key wins, as in json-c. TF_EINVAL for anything
 * unexpected (the caller then takes the parsing path, which judges it). */
static int peek_status(const char *s, size_t n, tf_status *out)
{
	static const char key[] = "status";
	char name[32];
	int depth = 0, want_key = 0, is_key = 0, is_value = 0, found = 0;
	size_t i = 0;

	while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
		i++;
	if (i == n || s[i] != '{')
		return TF_EINVAL;
	for (; i < n; i++) {
		char c = s[i];
		if (c == '"') {
			size_t start = ++i;
			int esc = 0;
			for (; i < n && s[i] != '"'; i++)
				if (s[i] == '\\')
					esc = 1, i++;
			if (i >= n)
				return TF_EINVAL;
			if (depth == 1 && want_key) {
				is_key = !esc && i - start == sizeof key - 1 && !memcmp(s + start, key, i - start);
				want_key = 0;
			} else if (depth == 1 && is_value) {
				found = !esc && i - start < sizeof name;
				if (found) {
					memcpy(name, s + start, i - start);
					name[i - start] = '\0';
				}
				is_value = 0;
			}
			continue;
		}
		if (c == ' ' || c == '\n' || c == '\t' || c == '\r')
			continue;
		if (is_value) /* a status that is not a string: the parser's to judge */
			found = is_value = 0;
		if (c == '{' || c == '[') {
			want_key = ++depth == 1;
		} else if (c == '}' || c == ']') {
			if (--depth == 0)
				break;
		} else if (c == ',' && depth == 1) {
			want_key = 1;
		} else if (c == ':' && depth == 1) {
			is_value = is_key;
			is_key = 0;
		}
	}
	/* nothing but blanks may follow the object */
	for (i++; i < n; i++)
		if (s[i] != ' ' && s[i] != '\n' && s[i] != '\t' && s[i] != '\r')
			return TF_EINVAL;
	if (!found || depth != 0)
		return TF_EINVAL;
	return tf_status_parse(name, out) ? TF_EINVAL : TF_OK;
}

struct read_ctx {
	const char *task_id;
	char *json;
	size_t len;
	int finished;
};

/* The stored text as is, unless a cancel waits in the signal store (one
 * lookup there): then the task with it merged (tf_task_load). A finished
 * task's text is final (merge_signal leaves it alone), so its signal store
 * is not read at all. */
static int read_txn(tf_txn *txn, void *vctx)
{
	struct read_ctx *c = vctx;
	const void *v;
	size_t vl;
	cancel_sig sig;
	tf_task *t;
	tf_status status;
	const char *text;
	int rc = tf_txn_get(txn, TF_TBL_TASKS, c->task_id, strlen(c->task_id), &v, &vl);

	if (rc)
		return rc;
	c->finished = peek_status(v, vl, &status) == TF_OK && tf_status_terminal(status);
	if (!c->finished && strlen(c->task_id) == TF_UUID_LEN &&
	    sig_read(txn, c->task_id, &sig) == TF_OK) {
		if ((rc = tf_task_load(txn, c->task_id, &t)))
			return rc;
		text = tf_task_json(t, &vl);
		c->json = tf_strndup(text, vl);
		tf_task_free(t);
	} else {
		c->json = tf_strndup(v, vl);
	}
	if (!c->json)
		return TF_ENOMEM;
	c->len = vl;
	return TF_OK;
}

int tf_task_read_peek(tf_store *st, const char *task_id, char **json, size_t *len, int *finished)
{
	struct read_ctx c = {task_id, NULL, 0, 0};
	int rc = tf_store_view(st, read_txn, &c);
	*json = c.json;
	if (len)
		*len = c.len;
	if (finished)
		*finished = !rc && c.finished;
	return rc;
}

int tf_task_read(tf_store *st, const char *task_id, char **json, size_t *len)
{
	return tf_task_read_peek(st, task_id, json, len, NULL);
}

/* A cancel never takes the writer lock (docs/SPEC.md §3; store.h
 * "signals"): the task is read in a snapshot, the request written to the
 * signal store in its own durable commit, and the task read again with the
 * request merged in. The run's processes see it at their next read of the
 * task; the tables record it with the task's next write. */
struct cancel_ctx {
	const char *task_id, *feed_id;
	tf_status status;
	tf_cancel_mode mode; /* the task's, with any waiting request merged */
	char id[TF_UUID_LEN + 1];
};

static int cancel_peek_txn(tf_txn *txn, void *vctx)
{
	struct cancel_ctx *c = vctx;
	tf_task *t;
	int rc = tf_task_load(txn, c->task_id, &t);

	if (rc)
		return rc;
	c->status = t->status;
	c->mode = tf_task_cancel_mode(t);
	tf_task_free(t);
	return TF_OK;
}

int tf_task_cancel(tf_store *st, const char *task_id, tf_cancel_mode mode, const char *by,
                   char **json, size_t *len)
{
	struct cancel_ctx c = {.task_id = task_id};
	unsigned char k[SIG_KEY_LEN], v[SIG_HEAD + TF_MAX_NAME];
	int rc;

	*json = NULL;
	if (len)
		*len = 0;
	if (mode != TF_CANCEL_STOP_NOW && mode != TF_CANCEL_JOB)
		return TF_EINVAL;
	if ((rc = tf_store_view(st, cancel_peek_txn, &c)))
		return rc;
	if (tf_status_terminal(c.status))
		return TF_ECONFLICT;
	if (mode > c.mode) { /* a repeat, or a lower mode, changes nothing */
		sig_key(task_id, k);
		if ((rc = tf_store_signal_write(st, k, sizeof k, v,
		                                sig_encode(mode, tf_now_us(), by ? by : "anonymous", v),
		                                1, NULL, 0, NULL)))
			return rc;
	}
	return tf_task_read(st, task_id, json, len);
}

static int active_txn(tf_txn *txn, void *vctx)
{
	struct cancel_ctx *c = vctx;
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_ACTIVE, c->feed_id, strlen(c->feed_id), &v, &vl);

	if (rc == TF_ENOTFOUND) {
		/* Unknown feed and idle feed answer differently (404 vs 409). */
		rc = tf_txn_get(txn, TF_TBL_FEEDS, c->feed_id, strlen(c->feed_id), &v, &vl);
		return rc ? rc : TF_ECONFLICT;
	}
	if (rc)
		return rc;
	if (vl != TF_UUID_LEN)
		return TF_ESTORE;
	memcpy(c->id, v, TF_UUID_LEN);
	c->id[TF_UUID_LEN] = '\0';
	return TF_OK;
}

/* The feed's active run is named in the tables from its creation on, so the
 * request goes to that task: no per-feed signal is needed (TF_TBL_SIGNALS
 * entries of older builds are still honoured by tf_task_cancel_requested). */
int tf_task_cancel_feed(tf_store *st, const char *feed_id, tf_cancel_mode mode, const char *by,
                        char *task_id, char **json, size_t *len)
{
	struct cancel_ctx c = {.feed_id = feed_id};
	int rc = tf_store_view(st, active_txn, &c);

	*json = NULL;
	if (rc)
		return rc;
	memcpy(task_id, c.id, TF_UUID_LEN + 1);
	return tf_task_cancel(st, c.id, mode, by, json, len);
}

/* TF_TBL_SIGNALS value (older builds' per-feed signal): task_id(36) mode(1)
 * expires_us(8, native). */
#define SIGNAL_LEN (TF_UUID_LEN + 1 + 8)

int tf_task_cancel_requested(tf_txn *txn, const char *task_id, const char *feed_id,
                             tf_cancel_mode *mode)
{
	tf_task *t;
	const void *v;
	size_t vl;
	int rc = tf_task_load(txn, task_id, &t);

	if (rc)
		return rc;
	*mode = tf_task_cancel_mode(t);
	/* A run whose task ended without it — judged lost by a reaper while its
	 * host was cut off from the store — must stop at once and commit
	 * nothing more: the strongest cancel says so, and its finish then finds
	 * the task ended and changes nothing. */
	if (tf_status_terminal(tf_task_status(t)))
		*mode = TF_CANCEL_JOB;
	tf_task_free(t);
	/* A signal counts only when it names this very run and has not expired. */
	if (feed_id && !tf_txn_get(txn, TF_TBL_SIGNALS, feed_id, strlen(feed_id), &v, &vl) &&
	    vl == SIGNAL_LEN && !memcmp(v, task_id, TF_UUID_LEN)) {
		int64_t expires;
		unsigned char m = ((const unsigned char *)v)[TF_UUID_LEN];
		memcpy(&expires, (const unsigned char *)v + TF_UUID_LEN + 1, 8);
		if (expires > tf_now_us() && m > *mode && m <= TF_CANCEL_JOB)
			*mode = (tf_cancel_mode)m;
	}
	return TF_OK;
}

/* ---- listing -------------------------------------------------------------- */

struct list_ctx {
	const tf_task_filter *f;
	json_object *arr;
	char needle[TF_MAX_FEED_ID + 16]; /* "feed_id":"<id>" as stored, "" for any feed */
};

/* Tasks are stored as tf_json_text writes them (plain, feed ids need no
 * escapes), so a task without this text is another feed's: skipped without
 * parsing it. A walk of 100,000 tasks for one feed's took 1.3 s of CPU
 * parsing them all (issue 14 §4); a match is still parsed and compared. */
static int other_feed(const struct list_ctx *c, const void *v, size_t vl)
{
	return c->needle[0] && !memmem(v, vl, c->needle, strlen(c->needle));
}

static int list_one(tf_txn *txn, struct list_ctx *c, const void *id, size_t idl)
{
	const void *v;
	size_t vl;
	json_object *obj;
	tf_status s;

	if (tf_txn_get(txn, TF_TBL_TASKS, id, idl, &v, &vl))
		return TF_OK; /* history entry whose task was cleared */
	if (other_feed(c, v, vl))
		return TF_OK;
	if (tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &obj, NULL, 0))
		return TF_ESTORE;
	/* An active task may have a cancel waiting in the signal store. */
	if (!tf_status_parse(tf_json_str(obj, "status"), &s) && tf_status_active(s) &&
	    idl == TF_UUID_LEN) {
		char id_s[TF_UUID_LEN + 1];
		cancel_sig sig;
		tf_task *t;
		memcpy(id_s, id, TF_UUID_LEN);
		id_s[TF_UUID_LEN] = '\0';
		if (sig_read(txn, id_s, &sig) == TF_OK && tf_task_load(txn, id_s, &t) == TF_OK) {
			json_object_put(obj);
			obj = json_object_get(t->obj);
			tf_task_free(t);
		}
	}
	if ((c->f->feed_id && strcmp(c->f->feed_id, tf_json_str(obj, "feed_id") ? tf_json_str(obj, "feed_id") : "")) ||
	    (c->f->active_only &&
	     (tf_status_parse(tf_json_str(obj, "status"), &s) || !tf_status_active(s)))) {
		json_object_put(obj);
		return TF_OK;
	}
	json_object_array_add(c->arr, obj);
	return TF_OK;
}

static int list_txn(tf_txn *txn, void *vctx)
{
	struct list_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_TORDER, &cur);

	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK && (int)json_object_array_length(c->arr) < c->f->limit) {
		if ((rc = list_one(txn, c, v, vl)))
			break;
		rc = tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

/* Newest first: created_at (RFC 3339 UTC with microseconds sorts as text),
 * then the id, for a stable order. */
static int newest_first(const void *a, const void *b)
{
	json_object *x = *(json_object *const *)a, *y = *(json_object *const *)b;
	const char *cx = tf_json_str(x, "created_at"), *cy = tf_json_str(y, "created_at");
	int d = strcmp(cy ? cy : "", cx ? cx : "");
	if (d)
		return d;
	cx = tf_json_str(x, "task_id");
	cy = tf_json_str(y, "task_id");
	return strcmp(cy ? cy : "", cx ? cx : "");
}

/* ?active=1 (what the dashboard polls): every active task holds its feed's
 * slot in TF_TBL_ACTIVE from its creation to its end (create_txn,
 * runctl.c release_feed), so the active tasks are read from there — at most
 * one per feed — instead of walking the whole history, which took seconds
 * with 100,000 finished tasks (issue 14 §4). */
static int list_active_txn(tf_txn *txn, void *vctx)
{
	struct list_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl, n;
	int rc;

	if (c->f->feed_id) {
		rc = tf_txn_get(txn, TF_TBL_ACTIVE, c->f->feed_id, strlen(c->f->feed_id), &v, &vl);
		return rc == TF_OK ? list_one(txn, c, v, vl) : rc == TF_ENOTFOUND ? TF_OK : rc;
	}
	if ((rc = tf_cursor_open(txn, TF_TBL_ACTIVE, &cur)))
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl))
		if ((rc = list_one(txn, c, v, vl)))
			break;
	tf_cursor_close(cur);
	if (rc != TF_ENOTFOUND)
		return rc;
	json_object_array_sort(c->arr, newest_first);
	n = json_object_array_length(c->arr);
	if (c->f->limit >= 0 && n > (size_t)c->f->limit)
		json_object_array_del_idx(c->arr, (size_t)c->f->limit, n - (size_t)c->f->limit);
	return TF_OK;
}

int tf_task_list(tf_store *st, const tf_task_filter *f, char **json, size_t *len)
{
	json_object *arr, *root = tf_json_list_root("tasks", &arr);
	struct list_ctx c = {f, arr, ""};
	int rc;

	*json = NULL;
	if (!root)
		return TF_ENOMEM;
	if (f->feed_id && strlen(f->feed_id) <= TF_MAX_FEED_ID)
		snprintf(c.needle, sizeof c.needle, "\"feed_id\":\"%s\"", f->feed_id);
	if (!(rc = tf_store_view(st, f->active_only ? list_active_txn : list_txn, &c)))
		rc = tf_json_dup_text(root, json, len);
	json_object_put(root);
	return rc;
}

struct gc_ctx {
	int64_t before_us;
	uint64_t n;
};

/* A finished task older than the cut-off: its history entry and the task go. */
static int delete_txn(tf_txn *txn, void *vctx)
{
	struct gc_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_TORDER, &cur);

	c->n = 0;
	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		tf_task *t = NULL;
		char id[TF_UUID_LEN + 1];
		int64_t finished = 0;

		snprintf(id, sizeof id, "%.*s", (int)vl, (const char *)v);
		rc = tf_task_load(txn, id, &t);
		if (rc == TF_OK) {
			/* docs/SPEC.md §2 finished_before: the time the run ended */
			const char *fa = tf_json_str(t->obj, "finished_at");
			if (fa)
				tf_time_parse(fa, &finished);
			if (tf_status_terminal(t->status) && (!c->before_us || finished < c->before_us)) {
				if (!(rc = tf_txn_del(txn, TF_TBL_TASKS, id, TF_UUID_LEN)) &&
				    !(rc = tf_cursor_del(cur)))
					c->n++;
			}
			tf_task_free(t);
		} else if (rc == TF_ENOTFOUND) {
			rc = tf_cursor_del(cur);
		}
		if (rc)
			break;
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_task_delete_finished(tf_store *st, int64_t before_us, uint64_t *deleted)
{
	struct gc_ctx c = {before_us, 0};
	int rc = tf_store_update(st, delete_txn, &c);
	*deleted = rc ? 0 : c.n;
	return rc;
}

struct history_ctx {
	int keep;
	uint64_t n;
	json_object *seen; /* feed_id → finished tasks seen so far, newest first */
};

static int history_txn(tf_txn *txn, void *vctx)
{
	struct history_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_TORDER, &cur);

	c->n = 0;
	json_object_put(c->seen);
	if (!(c->seen = json_object_new_object()))
		rc = TF_ENOMEM;
	if (rc) {
		tf_cursor_close(cur);
		return rc;
	}
	rc = tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		char id[TF_UUID_LEN + 1];
		tf_task *t;
		snprintf(id, sizeof id, "%.*s", (int)vl, (const char *)v);
		if (tf_task_load(txn, id, &t) == TF_OK) {
			if (tf_status_terminal(t->status)) {
				json_object *n = NULL;
				int64_t seen = 0;
				if (json_object_object_get_ex(c->seen, t->feed_id, &n))
					seen = json_object_get_int64(n);
				json_object_object_add(c->seen, t->feed_id, json_object_new_int64(seen + 1));
				if (seen >= c->keep) {
					if (!(rc = tf_txn_del(txn, TF_TBL_TASKS, id, TF_UUID_LEN)))
						rc = tf_cursor_del(cur);
					c->n++;
				}
			}
			tf_task_free(t);
			if (rc)
				break;
		}
		rc = tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_task_gc_history(tf_store *st, int keep_per_feed, uint64_t *deleted)
{
	struct history_ctx c = {keep_per_feed, 0, NULL};
	int rc = tf_store_update(st, history_txn, &c);
	json_object_put(c.seen);
	*deleted = rc ? 0 : c.n;
	return rc;
}

static int gc_signals_txn(tf_txn *txn, void *vctx)
{
	uint64_t *n = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int64_t now = tf_now_us(), expires;
	int rc = tf_cursor_open(txn, TF_TBL_SIGNALS, &cur);

	*n = 0;
	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		if (vl != SIGNAL_LEN ||
		    (memcpy(&expires, (const unsigned char *)v + TF_UUID_LEN + 1, 8), expires <= now)) {
			if ((rc = tf_cursor_del(cur)))
				break;
			(*n)++;
		}
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

/* Cancel requests left in the signal store by tasks that ended or went
 * (a request that raced the run's end; a crash between the end's commit
 * and the drop). */
struct stale_ctx {
	tf_txn *txn;
	char ids[64][TF_UUID_LEN + 1];
	size_t n;
};

static int stale_one(const void *k, size_t kl, const void *v, size_t vl, void *vctx)
{
	struct stale_ctx *c = vctx;
	const void *tv;
	size_t tl;
	json_object *obj = NULL;
	tf_status s = TF_ST_COMPLETED;
	char id[TF_UUID_LEN + 1];

	(void)v, (void)vl;
	if (kl != SIG_KEY_LEN || c->n == 64)
		return TF_OK;
	memcpy(id, (const char *)k + 1, TF_UUID_LEN);
	id[TF_UUID_LEN] = '\0';
	if (!tf_txn_get(c->txn, TF_TBL_TASKS, id, TF_UUID_LEN, &tv, &tl) &&
	    !tf_json_parse(tv, tl, TF_MAX_FEED_JSON_DEPTH, &obj, NULL, 0))
		tf_status_parse(tf_json_str(obj, "status"), &s);
	json_object_put(obj);
	if (!tf_status_active(s))
		memcpy(c->ids[c->n++], id, TF_UUID_LEN + 1);
	return TF_OK;
}

static int stale_txn(tf_txn *txn, void *vctx)
{
	struct stale_ctx *c = vctx;
	c->txn = txn;
	c->n = 0;
	return tf_txn_signal_scan(txn, "c", 1, 4096, stale_one, c);
}

int tf_task_gc_signals(tf_store *st, uint64_t *dropped)
{
	struct stale_ctx c;
	int rc = tf_store_update(st, gc_signals_txn, dropped);

	if (rc || (rc = tf_store_view(st, stale_txn, &c)))
		return rc;
	for (size_t i = 0; i < c.n && !rc; i++)
		if (!(rc = tf_task_cancel_drop_signal(st, c.ids[i])))
			(*dropped)++;
	return rc;
}
