#include "records.h"
#include "err.h"
#include "index.h"
#include "json.h"
#include "tf_limits.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stored value: modified_us (8 bytes, native), the date added (8 bytes,
 * big-endian µs), then the record's JSON text. The version prefix lets
 * "latest modified wins" be decided without parsing. Records written before
 * the date added existed have the 8-byte prefix only: their JSON follows at
 * once ('{'), where a date added starts with a 0 byte (below 2^56 µs). */
#define VAL_HDR 8
#define ADDED_HDR 16
/* Stored key of the date-added order (TF_TBL_ADDED): feed_id NUL time. */
#define ADDED_KEY_MAX (TF_MAX_FEED_ID + 1 + 8)
/* META key: the last date added given out (µs, native; not journaled, so a
 * rolled-back date is never given out again: a TAXII client that saw it
 * must still get what is stored after). */
#define ADDED_LAST "added/last"
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

/* Bytes before the record's JSON in a stored value. */
static size_t hdr_len(const void *v, size_t vl)
{
	return vl > ADDED_HDR && ((const unsigned char *)v)[VAL_HDR] == 0 ? ADDED_HDR : VAL_HDR;
}

/* The date added of a stored value, 0 when it has none. */
static int64_t added_of(const void *v, size_t vl)
{
	const unsigned char *p = (const unsigned char *)v + VAL_HDR;
	uint64_t t = 0;

	if (hdr_len(v, vl) != ADDED_HDR)
		return 0;
	for (int i = 0; i < 8; i++)
		t = t << 8 | p[i];
	return (int64_t)t;
}

static size_t added_key(char *buf, const char *feed_id, int64_t added_us)
{
	size_t fl = strlen(feed_id);
	uint64_t t = (uint64_t)added_us;

	memcpy(buf, feed_id, fl);
	buf[fl] = '\0';
	for (int i = 7; i >= 0; i--, t >>= 8)
		buf[fl + 1 + (size_t)i] = (char)(t & 0xff);
	return fl + 9;
}

static size_t record_key(char *buf, const char *feed_id, const char *key)
{
	size_t fl = strlen(feed_id), kl = strlen(key);
	memcpy(buf, feed_id, fl);
	buf[fl] = '\0';
	memcpy(buf + fl + 1, key, kl);
	return fl + 1 + kl;
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

/* The most compose() writes for e. */
static size_t compose_bound(const struct entry *e, const char *feed_id, const char *task_id)
{
	size_t strs = strlen(e->key) + strlen(e->type) + (e->value ? strlen(e->value) : 0) +
	              strlen(feed_id) + strlen(task_id) + TF_TIME_LEN;
	return ADDED_HDR + 96 + TF_JSON_QUOTED_MAX(strs) + 5 * 2 +
	       strlen(e->observables ? e->observables : "[]") + e->object_len;
}

/* The stored value, into out (compose_bound bytes): the version, then the
 * record's JSON — our fields, then the source object verbatim. Written
 * directly (strings quoted by tf_json_quote): a json_object per field cost
 * more than the store write. Returns its length. */
static size_t compose(char *out, const struct entry *e, const char *feed_id, const char *task_id,
                      int64_t added_us)
{
	char ts[TF_TIME_LEN + 1], ak[ADDED_KEY_MAX];
	const char *obs = e->observables ? e->observables : "[]";
	char *p;

	if (e->modified_us)
		tf_time_format(e->modified_us, ts, sizeof ts);
	p = put_raw(out, (const char *)&e->modified_us, VAL_HDR);
	added_key(ak, "", added_us); /* "" NUL, then the time */
	p = put_raw(p, ak + 1, 8);
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
	return (size_t)(p - out);
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

/* ---- applying a batch ------------------------------------------------------ */

/* A key's value as the page goes: NULL when absent; ours: in the apply's
 * buffers, not the store's. */
struct kval {
	const char *v;
	size_t len;
	int ours;
};

/* One page's apply, all at once: its keys read in one go, the decisions
 * made here, and the writes handed to the store as one journaled batch
 * (on PostgreSQL a few statements, not three round trips per record). Freed
 * at the end, so a spare batch holds no page-sized scratch. */
struct apply {
	size_t n, nw;
	const void **kp, **vp; /* keys; their values before the page */
	size_t *kl, *vl;
	size_t *prev;          /* 1 + index of the key's previous record, 0: none */
	struct kval *after;    /* the key's value after record i */
	tf_jw *w;              /* the writes: records, date-added order, the count */
	size_t *rec;           /* the record of each record write */
	char *keys, *vals, *priors;
	size_t vals_len, priors_len;
	tf_jw *aw;             /* the date-added order's writes (two per record) */
	size_t naw;
	char *akeys;           /* their keys, ADDED_KEY_MAX each */
	int64_t added;         /* the last date added given out */
};

static void apply_free(struct apply *a)
{
	free(a->kp), free(a->vp), free(a->kl), free(a->vl), free(a->prev), free(a->after);
	free(a->w), free(a->rec), free(a->keys), free(a->vals), free(a->priors);
	free(a->aw), free(a->akeys);
}

struct occ {
	const char *key;
	size_t i;
};

static int occ_cmp(const void *va, const void *vb)
{
	const struct occ *a = va, *b = vb;
	int c = strcmp(a->key, b->key);
	return c ? c : (a->i > b->i) - (a->i < b->i);
}

/* a->prev: a source may send one object twice in a page (two versions). */
static int find_repeats(struct apply *a, const tf_batch *b)
{
	struct occ *o = malloc(b->n * sizeof *o);

	if (!o)
		return TF_ENOMEM;
	for (size_t i = 0; i < b->n; i++)
		o[i] = (struct occ){b->e[i].key, i};
	qsort(o, b->n, sizeof *o, occ_cmp);
	for (size_t i = 1; i < b->n; i++)
		if (!strcmp(o[i - 1].key, o[i].key))
			a->prev[o[i].i] = o[i - 1].i + 1;
	free(o);
	return TF_OK;
}

static int apply_alloc(struct apply *a, const tf_batch *b, const char *feed_id,
                       const char *task_id)
{
	size_t n = b->n, fl = strlen(feed_id), kbytes = 0, vbytes = 0, off = 0;

	for (size_t i = 0; i < n; i++) {
		kbytes += fl + 1 + strlen(b->e[i].key);
		vbytes += compose_bound(&b->e[i], feed_id, task_id);
	}
	a->n = n;
	a->kp = malloc(n * sizeof *a->kp), a->vp = malloc(n * sizeof *a->vp);
	a->kl = malloc(n * sizeof *a->kl), a->vl = malloc(n * sizeof *a->vl);
	a->prev = calloc(n, sizeof *a->prev), a->after = malloc(n * sizeof *a->after);
	a->w = malloc((3 * n + 1) * sizeof *a->w), a->rec = malloc(n * sizeof *a->rec);
	a->keys = malloc(kbytes), a->vals = malloc(vbytes);
	a->aw = malloc(2 * n * sizeof *a->aw), a->akeys = malloc(2 * n * ADDED_KEY_MAX);
	if (!a->kp || !a->vp || !a->kl || !a->vl || !a->prev || !a->after || !a->w || !a->rec ||
	    !a->keys || !a->vals || !a->aw || !a->akeys)
		return TF_ENOMEM;
	for (size_t i = 0; i < n; i++) {
		a->kp[i] = a->keys + off;
		a->kl[i] = record_key(a->keys + off, feed_id, b->e[i].key);
		off += a->kl[i];
	}
	return find_repeats(a, b);
}

/* Copies of the values read before the page that a write replaces: the
 * store's pointers end at the first write (each key's is copied at most
 * once: after its first write, the prior is that write's value). */
static int priors_alloc(struct apply *a)
{
	size_t bytes = 1;

	for (size_t i = 0; i < a->n; i++)
		if (!a->prev[i] && a->vp[i])
			bytes += a->vl[i];
	return (a->priors = malloc(bytes)) ? TF_OK : TF_ENOMEM;
}

/* The date-added order follows record e's write: its new time in, the
 * time it had (if any) out. The priors are known: a new time was never
 * used; the old entry holds e's key. */
static void order_writes(struct apply *a, const struct entry *e, const char *feed_id,
                         struct kval cur)
{
	char *k = a->akeys + a->naw * ADDED_KEY_MAX;
	int64_t old = cur.v ? added_of(cur.v, cur.len) : 0;

	a->aw[a->naw++] = (tf_jw){.tbl = TF_TBL_ADDED, .key = k, .klen = added_key(k, feed_id, ++a->added),
	                          .val = e->key, .vlen = strlen(e->key), .known = 1};
	if (!old)
		return;
	k = a->akeys + a->naw * ADDED_KEY_MAX;
	a->aw[a->naw++] = (tf_jw){.tbl = TF_TBL_ADDED, .key = k, .klen = added_key(k, feed_id, old),
	                          .known = 1, .prior = e->key, .plen = strlen(e->key)};
}

/* Record i: skipped (the stored version is as new or newer), or a write
 * that journals the key's value as the page left it. */
static void decide(struct apply *a, tf_batch *b, size_t i, const char *feed_id,
                   const char *task_id, tf_progress *p, int64_t *delta)
{
	const struct entry *e = &b->e[i];
	struct kval cur = a->prev[i] ? a->after[a->prev[i] - 1]
	                             : (struct kval){a->vp[i], a->vp[i] ? a->vl[i] : 0, 0};
	tf_jw *w = &a->w[a->nw];

	a->after[i] = cur;
	if (cur.v && cur.len >= VAL_HDR) {
		int64_t old_mod;
		memcpy(&old_mod, cur.v, VAL_HDR);
		if (old_mod >= e->modified_us) {
			p->indicators_skipped++;
			return;
		}
	}
	if (cur.v) {
		p->indicators_updated++;
		if (!cur.ours) { /* the store's pointer ends at the first write */
			memcpy(a->priors + a->priors_len, cur.v, cur.len);
			cur.v = a->priors + a->priors_len;
			a->priors_len += cur.len;
		}
	} else {
		p->indicators_created++, (*delta)++;
	}
	order_writes(a, e, feed_id, cur);
	*w = (tf_jw){.tbl = TF_TBL_RECORDS, .key = a->kp[i], .klen = a->kl[i], .known = 1,
	             .prior = cur.v, .plen = cur.len, .val = a->vals + a->vals_len};
	w->vlen = compose(a->vals + a->vals_len, e, feed_id, task_id, a->added);
	a->vals_len += w->vlen;
	a->after[i] = (struct kval){w->val, w->vlen, 1};
	a->rec[a->nw++] = i;
}

/* The index entries of the page's record writes (index.h), journaled in the
 * same transaction. Called after every decide(): the index's own reads and
 * writes end the store's pointers, and each write's prior is by then a copy
 * (or the page's earlier value of the key), which is also the old record the
 * index compares with — for a key sent twice, the first version. */
static int index_writes(const struct apply *a, tf_batch *b, tf_txn *txn, const char *feed_id,
                        const char *task_id)
{
	int rc;

	if (!b->ix && (rc = tf_index_writer_new(&b->ix)))
		return rc;
	if ((rc = tf_index_begin(b->ix, txn, feed_id, task_id, tf_now_us())))
		return rc;
	for (size_t j = 0; j < a->nw; j++) {
		const struct entry *e = &b->e[a->rec[j]];
		const tf_jw *w = &a->w[j];
		int old = w->prior && w->plen >= VAL_HDR;
		size_t h = old ? hdr_len(w->prior, w->plen) : 0;
		/* A key sent twice: its entries as the first version left them. */
		if (a->prev[a->rec[j]] && (rc = tf_index_flush(b->ix)))
			return rc;
		if ((rc = tf_index_record(b->ix, e->key, old ? (const char *)w->prior + h : NULL,
		                          old ? w->plen - h : 0, e->packed, e->packed_len,
		                          e->valid_until_us, e->revoked)))
			return rc;
	}
	return tf_index_end(b->ix);
}

/* The dates added of this page start after the last one given out and
 * not before now: strictly increasing across every feed and writer (writers
 * are serialized), so added_after pages exactly even when the clock steps
 * back or runs differ between hosts. */
static int added_start(tf_txn *txn, int64_t *last)
{
	const void *v;
	size_t vl;
	int64_t now = tf_now_us();
	int rc = tf_txn_get(txn, TF_TBL_META, ADDED_LAST, strlen(ADDED_LAST), &v, &vl);

	*last = 0;
	if (rc == TF_OK && vl == sizeof *last)
		memcpy(last, v, sizeof *last);
	else if (rc != TF_ENOTFOUND && rc != TF_OK)
		return rc;
	if (*last < now - 1)
		*last = now - 1;
	return TF_OK;
}

int tf_batch_apply(tf_txn *txn, const char *feed_id, const char *task_id, tf_batch *b,
                   tf_progress *p)
{
	struct apply a = {0};
	int64_t delta = 0;
	uint64_t count = 0, before = 0;
	int rc;

	if (!b->n)
		return TF_OK;
	if ((rc = apply_alloc(&a, b, feed_id, task_id)) || (rc = added_start(txn, &a.added)) ||
	    (rc = tf_txn_get_many(txn, TF_TBL_RECORDS, a.n, a.kp, a.kl, a.vp, a.vl)) ||
	    (rc = priors_alloc(&a)) || (rc = count_get(txn, feed_id, &before)))
		goto out;
	for (size_t i = 0; i < a.n; i++)
		decide(&a, b, i, feed_id, task_id, p, &delta);
	if ((rc = index_writes(&a, b, txn, feed_id, task_id)))
		goto out;
	if (a.naw && (rc = tf_txn_put(txn, TF_TBL_META, ADDED_LAST, strlen(ADDED_LAST), &a.added,
	                              sizeof a.added)))
		goto out;
	memcpy(a.w + a.nw, a.aw, a.naw * sizeof *a.aw);
	a.nw += a.naw;
	/* The count's write comes last, in the same batch; its prior is
	 * journaled as stored (count_get reads a malformed one as 0). */
	count = before + (uint64_t)delta;
	if (delta)
		a.w[a.nw++] = (tf_jw){.tbl = TF_TBL_COUNTS, .key = feed_id, .klen = strlen(feed_id),
		                      .val = &count, .vlen = sizeof count};
	rc = tf_txn_write_j(txn, task_id, a.w, a.nw);
out:
	apply_free(&a);
	return rc;
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
		    tf_json_parse((const char *)v + hdr_len(v, vl), vl - hdr_len(v, vl),
		                  TF_MAX_FEED_JSON_DEPTH + 8, &rec, NULL, 0)) {
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
			fwrite((const char *)v + hdr_len(v, vl), 1, vl - hdr_len(v, vl), c->out);
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

/* Deletes every key of tbl that starts with feed_id NUL. */
static int drop_range(tf_txn *txn, tf_table tbl, const char *feed_id)
{
	size_t fl = strlen(feed_id), kl, vl;
	tf_cursor *cur;
	const void *k, *v;
	int rc = tf_cursor_open(txn, tbl, &cur);

	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_GE, feed_id, fl + 1, &k, &kl, &v, &vl);
	while (rc == TF_OK && kl > fl && !memcmp(k, feed_id, fl) && !((const char *)k)[fl]) {
		if ((rc = tf_cursor_del(cur)))
			break;
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_records_drop_feed(tf_txn *txn, const char *feed_id)
{
	size_t fl = strlen(feed_id);
	int rc;

	if ((rc = drop_range(txn, TF_TBL_RECORDS, feed_id)) ||
	    (rc = drop_range(txn, TF_TBL_ADDED, feed_id)))
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
	*json = (const char *)v + hdr_len(v, vl);
	*len = vl - hdr_len(v, vl);
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
		if (tf_json_parse((const char *)v + hdr_len(v, vl), vl - hdr_len(v, vl),
		                  TF_MAX_FEED_JSON_DEPTH + 8, &rec, NULL, 0))
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

/* ---- rebuilding the index ------------------------------------------------------ */

struct reindex_ctx {
	const char *feed;
	tf_index_writer *w;
	char *pack;
	size_t pcap;
	char after[MAX_KEY];   /* stored key of the last record done (alen 0: none) */
	size_t alen;
	char next[MAX_KEY];    /* where this transaction stopped */
	size_t nlen;
	int done;
	uint64_t records;      /* this transaction's */
	size_t added;
	char task[TF_UUID_LEN + 1]; /* the last run looked up, and when it wrote */
	int64_t task_us, now;
};

/* When run task_id last wrote: its end, else its last update, else now (a
 * run no longer in the history). */
static int64_t run_time(tf_txn *txn, struct reindex_ctx *c, const char *task_id)
{
	static const char *const fields[] = {"finished_at", "updated_at", "started_at"};
	json_object *t = NULL;
	const void *v;
	size_t vl;
	int64_t us = 0;

	if (!strcmp(c->task, task_id))
		return c->task_us;
	if (!tf_txn_get(txn, TF_TBL_TASKS, task_id, strlen(task_id), &v, &vl) &&
	    !tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &t, NULL, 0)) {
		for (size_t i = 0; !us && i < sizeof fields / sizeof *fields; i++) {
			const char *s = tf_json_str(t, fields[i]);
			if (s && tf_time_parse(s, &us))
				us = 0;
		}
		json_object_put(t);
	}
	snprintf(c->task, sizeof c->task, "%s", task_id);
	c->task_us = us > 0 ? us : c->now;
	return c->task_us;
}

/* valid_until (STIX) or expiration (OTX), and revoked, of a stored object:
 * what worker/feeds/stix.c life() and otx.c read when the record came. */
static void object_life(json_object *obj, tf_index_origin *o)
{
	static const char *const untils[] = {"valid_until", "expiration"};
	const char *s;
	int64_t us;
	int b;

	for (size_t i = 0; i < sizeof untils / sizeof *untils && !o->valid_until_us; i++)
		if (tf_json_get_str(obj, untils[i], &s) == TF_OK && s && *s && !tf_time_parse(s, &us))
			o->valid_until_us = us > 0 ? us : 1;
	if (tf_json_get_bool(obj, "revoked", &b) == TF_OK)
		o->revoked = b;
}

/* One stored record: its missing entries. Unreadable records are skipped
 * (export shows them; there is nothing to index). */
static int reindex_one(tf_txn *txn, struct reindex_ctx *c, const char *reckey, const char *json,
                       size_t len)
{
	json_object *rec = NULL, *obs = NULL, *obj = NULL;
	tf_index_origin o = {0};
	size_t plen = 0;
	int rc = TF_OK;

	if (tf_json_parse(json, len, TF_MAX_FEED_JSON_DEPTH + 8, &rec, NULL, 0))
		return TF_OK;
	o.task_id = tf_json_str(rec, "task_id");
	json_object_object_get_ex(rec, "observables", &obs);
	if (o.task_id && strlen(o.task_id) == TF_UUID_LEN &&
	    !(rc = tf_index_pack(obs, &c->pack, &c->pcap, &plen)) && plen) {
		o.written_us = run_time(txn, c, o.task_id);
		if (json_object_object_get_ex(rec, "object", &obj))
			object_life(obj, &o);
		rc = tf_index_restore(c->w, reckey, c->pack, plen, &o, &c->added);
	}
	json_object_put(rec);
	return rc;
}

static int reindex_txn(tf_txn *txn, void *vctx)
{
	struct reindex_ctx *c = vctx;
	size_t fl = strlen(c->feed), kl, vl;
	char reckey[TF_MAX_RECORD_KEY + 1], start[MAX_KEY + 1];
	const void *k, *v;
	tf_cursor *cur;
	int rc;

	/* A replayed transaction starts over. */
	c->records = 0, c->added = 0, c->done = 0, c->nlen = c->alen;
	memcpy(c->next, c->after, c->alen);
	if ((rc = tf_txn_get(txn, TF_TBL_FEEDS, c->feed, fl, &v, &vl)))
		return rc;
	if (!tf_txn_get(txn, TF_TBL_ACTIVE, c->feed, fl, &v, &vl))
		return TF_ECONFLICT;
	if ((rc = tf_index_begin_rebuild(c->w, txn, c->feed, c->now)) ||
	    (rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur)))
		return rc;
	if (c->alen)
		rc = tf_cursor_get(cur, TF_SEEK_GE, c->after, c->alen, &k, &kl, &v, &vl);
	else
		rc = tf_cursor_get(cur, TF_SEEK_GE, c->feed, fl + 1, &k, &kl, &v, &vl);
	if (rc == TF_OK && c->alen && kl == c->alen && !memcmp(k, c->after, kl))
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	for (; rc == TF_OK; rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		if (kl <= fl + 1 || kl > MAX_KEY || memcmp(k, c->feed, fl) || ((const char *)k)[fl])
			break; /* past the feed's records */
		if (c->records == TF_REINDEX_BATCH) {
			tf_cursor_close(cur);
			return tf_index_end(c->w);
		}
		memcpy(start, k, kl);
		memcpy(reckey, (const char *)k + fl + 1, kl - fl - 1);
		reckey[kl - fl - 1] = '\0';
		if (vl >= VAL_HDR && (rc = reindex_one(txn, c, reckey, (const char *)v + hdr_len(v, vl),
		                                         vl - hdr_len(v, vl))))
			break;
		memcpy(c->next, start, kl);
		c->nlen = kl;
		c->records++;
	}
	tf_cursor_close(cur);
	if (rc != TF_OK && rc != TF_ENOTFOUND)
		return rc;
	c->done = 1;
	return tf_index_end(c->w);
}

int tf_records_reindex(tf_store *st, const char *feed_id, uint64_t *records, uint64_t *added)
{
	struct reindex_ctx c = {.feed = feed_id, .now = tf_now_us()};
	int rc = tf_index_writer_new(&c.w);

	while (!rc && !c.done) {
		if ((rc = tf_store_update(st, reindex_txn, &c)))
			break;
		*records += c.records;
		*added += c.added;
		memcpy(c.after, c.next, c.nlen);
		c.alen = c.nlen;
	}
	tf_index_writer_free(c.w);
	free(c.pack);
	return rc;
}

/* ---- date-added order (TAXII 2.1: fcgi/h_taxii.c) -------------------------- */

/* The source object inside a stored record: the member "object", last of
 * the record (compose()); every member before it is ours, its strings
 * quoted, so the first `,"object":` is that member. */
static int object_span(const char *json, size_t len, const char **obj, size_t *olen)
{
	static const char tag[] = ",\"object\":";
	const char *p = memmem(json, len, tag, sizeof tag - 1);

	if (!p || len < (size_t)(p - json) + sizeof tag)
		return TF_ESTORE;
	*obj = p + sizeof tag - 1;
	*olen = len - (size_t)(*obj - json) - 1; /* the record's closing brace */
	return TF_OK;
}

static int fill_object(const void *v, size_t vl, tf_stored_object *out)
{
	size_t h;

	if (vl < VAL_HDR)
		return TF_ESTORE;
	h = hdr_len(v, vl);
	memcpy(&out->modified_us, v, VAL_HDR);
	out->added_us = added_of(v, vl);
	return object_span((const char *)v + h, vl - h, &out->object, &out->object_len);
}

int tf_records_objects(tf_txn *txn, size_t n, const char *const *feed_ids,
                       const char *const *keys, tf_stored_object *out)
{
	const void **kp = malloc((n ? n : 1) * sizeof *kp), **vp = malloc((n ? n : 1) * sizeof *vp);
	size_t *kl = malloc((n ? n : 1) * sizeof *kl), *vl = malloc((n ? n : 1) * sizeof *vl);
	char *kb = malloc((n ? n : 1) * (MAX_KEY + 1));
	int rc = kp && vp && kl && vl && kb ? TF_OK : TF_ENOMEM;

	for (size_t i = 0; !rc && i < n; i++) {
		if (strlen(feed_ids[i]) > TF_MAX_FEED_ID || strlen(keys[i]) > TF_MAX_RECORD_KEY) {
			rc = TF_EINVAL;
			break;
		}
		kp[i] = kb + i * (MAX_KEY + 1);
		kl[i] = record_key(kb + i * (MAX_KEY + 1), feed_ids[i], keys[i]);
	}
	if (!rc && n)
		rc = tf_txn_get_many(txn, TF_TBL_RECORDS, n, kp, kl, vp, vl);
	for (size_t i = 0; !rc && i < n; i++) {
		memset(&out[i], 0, sizeof out[i]);
		if (vp[i])
			rc = fill_object(vp[i], vl[i], &out[i]);
	}
	free(kp), free(vp), free(kl), free(vl), free(kb);
	return rc;
}

/* One feed's cursor of a walk, on its next entry. */
struct lane {
	tf_cursor *cur;
	const char *feed;
	size_t fl;
	const void *k, *v;
	size_t kl, vl;
	int live;
};

static int lane_next(struct lane *l, int first, int64_t after_us)
{
	char start[ADDED_KEY_MAX];
	int rc;

	if (first) {
		/* strictly after: the first time above after_us */
		size_t sl = added_key(start, l->feed, after_us < 0 ? 0 : after_us + 1);
		rc = tf_cursor_get(l->cur, TF_SEEK_GE, start, sl, &l->k, &l->kl, &l->v, &l->vl);
	} else {
		rc = tf_cursor_get(l->cur, TF_SEEK_NEXT, NULL, 0, &l->k, &l->kl, &l->v, &l->vl);
	}
	l->live = rc == TF_OK && l->kl == l->fl + 9 && !memcmp(l->k, l->feed, l->fl) &&
	          !((const char *)l->k)[l->fl];
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

static int64_t lane_time(const struct lane *l)
{
	const unsigned char *p = (const unsigned char *)l->k + l->fl + 1;
	uint64_t t = 0;

	for (int i = 0; i < 8; i++)
		t = t << 8 | p[i];
	return (int64_t)t;
}

/* The feed ids of the store (the keys of TF_TBL_FEEDS), copied. */
static int feed_list(tf_txn *txn, char ***ids, size_t *n)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl, cap = 0;
	int rc = tf_cursor_open(txn, TF_TBL_FEEDS, &cur);

	*ids = NULL;
	*n = 0;
	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		if (kl > TF_MAX_FEED_ID)
			continue;
		if (*n == cap) {
			char **g = realloc(*ids, (cap = cap ? 2 * cap : 16) * sizeof *g);
			if (!g) {
				rc = TF_ENOMEM;
				break;
			}
			*ids = g;
		}
		if (!((*ids)[*n] = tf_strndup(k, kl))) {
			rc = TF_ENOMEM;
			break;
		}
		(*n)++;
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_records_walk_added(tf_txn *txn, const char *feed_id, int64_t after_us, tf_added_fn fn,
                          void *ctx)
{
	char **ids = NULL, *one = (char *)feed_id, key[TF_MAX_RECORD_KEY + 1];
	size_t n = 1, nl = 0;
	struct lane *lanes = NULL;
	int rc = feed_id ? TF_OK : feed_list(txn, &ids, &n);

	if (!rc && !(lanes = calloc(n ? n : 1, sizeof *lanes)))
		rc = TF_ENOMEM;
	for (size_t i = 0; !rc && i < n; i++, nl++) {
		lanes[i].feed = ids ? ids[i] : one;
		lanes[i].fl = strlen(lanes[i].feed);
		if (!(rc = tf_cursor_open(txn, TF_TBL_ADDED, &lanes[i].cur)))
			rc = lane_next(&lanes[i], 1, after_us);
		else
			break;
	}
	/* Merged by time: dates added are unique across feeds. */
	while (!rc) {
		struct lane *best = NULL;
		for (size_t i = 0; i < nl; i++)
			if (lanes[i].live && (!best || lane_time(&lanes[i]) < lane_time(best)))
				best = &lanes[i];
		if (!best)
			break;
		if (best->vl > TF_MAX_RECORD_KEY) {
			rc = TF_ESTORE;
			break;
		}
		memcpy(key, best->v, best->vl);
		key[best->vl] = '\0';
		if ((rc = fn(best->feed, key, lane_time(best), ctx)))
			break;
		rc = lane_next(best, 0, 0);
	}
	for (size_t i = 0; i < nl; i++)
		tf_cursor_close(lanes[i].cur);
	free(lanes);
	for (size_t i = 0; ids && i < n; i++)
		free(ids[i]);
	free(ids);
	return rc == 1 ? TF_OK : rc;
}

struct order_dump {
	char *buf;
	size_t len;
	FILE *f;
};

static int order_dump_txn(tf_txn *txn, void *vctx)
{
	struct order_dump *d = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc;

	rewind(d->f);
	for (int t = 0; t < 2; t++) {
		if ((rc = tf_cursor_open(txn, t ? TF_TBL_ADDED : TF_TBL_RECORDS, &cur)))
			return rc;
		for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
		     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
			fputs(t ? "A " : "R ", d->f);
			for (size_t i = 0; i < kl; i++)
				fprintf(d->f, "%02x", ((const unsigned char *)k)[i]);
			if (t)
				fprintf(d->f, " %.*s\n", (int)vl, (const char *)v);
			else
				fprintf(d->f, " %lld\n", (long long)added_of(v, vl));
		}
		tf_cursor_close(cur);
		if (rc != TF_ENOTFOUND)
			return rc;
	}
	return TF_OK;
}

int tf_records_order_dump(tf_store *st, char **text)
{
	struct order_dump d = {0};
	int rc;

	*text = NULL;
	if (!(d.f = open_memstream(&d.buf, &d.len)))
		return TF_ENOMEM;
	rc = tf_store_view(st, order_dump_txn, &d);
	fclose(d.f);
	if (rc)
		free(d.buf);
	else
		*text = d.buf;
	return rc;
}
