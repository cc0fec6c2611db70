#include "audit.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "util.h"

static void add_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v ? json_object_new_string(v) : NULL);
}

static json_object *entry_json(const tf_audit_entry *e, uint64_t id)
{
	json_object *o = json_object_new_object();
	char when[40];

	if (!o)
		return NULL;
	tf_time_format(tf_now_us(), when, sizeof when);
	json_object_object_add(o, "id", json_object_new_int64((int64_t)id));
	add_str(o, "time", when);
	add_str(o, "via", e->via);
	add_str(o, "who", e->who);
	add_str(o, "role", e->role);
	add_str(o, "address", e->address);
	add_str(o, "action", e->action);
	add_str(o, "method", e->method);
	add_str(o, "feed_id", e->feed_id);
	add_str(o, "task_id", e->task_id);
	add_str(o, "mode", e->mode);
	json_object_object_add(o, "status", json_object_new_int(e->status));
	add_str(o, "outcome", e->outcome);
	return o;
}

int tf_audit_append_txn(tf_txn *txn, const tf_audit_entry *e)
{
	unsigned char key[8];
	json_object *o;
	const char *text;
	uint64_t seq;
	int rc;

	if ((rc = tf_txn_seq_next(txn, "audit", &seq)))
		return rc;
	if (!(o = entry_json(e, seq)))
		return TF_ENOMEM;
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	tf_put_be64(key, seq);
	rc = text ? tf_txn_put(txn, TF_TBL_AUDIT, key, 8, text, strlen(text)) : TF_ENOMEM;
	json_object_put(o);
	/* Bounded: the entry TF_AUDIT_KEEP back goes as this one comes (those
	 * before it went with their own successors). */
	if (!rc && seq > TF_AUDIT_KEEP) {
		tf_put_be64(key, seq - TF_AUDIT_KEEP);
		if ((rc = tf_txn_del(txn, TF_TBL_AUDIT, key, 8)) == TF_ENOTFOUND)
			rc = TF_OK;
	}
	return rc;
}

/* ---- entries deferred to the signal store -------------------------------------
 * A cancel is answered while a worker may hold the writer lock (docs/SPEC.md §3):
 * its entry waits in the signal store (store.h) under 'a' time(8 BE) pid(4 BE)
 * n(4 BE), stamped with its own time, and the next audited write (or the end
 * of a run) moves it into the trail, where it gets its id. A crash between
 * that move's commit and the removal from the signal store may list an
 * entry twice; none is lost. Two movers (a run's end, a listing) can both
 * see an entry before the first removes it, so each move leaves a marker
 * in TF_TBL_META (MOVED_PREFIX + the outbox key) that the second finds; a
 * later move drops markers whose entry has left the signal store. */
#define OUTBOX_KEY_LEN 17
#define MOVED_PREFIX "audit/moved/"
#define MOVED_KEY_LEN (sizeof MOVED_PREFIX - 1 + OUTBOX_KEY_LEN)

int tf_audit_defer(tf_store *st, const tf_audit_entry *e)
{
	static uint32_t n;
	unsigned char key[OUTBOX_KEY_LEN];
	json_object *o = entry_json(e, 0);
	const char *text;
	uint32_t pid = (uint32_t)getpid();
	int rc;

	if (!o)
		return TF_ENOMEM;
	json_object_object_del(o, "id");
	key[0] = 'a';
	tf_put_be64(key + 1, (uint64_t)tf_now_us());
	for (int i = 0; i < 4; i++) {
		key[9 + i] = (unsigned char)(pid >> (24 - 8 * i));
		key[13 + i] = (unsigned char)(n >> (24 - 8 * i));
	}
	n++;
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	rc = text ? tf_store_signal_write(st, key, sizeof key, text, strlen(text), 0, NULL, 0, NULL)
	          : TF_ENOMEM;
	json_object_put(o);
	return rc;
}

struct append_ctx {
	const tf_audit_entry *e;   /* NULL: only move the deferred ones */
	tf_txn *txn;
	unsigned char moved[TF_AUDIT_OUTBOX_BATCH][OUTBOX_KEY_LEN];
	size_t nmoved;
};

static int put_entry(tf_txn *txn, json_object *o)
{
	unsigned char key[8];
	const char *text;
	uint64_t seq;
	int rc;

	if ((rc = tf_txn_seq_next(txn, "audit", &seq)))
		return rc;
	json_object_object_add(o, "id", json_object_new_int64((int64_t)seq));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	tf_put_be64(key, seq);
	rc = text ? tf_txn_put(txn, TF_TBL_AUDIT, key, 8, text, strlen(text)) : TF_ENOMEM;
	if (!rc && seq > TF_AUDIT_KEEP) {
		tf_put_be64(key, seq - TF_AUDIT_KEEP);
		if ((rc = tf_txn_del(txn, TF_TBL_AUDIT, key, 8)) == TF_ENOTFOUND)
			rc = TF_OK;
	}
	return rc;
}

static void moved_key(unsigned char *mk, const void *outbox_key)
{
	memcpy(mk, MOVED_PREFIX, sizeof MOVED_PREFIX - 1);
	memcpy(mk + sizeof MOVED_PREFIX - 1, outbox_key, OUTBOX_KEY_LEN);
}

static int move_one(const void *k, size_t kl, const void *v, size_t vl, void *vctx)
{
	struct append_ctx *c = vctx;
	unsigned char mk[MOVED_KEY_LEN];
	const void *mv;
	size_t mvl;
	json_object *o = NULL;
	int rc;

	if (kl != OUTBOX_KEY_LEN || c->nmoved == TF_AUDIT_OUTBOX_BATCH)
		return TF_OK;
	memcpy(c->moved[c->nmoved++], k, kl);
	moved_key(mk, k);
	if ((rc = tf_txn_get(c->txn, TF_TBL_META, mk, sizeof mk, &mv, &mvl)) != TF_ENOTFOUND)
		return rc;     /* TF_OK: in the trail already, another mover's */
	if (tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &o, NULL, 0))
		return TF_OK;  /* unreadable: dropped with the rest */
	rc = put_entry(c->txn, o);
	json_object_put(o);
	return rc ? rc : tf_txn_put(c->txn, TF_TBL_META, mk, sizeof mk, "", 0);
}

/* Drops the markers of entries no longer in the signal store. */
static int drop_stale_markers(tf_txn *txn)
{
	const size_t pl = sizeof MOVED_PREFIX - 1;
	unsigned char stale[TF_AUDIT_OUTBOX_BATCH][MOVED_KEY_LEN], buf[1];
	size_t n = 0, kl, vl, outl;
	const void *k, *v;
	tf_cursor *cur;
	int rc;

	if ((rc = tf_cursor_open(txn, TF_TBL_META, &cur)))
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_GE, MOVED_PREFIX, pl, &k, &kl, &v, &vl);
	     rc == TF_OK && n < TF_AUDIT_OUTBOX_BATCH && kl >= pl && !memcmp(k, MOVED_PREFIX, pl);
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		if (kl == MOVED_KEY_LEN &&
		    tf_txn_signal_get(txn, (const char *)k + pl, OUTBOX_KEY_LEN, buf, sizeof buf,
		                      &outl) == TF_ENOTFOUND)
			memcpy(stale[n++], k, kl);
	}
	tf_cursor_close(cur);
	if (rc != TF_OK && rc != TF_ENOTFOUND)
		return rc;
	rc = TF_OK;
	for (size_t i = 0; !rc && i < n; i++)
		rc = tf_txn_del(txn, TF_TBL_META, stale[i], MOVED_KEY_LEN);
	return rc;
}

static int append_txn(tf_txn *txn, void *vctx)
{
	struct append_ctx *c = vctx;
	int rc;

	c->txn = txn;
	c->nmoved = 0;   /* a replay (map grown) moves them again */
	if ((rc = drop_stale_markers(txn)) ||
	    (rc = tf_txn_signal_scan(txn, "a", 1, TF_AUDIT_OUTBOX_BATCH, move_one, c)))
		return rc;
	return c->e ? tf_audit_append_txn(txn, c->e) : TF_OK;
}

static int append(tf_store *st, const tf_audit_entry *e)
{
	struct append_ctx c = {.e = e};
	int rc = tf_store_update(st, append_txn, &c);

	for (size_t i = 0; !rc && i < c.nmoved; i++)
		tf_store_signal_del(st, c.moved[i], OUTBOX_KEY_LEN);
	return rc;
}

int tf_audit_append(tf_store *st, const tf_audit_entry *e)
{
	return append(st, e);
}

int tf_audit_flush(tf_store *st)
{
	return append(st, NULL);
}

struct list_ctx {
	int limit;
	uint64_t before;   /* 0: from the newest */
	json_object *arr;
	uint64_t next;     /* id of the last entry listed when more remain */
};

static int list_txn(tf_txn *txn, void *vctx)
{
	struct list_ctx *c = vctx;
	unsigned char key[8];
	const void *k, *v;
	size_t kl, vl;
	tf_cursor *cur;
	int n = 0, rc = tf_cursor_open(txn, TF_TBL_AUDIT, &cur);

	if (rc)
		return rc;
	c->next = 0;
	if (c->before) {
		/* The first entry at or after the cursor, then one step back. */
		tf_put_be64(key, c->before);
		rc = tf_cursor_get(cur, TF_SEEK_GE, key, 8, &k, &kl, &v, &vl);
		rc = rc == TF_ENOTFOUND ? tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl)
		                        : tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
		/* SEEK_LAST may land on the cursor's own entry or above it. */
		while (!rc && kl == 8 && tf_get_be64(k) >= c->before)
			rc = tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	} else {
		rc = tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl);
	}
	while (!rc && n < c->limit) {
		char *text = tf_strndup(v, vl);
		json_object *o;

		if (!text) {
			rc = TF_ENOMEM;
			break;
		}
		o = json_tokener_parse(text);
		free(text);
		if (o)
			json_object_array_add(c->arr, o);
		n++;
		c->next = kl == 8 ? tf_get_be64(k) : 0;
		rc = tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	}
	if (rc == TF_ENOTFOUND)   /* walked off the oldest: no next page */
		c->next = 0;
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

static int pending_one(const void *k, size_t kl, const void *v, size_t vl, void *vctx)
{
	(void)k, (void)kl, (void)v, (void)vl;
	*(int *)vctx = 1;
	return TF_OK;
}

static int pending_txn(tf_txn *txn, void *vctx)
{
	return tf_txn_signal_scan(txn, "a", 1, 1, pending_one, vctx);
}

int tf_audit_list(tf_store *st, int limit, const char *cursor, char **json, size_t *len)
{
	json_object *arr, *root;
	struct list_ctx c = {.limit = limit};
	int64_t before = 0;
	int pending = 0;
	int rc;

	*json = NULL;
	if (cursor && tf_parse_i64(cursor, 1, INT64_MAX, &before))
		return TF_EINVAL;
	c.before = (uint64_t)before;
	if (!(root = tf_json_list_root("entries", &arr)))
		return TF_ENOMEM;
	c.arr = arr;
	/* A cancel's entry deferred after its run ended (nothing audited
	 * since to move it) joins the trail before it is listed. */
	if ((rc = tf_store_view(st, pending_txn, &pending)) || (pending && (rc = tf_audit_flush(st)))) {
		json_object_put(root);
		return rc;
	}
	if (!(rc = tf_store_view(st, list_txn, &c))) {
		char next[24];
		snprintf(next, sizeof next, "%llu", (unsigned long long)c.next);
		json_object_object_add(root, "next_cursor", c.next ? json_object_new_string(next) : NULL);
		rc = tf_json_dup_text(root, json, len);
	}
	json_object_put(root);
	return rc;
}
