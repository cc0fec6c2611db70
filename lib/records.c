#include "records.h"
#include "err.h"
#include "index.h"
#include "json.h"
#include "limits.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stored value: modified_us (8 bytes, native) then the record's JSON text.
 * The prefix lets "latest modified wins" be decided without parsing. */
#define VAL_HDR 8
/* Stored key: feed_id NUL source key. */
#define MAX_KEY (TF_MAX_FEED_ID + 1 + TF_MAX_RECORD_KEY)

struct entry {
	char *key, *type, *value, *observables, *object; /* one allocation, key first */
	char *packed;       /* the observables for the index (index.h), same allocation */
	size_t object_len, packed_len;
	int64_t modified_us;
	int64_t valid_until_us;
	int revoked;
};

struct tf_batch {
	struct entry *e;
	size_t n, cap, bytes;
	/* Scratch for tf_batch_apply, reused from record to record. */
	char *val, *prior;
	size_t val_cap, prior_cap;
	/* Scratch for tf_batch_add's packed observables, and the index writer. */
	char *pack;
	size_t pack_cap;
	tf_index_writer *ix;
};

int tf_batch_new(tf_batch **out)
{
	return (*out = calloc(1, sizeof **out)) ? TF_OK : TF_ENOMEM;
}

size_t tf_batch_count(const tf_batch *b)
{
	return b->n;
}

size_t tf_batch_bytes(const tf_batch *b)
{
	return b->bytes + b->cap * sizeof *b->e;
}

void tf_batch_clear(tf_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		free(b->e[i].key);
	b->n = 0;
	b->bytes = 0;
}

void tf_batch_free(tf_batch *b)
{
	if (!b)
		return;
	tf_batch_clear(b);
	free(b->e);
	free(b->val);
	free(b->prior);
	free(b->pack);
	tf_index_writer_free(b->ix);
	free(b);
}

static char *pack(char **p, const char *s, size_t n)
{
	char *start = *p;
	memcpy(start, s, n);
	start[n] = '\0';
	*p += n + 1;
	return start;
}

int tf_batch_add(tf_batch *b, const char *key, const char *type, const char *value,
                 json_object *observables, int64_t modified_us, const char *object, size_t len)
{
	size_t kl = strlen(key), tl = strlen(type), vl = value ? strlen(value) : 0, ol = 0, pl = 0;
	const char *obs = NULL;
	struct entry *e;
	char *p;

	if (len > TF_MAX_OBJECT_BYTES || kl == 0 || kl > TF_MAX_RECORD_KEY)
		return TF_ELIMIT;
	if (observables)
		obs = tf_json_text(observables, &ol);
	if (tf_index_pack(observables, &b->pack, &b->pack_cap, &pl))
		return TF_ENOMEM;
	if (b->n == b->cap) {
		size_t cap = b->cap ? b->cap * 2 : 256;
		struct entry *grown = realloc(b->e, cap * sizeof *grown);
		if (!grown)
			return TF_ENOMEM;
		b->e = grown;
		b->cap = cap;
	}
	if (!(p = malloc(kl + tl + vl + ol + len + pl + 5)))
		return TF_ENOMEM;
	b->bytes += kl + tl + vl + ol + len + pl + 5;
	e = &b->e[b->n++];
	e->key = pack(&p, key, kl);
	e->type = pack(&p, type, tl);
	e->value = value ? pack(&p, value, vl) : (pack(&p, "", 0), NULL);
	e->observables = obs ? pack(&p, obs, ol) : (pack(&p, "", 0), NULL);
	e->object = pack(&p, object, len);
	e->object_len = len;
	e->packed = pl ? memcpy(p, b->pack, pl) : NULL;
	e->packed_len = pl;
	e->valid_until_us = 0;
	e->revoked = 0;
	/* Export writes one record per line: a raw line break can only be
	 * insignificant whitespace in JSON text, so it becomes a space. */
	for (char *nl = e->object; (nl = memchr(nl, '\n', len - (size_t)(nl - e->object)));)
		*nl = ' ';
	for (char *cr = e->object; (cr = memchr(cr, '\r', len - (size_t)(cr - e->object)));)
		*cr = ' ';
	e->modified_us = modified_us;
	return TF_OK;
}

int tf_batch_set_life(tf_batch *b, int64_t valid_until_us, int revoked)
{
	if (!b->n)
		return TF_EINVAL;
	b->e[b->n - 1].valid_until_us = valid_until_us;
	b->e[b->n - 1].revoked = revoked != 0;
	return TF_OK;
}

static size_t record_key(char *buf, const char *feed_id, const char *key)
{
	size_t fl = strlen(feed_id), kl = strlen(key);
	memcpy(buf, feed_id, fl);
	buf[fl] = '\0';
	memcpy(buf + fl + 1, key, kl);
	return fl + 1 + kl;
}

static int reserve(char **buf, size_t *cap, size_t need)
{
	char *grown;

	if (need <= *cap)
		return TF_OK;
	if (!(grown = realloc(*buf, need)))
		return TF_ENOMEM;
	*buf = grown;
	*cap = need;
	return TF_OK;
}

static char *put_raw(char *p, const char *s, size_t n)
{
	memcpy(p, s, n);
	return p + n;
}

static char *put_field(char *p, const char *name, const char *v)
{
	p = put_raw(p, name, strlen(name));
	if (!v)
		return put_raw(p, "null", 4);
	return p + tf_json_quote(p, v);
}

/* The stored value: the version, then the record's JSON — our fields, then
 * the source object verbatim. Written directly (strings quoted by
 * tf_json_quote): a json_object per field cost more than the store write. */
static int compose(tf_batch *b, const struct entry *e, const char *feed_id, const char *task_id,
                   size_t *len)
{
	char ts[TF_TIME_LEN + 1];
	const char *obs = e->observables ? e->observables : "[]";
	size_t strs, need;
	char *p;

	if (e->modified_us)
		tf_time_format(e->modified_us, ts, sizeof ts);
	strs = strlen(e->key) + strlen(e->type) + (e->value ? strlen(e->value) : 0) +
	       strlen(feed_id) + strlen(task_id) + (e->modified_us ? strlen(ts) : 0);
	need = VAL_HDR + 96 + TF_JSON_QUOTED_MAX(strs) + 5 * 2 + strlen(obs) + e->object_len;
	if (reserve(&b->val, &b->val_cap, need))
		return TF_ENOMEM;
	p = put_raw(b->val, (const char *)&e->modified_us, VAL_HDR);
	p = put_field(p, "{\"id\":", e->key);
	p = put_field(p, ",\"type\":", e->type);
	p = put_field(p, ",\"value\":", e->value);
	p = put_raw(p, ",\"observables\":", 15);
	p = put_raw(p, obs, strlen(obs));
	p = put_field(p, ",\"feed_id\":", feed_id);
	p = put_field(p, ",\"task_id\":", task_id);
	p = put_field(p, ",\"modified\":", e->modified_us ? ts : NULL);
	p = put_raw(p, ",\"object\":", 10);
	p = put_raw(p, e->object, e->object_len);
	*p++ = '}';
	*len = (size_t)(p - b->val);
	return TF_OK;
}

static int count_get(tf_txn *txn, const char *feed_id, uint64_t *n)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_COUNTS, feed_id, strlen(feed_id), &v, &vl);
	*n = 0;
	if (rc == TF_OK && vl == sizeof *n)
		memcpy(n, v, sizeof *n);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_records_count(tf_txn *txn, const char *feed_id, uint64_t *n)
{
	return count_get(txn, feed_id, n);
}

static int apply_one(tf_txn *txn, const char *feed_id, const char *task_id, tf_batch *b,
                     const struct entry *e, tf_progress *p, int64_t *delta)
{
	char k[MAX_KEY + 1];
	size_t kl = record_key(k, feed_id, e->key), vl, oldl = 0;
	const void *old;
	int rc = tf_txn_get(txn, TF_TBL_RECORDS, k, kl, &old, &oldl), found;

	if (rc != TF_OK && rc != TF_ENOTFOUND)
		return rc;
	if (rc == TF_OK && oldl >= VAL_HDR) {
		int64_t old_mod;
		memcpy(&old_mod, old, VAL_HDR);
		if (old_mod >= e->modified_us) {
			p->indicators_skipped++;
			return TF_OK;
		}
	}
	found = rc == TF_OK;
	if (found) {
		/* The undo entry needs the old value after writes that may move it. */
		if (reserve(&b->prior, &b->prior_cap, oldl ? oldl : 1))
			return TF_ENOMEM;
		memcpy(b->prior, old, oldl);
		p->indicators_updated++;
	} else {
		p->indicators_created++, (*delta)++;
	}
	/* The index first: it reads the prior record from b->prior, which the
	 * record's own write below still needs. */
	if ((rc = tf_index_record(b->ix, e->key, found && oldl >= VAL_HDR ? b->prior + VAL_HDR : NULL,
	                          found && oldl >= VAL_HDR ? oldl - VAL_HDR : 0, e->packed,
	                          e->packed_len, e->valid_until_us, e->revoked)))
		return rc;
	if (compose(b, e, feed_id, task_id, &vl))
		return TF_ENOMEM;
	return tf_txn_replace_j(txn, task_id, TF_TBL_RECORDS, k, kl, found ? b->prior : NULL, oldl,
	                        b->val, vl);
}

int tf_batch_apply(tf_txn *txn, const char *feed_id, const char *task_id, tf_batch *b,
                   tf_progress *p)
{
	int64_t delta = 0;
	uint64_t count;
	int rc;

	if (!b->ix && (rc = tf_index_writer_new(&b->ix)))
		return rc;
	if ((rc = tf_index_begin(b->ix, txn, feed_id, task_id, tf_now_us())))
		return rc;
	for (size_t i = 0; i < b->n; i++)
		if ((rc = apply_one(txn, feed_id, task_id, b, &b->e[i], p, &delta)))
			return rc;
	if ((rc = tf_index_end(b->ix)))
		return rc;
	if (!delta)
		return TF_OK;
	if ((rc = count_get(txn, feed_id, &count)))
		return rc;
	count += (uint64_t)delta;
	return tf_txn_put_j(txn, task_id, TF_TBL_COUNTS, feed_id, strlen(feed_id), &count,
	                    sizeof count);
}

int tf_records_put_cursor(tf_txn *txn, const char *feed_id, const char *task_id,
                          json_object *cursor)
{
	size_t n;
	const char *text = tf_json_text(cursor, &n);
	return tf_txn_put_j(txn, task_id, TF_TBL_CURSORS, feed_id, strlen(feed_id), text, n);
}

/* ---- reading ------------------------------------------------------------- */

static int hex_decode(const char *s, char *out, size_t cap, size_t *n)
{
	size_t len = strlen(s);
	if (len % 2 || len / 2 > cap)
		return TF_EINVAL;
	for (size_t i = 0; i < len; i += 2) {
		unsigned v;
		if (sscanf(s + i, "%2x", &v) != 1 || !strchr("0123456789abcdef", s[i]) ||
		    !strchr("0123456789abcdef", s[i + 1]))
			return TF_EINVAL;
		out[i / 2] = (char)v;
	}
	*n = len / 2;
	return TF_OK;
}

struct page_ctx {
	const char *feed_id, *after;
	int limit;
	json_object *arr;
	char next[2 * MAX_KEY + 1];
};

static int page_txn(tf_txn *txn, void *vctx)
{
	struct page_ctx *c = vctx;
	char start[MAX_KEY + 2];
	size_t fl = strlen(c->feed_id), sl = record_key(start, c->feed_id, ""), kl, vl, al;
	tf_cursor *cur;
	const void *k, *v;
	int rc;

	if (c->after) {
		if (hex_decode(c->after, start + sl, MAX_KEY - sl, &al))
			return TF_EINVAL;
		sl += al;
		start[sl++] = '\0'; /* strictly after the cursor's key */
	}
	if ((rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur)))
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_GE, start, sl, &k, &kl, &v, &vl);
	c->next[0] = '\0';
	while (rc == TF_OK && kl > fl && !memcmp(k, c->feed_id, fl) && ((const char *)k)[fl] == '\0') {
		json_object *rec;
		if ((int)json_object_array_length(c->arr) == c->limit) {
			/* one more exists: the cursor names the last one returned */
			break;
		}
		if (vl < VAL_HDR ||
		    tf_json_parse((const char *)v + VAL_HDR, vl - VAL_HDR, TF_MAX_FEED_JSON_DEPTH + 8,
		                  &rec, NULL, 0)) {
			rc = TF_ESTORE;
			break;
		}
		json_object_array_add(c->arr, rec);
		{
			const unsigned char *src = (const unsigned char *)k + fl + 1;
			size_t n = kl - fl - 1;
			for (size_t i = 0; i < n; i++)
				snprintf(c->next + 2 * i, 3, "%02x", src[i]);
		}
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	/* no next page: clear the cursor unless the loop stopped at the limit */
	if (rc != TF_OK || kl <= fl || memcmp(k, c->feed_id, fl) || ((const char *)k)[fl] != '\0')
		c->next[0] = '\0';
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_records_page(tf_store *st, const char *feed_id, const char *cursor, int limit,
                    char **json, size_t *len)
{
	json_object *arr, *root = tf_json_list_root("indicators", &arr);
	struct page_ctx c = {.feed_id = feed_id, .after = cursor, .limit = limit, .arr = arr};
	int rc;

	*json = NULL;
	if (!root)
		return TF_ENOMEM;
	if (!(rc = tf_store_view(st, page_txn, &c))) {
		json_object_object_add(root, "next_cursor",
		                       c.next[0] ? json_object_new_string(c.next) : NULL);
		rc = tf_json_dup_text(root, json, len);
	}
	json_object_put(root);
	return rc;
}

struct export_ctx {
	const char *feed_id;
	FILE *out;
};

static int export_txn(tf_txn *txn, void *vctx)
{
	struct export_ctx *c = vctx;
	size_t fl = c->feed_id ? strlen(c->feed_id) : 0, kl, vl;
	tf_cursor *cur;
	const void *k, *v;
	int rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur);

	if (rc)
		return rc;
	rc = c->feed_id ? tf_cursor_get(cur, TF_SEEK_GE, c->feed_id, fl + 1, &k, &kl, &v, &vl)
	                : tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		if (c->feed_id && (kl <= fl || memcmp(k, c->feed_id, fl) || ((const char *)k)[fl]))
			break;
		if (vl >= VAL_HDR) {
			fwrite((const char *)v + VAL_HDR, 1, vl - VAL_HDR, c->out);
			fputc('\n', c->out);
		}
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	if (ferror(c->out))
		return TF_ESYS;
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_records_export(tf_store *st, const char *feed_id, FILE *out)
{
	struct export_ctx c = {feed_id, out};
	return tf_store_view(st, export_txn, &c);
}

int tf_records_drop_feed(tf_txn *txn, const char *feed_id)
{
	size_t fl = strlen(feed_id), kl, vl;
	tf_cursor *cur;
	const void *k, *v;
	int rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur);

	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_GE, feed_id, fl + 1, &k, &kl, &v, &vl);
	while (rc == TF_OK && kl > fl && !memcmp(k, feed_id, fl) && !((const char *)k)[fl]) {
		if ((rc = tf_cursor_del(cur)))
			break;
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	if (rc != TF_OK && rc != TF_ENOTFOUND)
		return rc;
	tf_txn_del(txn, TF_TBL_COUNTS, feed_id, fl);
	tf_txn_del(txn, TF_TBL_CURSORS, feed_id, fl);
	return tf_index_drop_feed(txn, feed_id);
}

int tf_records_get(tf_txn *txn, const char *feed_id, const char *key, const char **json,
                   size_t *len)
{
	char k[MAX_KEY + 1];
	const void *v;
	size_t vl;
	int rc;

	if (strlen(feed_id) > TF_MAX_FEED_ID || strlen(key) > TF_MAX_RECORD_KEY)
		return TF_ENOTFOUND;
	rc = tf_txn_get(txn, TF_TBL_RECORDS, k, record_key(k, feed_id, key), &v, &vl);
	if (rc)
		return rc;
	if (vl < VAL_HDR)
		return TF_ESTORE;
	*json = (const char *)v + VAL_HDR;
	*len = vl - VAL_HDR;
	return TF_OK;
}

struct obs_ctx {
	const char *except;
	size_t max;
	json_object *out, *seen;
};

static int lookup_kind(const char *type)
{
	static const char *const kinds[] = {"ipv4-addr", "ipv6-addr", "domain-name", "url",
	                                    "file:hashes.MD5", "file:hashes.SHA-1",
	                                    "file:hashes.SHA-256"};
	for (size_t i = 0; type && i < sizeof kinds / sizeof *kinds; i++)
		if (!strcmp(type, kinds[i]))
			return 1;
	return 0;
}

static void collect(struct obs_ctx *c, json_object *rec)
{
	json_object *obs;
	if (!json_object_object_get_ex(rec, "observables", &obs) ||
	    !json_object_is_type(obs, json_type_array))
		return;
	for (size_t i = 0, n = json_object_array_length(obs); i < n; i++) {
		json_object *o = json_object_array_get_idx(obs, i);
		const char *v = tf_json_str(o, "value");
		if (json_object_array_length(c->out) >= c->max || !v || !lookup_kind(tf_json_str(o, "type")) ||
		    json_object_object_get_ex(c->seen, v, NULL))
			continue;
		json_object_object_add(c->seen, v, NULL);
		json_object_array_add(c->out, json_object_new_string(v));
	}
}

static int observables_txn(tf_txn *txn, void *vctx)
{
	struct obs_ctx *c = vctx;
	size_t fl = c->except ? strlen(c->except) : 0, kl, vl;
	tf_cursor *cur;
	const void *k, *v;
	int rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur);

	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	     rc == TF_OK && json_object_array_length(c->out) < c->max;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		json_object *rec;
		if (vl < VAL_HDR || (c->except && kl > fl && !memcmp(k, c->except, fl) &&
		                     !((const char *)k)[fl]))
			continue;
		if (tf_json_parse((const char *)v + VAL_HDR, vl - VAL_HDR, TF_MAX_FEED_JSON_DEPTH + 8,
		                  &rec, NULL, 0))
			continue; /* not ours to judge here: export shows it */
		collect(c, rec);
		json_object_put(rec);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_records_observables(tf_store *st, const char *except_feed, size_t max, json_object *out)
{
	struct obs_ctx c = {except_feed, max, out, json_object_new_object()};
	int rc = c.seen ? tf_store_view(st, observables_txn, &c) : TF_ENOMEM;
	json_object_put(c.seen);
	return rc;
}
