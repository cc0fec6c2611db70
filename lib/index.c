#include "index.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "feed.h"
#include "json.h"
#include "tf_limits.h"
#include "util.h"

/* Keys of TF_TBL_OBS: kind(1) keyvalue NUL feed_id NUL hash64(record key)
 * (8, big-endian). keyvalue is the normal form, or for a value over
 * TF_OBS_KEY_VALUE bytes its first bytes, a \x01 (never in a normal form)
 * and the hex digest of the whole value. Every entry of one value shares
 * the prefix kind keyvalue NUL (the value's "group key"). */
#define LONG_HEAD (TF_OBS_KEY_VALUE - 17)
#define GROUP_MAX (1 + TF_OBS_KEY_VALUE + 1)
#define KEY_MAX (GROUP_MAX + TF_MAX_FEED_ID + 1 + 8)

/* Entry values: first_seen(8) last_seen(8) valid_until(8) flags(1)
 * task_id(36) record key length(2), all native order, then the record key,
 * then the whole value when the key holds only its head. */
#define ENT_FIRST 0
#define ENT_LAST 8
#define ENT_UNTIL 16
#define ENT_FLAGS 24
#define ENT_TASK 25
#define ENT_RLEN (ENT_TASK + TF_UUID_LEN)
#define ENT_HDR (ENT_RLEN + 2)
#define F_REVOKED 1
#define F_LONG 2

/* META names (not journaled: they only ever grow or move forward). */
#define META_MTIME "obs_mtime"  /* last index write or rollback (µs) */
#define META_NETS4 "obs_nets4"  /* IPv4 prefix lengths indexed (bit per length) */
#define META_NETS6 "obs_nets6"  /* IPv6 prefix lengths indexed (2 x 64 bits) */

#define US_PER_DAY (86400LL * 1000000)

static int reserve(char **buf, size_t *cap, size_t need)
{
	char *grown;

	if (need <= *cap)
		return TF_OK;
	if (need < 2 * *cap)
		need = 2 * *cap;
	if (!(grown = realloc(*buf, need)))
		return TF_ENOMEM;
	*buf = grown;
	*cap = need;
	return TF_OK;
}

/* kind keyvalue NUL into out (GROUP_MAX bytes); returns its length. */
static size_t group_key(char *out, int kind, const char *value)
{
	size_t n = strlen(value);

	out[0] = (char)kind;
	if (n <= TF_OBS_KEY_VALUE) {
		memcpy(out + 1, value, n);
	} else {
		memcpy(out + 1, value, LONG_HEAD);
		out[1 + LONG_HEAD] = '\x01';
		snprintf(out + 2 + LONG_HEAD, 17, "%016llx", (unsigned long long)tf_hash64(value, n));
		n = TF_OBS_KEY_VALUE;
	}
	out[1 + n] = '\0';
	return n + 2;
}

static size_t entry_key(char *out, int kind, const char *value, const char *feed,
                        const char *reckey)
{
	size_t n = group_key(out, kind, value), fl = strlen(feed);

	memcpy(out + n, feed, fl + 1);
	n += fl + 1;
	tf_put_be64((unsigned char *)out + n, tf_hash64(reckey, strlen(reckey)));
	return n + 8;
}

/* Splits an entry key: group length, and the feed id inside it. */
static int split_key(const char *k, size_t kl, size_t *glen, const char **feed, size_t *flen)
{
	const char *nul = kl > 1 ? memchr(k + 1, '\0', kl - 1) : NULL, *fnul;

	if (!nul || (fnul = memchr(nul + 1, '\0', kl - (size_t)(nul + 1 - k))) == NULL ||
	    (size_t)(k + kl - fnul) != 9)
		return TF_ESTORE;
	*glen = (size_t)(nul + 1 - k);
	*feed = nul + 1;
	*flen = (size_t)(fnul - *feed);
	return TF_OK;
}

static int64_t get_i64(const char *p)
{
	int64_t v;
	memcpy(&v, p, sizeof v);
	return v;
}

/* ---- packing ------------------------------------------------------------------ */

static int packed_has(const char *buf, size_t len, int kind, const char *v)
{
	for (const char *p = buf; p < buf + len; p += 2 + strlen(p + 1))
		if (p[0] == (char)kind && !strcmp(p + 1, v))
			return 1;
	return 0;
}

int tf_index_pack(json_object *observables, char **buf, size_t *cap, size_t *len)
{
	char norm[TF_MAX_OBS_VALUE + 1];

	*len = 0;
	if (!observables || !json_object_is_type(observables, json_type_array))
		return TF_OK;
	for (size_t i = 0, n = json_object_array_length(observables); i < n; i++) {
		json_object *o = json_object_array_get_idx(observables, i);
		const char *v = tf_json_str(o, "value");
		int kind = tf_obs_kind_of(tf_json_str(o, "type")), prefix;
		size_t nl;

		if (!kind || !v || tf_obs_normalize(kind, v, norm, &prefix) ||
		    packed_has(*buf, *len, kind, norm))
			continue;
		nl = strlen(norm);
		if (reserve(buf, cap, *len + nl + 2))
			return TF_ENOMEM;
		(*buf)[*len] = (char)kind;
		memcpy(*buf + *len + 1, norm, nl + 1);
		*len += nl + 2;
	}
	return TF_OK;
}

/* ---- writing ------------------------------------------------------------------ */

struct tdelta {
	char kind; /* 's' last written, 'v' valid until */
	int64_t t, d;
};

/* A write held until the commit's index writes go to the store together
 * (flush): on PostgreSQL one statement per chunk instead of one per entry.
 * Offsets into the writer's arena, which grows (realloc) as writes come. */
struct pend {
	tf_table tbl;
	size_t koff, klen, voff, vlen, poff, plen;
	int has_val, known, has_prior;
};

struct tf_index_writer {
	tf_txn *txn;
	const char *feed, *task;
	int64_t now;
	uint64_t digest;        /* XOR of this commit's changes */
	int64_t entries, seen_now;
	int changed;
	int plain;              /* a rebuild: writes are not journaled (no run owns them) */
	struct tdelta *td;
	size_t ntd, captd;
	char *val, *prior, *oldpack;
	size_t valcap, priorcap, oldcap;
	uint64_t nets[3];       /* [0] IPv4, [1..2] IPv6 prefix lengths */
	int nets_loaded, nets_dirty;
	struct pend *pw;        /* the held writes, in order */
	size_t npw, cappw;
	char *arena;
	size_t alen, acap;
	tf_jw *jw;              /* flush's view of pw */
	size_t capjw;
};

int tf_index_writer_new(tf_index_writer **out)
{
	return (*out = calloc(1, sizeof **out)) ? TF_OK : TF_ENOMEM;
}

void tf_index_writer_free(tf_index_writer *w)
{
	if (!w)
		return;
	free(w->td);
	free(w->val);
	free(w->prior);
	free(w->oldpack);
	free(w->pw);
	free(w->arena);
	free(w->jw);
	free(w);
}

int tf_index_begin(tf_index_writer *w, tf_txn *txn, const char *feed_id, const char *task_id,
                   int64_t now_us)
{
	w->txn = txn;
	w->feed = feed_id;
	w->task = task_id;
	w->now = now_us;
	w->digest = 0;
	w->entries = w->seen_now = 0;
	w->changed = 0;
	w->ntd = 0;
	w->nets_loaded = w->nets_dirty = 0;
	w->npw = w->alen = 0;
	w->plain = 0;
	return TF_OK;
}

int tf_index_begin_rebuild(tf_index_writer *w, tf_txn *txn, const char *feed_id, int64_t now_us)
{
	int rc = tf_index_begin(w, txn, feed_id, NULL, now_us);

	w->plain = 1;
	return rc;
}

static int arena_add(tf_index_writer *w, const void *p, size_t n, size_t *off)
{
	if (w->alen + n > w->acap) {
		size_t cap = w->acap ? w->acap : 1 << 16;
		char *grown;
		while (cap < w->alen + n)
			cap *= 2;
		if (!(grown = realloc(w->arena, cap)))
			return TF_ENOMEM;
		w->arena = grown, w->acap = cap;
	}
	*off = w->alen;
	if (n)
		memcpy(w->arena + w->alen, p, n);
	w->alen += n;
	return TF_OK;
}

/* Holds a journaled write (val NULL: a delete; known: prior, NULL when
 * absent, is the key's current value) until flush. The caller's buffers are
 * copied. */
static int hold(tf_index_writer *w, tf_table tbl, const void *key, size_t klen, const void *val,
                size_t vlen, int known, const void *prior, size_t plen)
{
	struct pend *pw;
	int rc;

	if (w->npw == w->cappw) {
		size_t cap = w->cappw ? 2 * w->cappw : 256;
		struct pend *grown = realloc(w->pw, cap * sizeof *grown);
		if (!grown)
			return TF_ENOMEM;
		w->pw = grown, w->cappw = cap;
	}
	pw = &w->pw[w->npw];
	*pw = (struct pend){.tbl = tbl, .klen = klen, .vlen = vlen, .plen = plen,
	                    .has_val = val != NULL, .known = known, .has_prior = prior != NULL};
	if ((rc = arena_add(w, key, klen, &pw->koff)) ||
	    (val && (rc = arena_add(w, val, vlen, &pw->voff))) ||
	    (prior && (rc = arena_add(w, prior, plen, &pw->poff))))
		return rc;
	w->npw++;
	return TF_OK;
}

/* A rebuild's held writes, unjournaled, in order. */
static int flush_plain(tf_index_writer *w)
{
	int rc = TF_OK;

	for (size_t i = 0; rc == TF_OK && i < w->npw; i++) {
		const struct pend *p = &w->pw[i];
		if (p->has_val)
			rc = tf_txn_put(w->txn, p->tbl, w->arena + p->koff, p->klen, w->arena + p->voff,
			                p->vlen);
		else if ((rc = tf_txn_del(w->txn, p->tbl, w->arena + p->koff, p->klen)) == TF_ENOTFOUND)
			rc = TF_OK;
	}
	w->npw = w->alen = 0;
	return rc;
}

int tf_index_flush(tf_index_writer *w)
{
	int rc;

	if (!w->npw)
		return TF_OK;
	if (w->plain)
		return flush_plain(w);
	if (w->npw > w->capjw) {
		tf_jw *grown = realloc(w->jw, w->npw * sizeof *grown);
		if (!grown)
			return TF_ENOMEM;
		w->jw = grown, w->capjw = w->npw;
	}
	for (size_t i = 0; i < w->npw; i++) {
		const struct pend *p = &w->pw[i];
		/* A held value, even an empty one, is not a delete. */
		w->jw[i] = (tf_jw){.tbl = p->tbl, .key = w->arena + p->koff, .klen = p->klen,
		                   .val = p->has_val ? w->arena + p->voff : NULL, .vlen = p->vlen,
		                   .known = p->known,
		                   .prior = p->has_prior ? w->arena + p->poff : NULL, .plen = p->plen};
	}
	rc = tf_txn_write_j(w->txn, w->task, w->jw, w->npw);
	w->npw = w->alen = 0;
	return rc;
}

static int add_delta(tf_index_writer *w, char kind, int64_t t, int64_t d)
{
	if (w->ntd == w->captd) {
		size_t cap = w->captd ? 2 * w->captd : 64;
		struct tdelta *grown = realloc(w->td, cap * sizeof *grown);
		if (!grown)
			return TF_ENOMEM;
		w->td = grown;
		w->captd = cap;
	}
	w->td[w->ntd++] = (struct tdelta){kind, t, d};
	return TF_OK;
}

static uint64_t entry_hash(const char *k, size_t kl, const char *v, size_t vl)
{
	return tf_hash64_more(tf_hash64(k, kl), v, vl);
}

/* An entry leaves (removed, or about to be replaced): its share of the
 * feed's digest, count and time buckets goes. */
static int forget(tf_index_writer *w, const char *k, size_t kl, const char *v, size_t vl)
{
	int rc;

	if (vl < ENT_HDR)
		return TF_ESTORE;
	w->digest ^= entry_hash(k, kl, v, vl);
	w->entries--;
	w->changed = 1;
	if ((rc = add_delta(w, 's', get_i64(v + ENT_LAST), -1)))
		return rc;
	return get_i64(v + ENT_UNTIL) ? add_delta(w, 'v', get_i64(v + ENT_UNTIL), -1) : TF_OK;
}

static int load_nets(tf_index_writer *w)
{
	const void *v;
	size_t vl;

	if (w->nets_loaded)
		return TF_OK;
	memset(w->nets, 0, sizeof w->nets);
	if (!tf_txn_get(w->txn, TF_TBL_META, META_NETS4, strlen(META_NETS4), &v, &vl) &&
	    vl == 8)
		memcpy(&w->nets[0], v, 8);
	if (!tf_txn_get(w->txn, TF_TBL_META, META_NETS6, strlen(META_NETS6), &v, &vl) &&
	    vl == 16)
		memcpy(&w->nets[1], v, 16);
	w->nets_loaded = 1;
	return TF_OK;
}

/* A network value: remember its prefix length, so a lookup of an address
 * probes only the lengths that exist. */
static int note_network(tf_index_writer *w, int kind, const char *value)
{
	const char *slash = strchr(value, '/');
	int64_t len;
	uint64_t bit, *word;

	if (!slash || !tf_obs_addr_bits(kind) || tf_parse_i64(slash + 1, 0, 127, &len))
		return TF_OK;
	load_nets(w);
	word = kind == TF_OBS_IPV4 ? &w->nets[0] : &w->nets[1 + len / 64];
	bit = 1ULL << (len % 64);
	if (!(*word & bit)) {
		*word |= bit;
		w->nets_dirty = 1;
	}
	return TF_OK;
}

/* An entry written by run task at last (first: its first write). */
static int compose(tf_index_writer *w, const char *reckey, const char *value, const char *task,
                   int64_t first, int64_t last, int64_t until, int revoked, size_t *len)
{
	size_t rl = strlen(reckey), vl = strlen(value);
	int lng = vl > TF_OBS_KEY_VALUE;
	uint16_t r16 = (uint16_t)rl;
	unsigned char flags = (unsigned char)((revoked ? F_REVOKED : 0) | (lng ? F_LONG : 0));

	if (reserve(&w->val, &w->valcap, ENT_HDR + rl + (lng ? vl : 0)))
		return TF_ENOMEM;
	memcpy(w->val + ENT_FIRST, &first, 8);
	memcpy(w->val + ENT_LAST, &last, 8);
	memcpy(w->val + ENT_UNTIL, &until, 8);
	w->val[ENT_FLAGS] = (char)flags;
	memcpy(w->val + ENT_TASK, task, TF_UUID_LEN);
	memcpy(w->val + ENT_RLEN, &r16, 2);
	memcpy(w->val + ENT_HDR, reckey, rl);
	if (lng)
		memcpy(w->val + ENT_HDR + rl, value, vl);
	*len = ENT_HDR + rl + (lng ? vl : 0);
	return TF_OK;
}

/* The observables a stored record had, packed, into w->oldpack. */
static int old_observables(tf_index_writer *w, const char *old, size_t oldlen, size_t *plen)
{
	json_object *rec = NULL, *obs = NULL;
	int rc;

	*plen = 0;
	if (!old)
		return TF_OK;
	if (tf_json_parse(old, oldlen, TF_MAX_FEED_JSON_DEPTH + 8, &rec, NULL, 0))
		return TF_OK; /* not ours to judge here: it has no entries we made */
	json_object_object_get_ex(rec, "observables", &obs);
	rc = tf_index_pack(obs, &w->oldpack, &w->oldcap, plen);
	json_object_put(rec);
	return rc;
}

static int put_entry(tf_index_writer *w, const char *reckey, int kind, const char *value,
                     int had_record, int64_t until, int revoked)
{
	char k[KEY_MAX];
	size_t kl = entry_key(k, kind, value, w->feed, reckey), vl, pl = 0;
	const void *cur;
	int64_t first = w->now;
	int rc, prior = 0;

	if (had_record) {
		rc = tf_txn_get(w->txn, TF_TBL_OBS, k, kl, &cur, &pl);
		if (rc && rc != TF_ENOTFOUND)
			return rc;
		if (rc == TF_OK) {
			if (reserve(&w->prior, &w->priorcap, pl ? pl : 1))
				return TF_ENOMEM;
			memcpy(w->prior, cur, pl);
			if ((rc = forget(w, k, kl, w->prior, pl)))
				return rc;
			first = get_i64(w->prior + ENT_FIRST);
			prior = 1;
		}
	}
	if ((rc = compose(w, reckey, value, w->task, first, w->now, until, revoked, &vl)))
		return rc;
	w->digest ^= entry_hash(k, kl, w->val, vl);
	w->entries++;
	w->seen_now++;
	w->changed = 1;
	if (until && (rc = add_delta(w, 'v', until, 1)))
		return rc;
	if ((rc = note_network(w, kind, value)))
		return rc;
	return hold(w, TF_TBL_OBS, k, kl, w->val, vl, 1, prior ? w->prior : NULL, pl);
}

static int drop_entry(tf_index_writer *w, const char *reckey, int kind, const char *value)
{
	char k[KEY_MAX];
	size_t kl = entry_key(k, kind, value, w->feed, reckey), pl;
	const void *cur;
	int rc = tf_txn_get(w->txn, TF_TBL_OBS, k, kl, &cur, &pl);

	if (rc == TF_ENOTFOUND)
		return TF_OK;
	if (rc)
		return rc;
	if (reserve(&w->prior, &w->priorcap, pl ? pl : 1))
		return TF_ENOMEM;
	memcpy(w->prior, cur, pl);
	if ((rc = forget(w, k, kl, w->prior, pl)))
		return rc;
	return hold(w, TF_TBL_OBS, k, kl, NULL, 0, 1, w->prior, pl);
}

int tf_index_record(tf_index_writer *w, const char *key, const char *old, size_t oldlen,
                    const char *packed, size_t plen, int64_t valid_until_us, int revoked)
{
	size_t olen;
	int rc;

	if ((rc = old_observables(w, old, oldlen, &olen)))
		return rc;
	for (const char *p = w->oldpack; p && p < w->oldpack + olen; p += 2 + strlen(p + 1))
		if (!packed_has(packed, plen, p[0], p + 1) && (rc = drop_entry(w, key, p[0], p + 1)))
			return rc;
	for (const char *p = packed; p && p < packed + plen; p += 2 + strlen(p + 1))
		if ((rc = put_entry(w, key, p[0], p + 1, old != NULL, valid_until_us, revoked)))
			return rc;
	return TF_OK;
}

/* A missing entry as the record's run would have written it. */
static int restore_entry(tf_index_writer *w, const char *reckey, int kind, const char *value,
                         const tf_index_origin *o, size_t *added)
{
	char k[KEY_MAX];
	size_t kl = entry_key(k, kind, value, w->feed, reckey), vl;
	const void *cur;
	int rc = tf_txn_get(w->txn, TF_TBL_OBS, k, kl, &cur, &vl);

	if (rc != TF_ENOTFOUND)
		return rc; /* present (kept exactly as it is), or an error */
	if ((rc = compose(w, reckey, value, o->task_id, o->written_us, o->written_us,
	                  o->valid_until_us, o->revoked, &vl)))
		return rc;
	w->digest ^= entry_hash(k, kl, w->val, vl);
	w->entries++;
	w->changed = 1;
	(*added)++;
	if ((rc = add_delta(w, 's', o->written_us, 1)) ||
	    (o->valid_until_us && (rc = add_delta(w, 'v', o->valid_until_us, 1))) ||
	    (rc = note_network(w, kind, value)))
		return rc;
	return hold(w, TF_TBL_OBS, k, kl, w->val, vl, 0, NULL, 0);
}

int tf_index_restore(tf_index_writer *w, const char *key, const char *packed, size_t plen,
                     const tf_index_origin *o, size_t *added)
{
	int rc;

	if (!o->task_id || strlen(o->task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	for (const char *p = packed; p && p < packed + plen; p += 2 + strlen(p + 1))
		if ((rc = restore_entry(w, key, p[0], p + 1, o, added)))
			return rc;
	return TF_OK;
}

static int cmp_delta(const void *a, const void *b)
{
	const struct tdelta *x = a, *y = b;
	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	return x->t < y->t ? -1 : x->t > y->t;
}

/* OBSTIME key: feed NUL kind time(8 BE); times before the epoch count as 0. */
static size_t time_key(char *out, const char *feed, char kind, int64_t t)
{
	size_t fl = strlen(feed);

	memcpy(out, feed, fl + 1);
	out[fl + 1] = kind;
	tf_put_be64((unsigned char *)out + fl + 2, t > 0 ? (uint64_t)t : 0);
	return fl + 10;
}

static int apply_delta(tf_index_writer *w, char kind, int64_t t, int64_t d)
{
	char k[TF_MAX_FEED_ID + 10];
	size_t kl = time_key(k, w->feed, kind, t), vl;
	const void *v;
	int64_t n = 0;
	int rc = tf_txn_get(w->txn, TF_TBL_OBSTIME, k, kl, &v, &vl);

	if (rc && rc != TF_ENOTFOUND)
		return rc;
	if (rc == TF_OK && vl == 8)
		memcpy(&n, v, 8);
	n += d;
	if (n <= 0)
		return hold(w, TF_TBL_OBSTIME, k, kl, NULL, 0, 0, NULL, 0);
	return hold(w, TF_TBL_OBSTIME, k, kl, &n, sizeof n, 0, NULL, 0);
}

static int write_stat(tf_index_writer *w)
{
	uint64_t stat[2] = {0, 0};
	const void *v;
	size_t vl, fl = strlen(w->feed);
	int rc = tf_txn_get(w->txn, TF_TBL_OBSSTAT, w->feed, fl, &v, &vl);

	if (rc && rc != TF_ENOTFOUND)
		return rc;
	if (rc == TF_OK && vl == sizeof stat)
		memcpy(stat, v, sizeof stat);
	stat[0] ^= w->digest;
	stat[1] += (uint64_t)w->entries;
	if (!stat[1])
		return hold(w, TF_TBL_OBSSTAT, w->feed, fl, NULL, 0, 0, NULL, 0);
	return hold(w, TF_TBL_OBSSTAT, w->feed, fl, stat, sizeof stat, 0, NULL, 0);
}

int tf_index_end(tf_index_writer *w)
{
	int rc;

	if (!w->changed)
		return tf_index_flush(w);
	if (w->seen_now && (rc = add_delta(w, 's', w->now, w->seen_now)))
		return rc;
	qsort(w->td, w->ntd, sizeof *w->td, cmp_delta);
	for (size_t i = 0; i < w->ntd;) {
		size_t j = i;
		int64_t d = 0;
		for (; j < w->ntd && !cmp_delta(&w->td[i], &w->td[j]); j++)
			d += w->td[j].d;
		if (d && (rc = apply_delta(w, w->td[i].kind, w->td[i].t, d)))
			return rc;
		i = j;
	}
	if ((rc = write_stat(w)) || (rc = tf_index_flush(w)))
		return rc;
	if (w->nets_dirty &&
	    ((rc = tf_txn_put(w->txn, TF_TBL_META, META_NETS4, strlen(META_NETS4), &w->nets[0], 8)) ||
	     (rc = tf_txn_put(w->txn, TF_TBL_META, META_NETS6, strlen(META_NETS6), &w->nets[1], 16))))
		return rc;
	return tf_txn_put(w->txn, TF_TBL_META, META_MTIME, strlen(META_MTIME), &w->now,
	                  sizeof w->now);
}

static int touch_txn(tf_txn *txn, void *vctx)
{
	int64_t now = tf_now_us();
	(void)vctx;
	return tf_txn_put(txn, TF_TBL_META, META_MTIME, strlen(META_MTIME), &now, sizeof now);
}

int tf_index_touch(tf_store *st)
{
	return tf_store_update(st, touch_txn, NULL);
}

/* Deletes every key of tbl that starts with prefix (plen bytes) and, when
 * feed is set, every TF_TBL_OBS entry of that feed. */
static int del_where(tf_txn *txn, tf_table tbl, const char *prefix, size_t plen, const char *feed)
{
	size_t fl = feed ? strlen(feed) : 0, kl, vl, glen, el;
	const void *k, *v;
	const char *ef;
	tf_cursor *c;
	int rc = tf_cursor_open(txn, tbl, &c);

	if (rc)
		return rc;
	/* LMDB refuses an empty key to seek to */
	rc = plen ? tf_cursor_get(c, TF_SEEK_GE, prefix, plen, &k, &kl, &v, &vl)
	          : tf_cursor_get(c, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK && kl >= plen && !memcmp(k, prefix, plen)) {
		int mine = !feed || (!split_key(k, kl, &glen, &ef, &el) && el == fl &&
		                     !memcmp(ef, feed, fl));
		if (mine && (rc = tf_cursor_del(c)))
			break;
		rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(c);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_index_drop_feed(tf_txn *txn, const char *feed_id)
{
	size_t fl = strlen(feed_id);
	int64_t now = tf_now_us();
	int rc;

	if ((rc = del_where(txn, TF_TBL_OBS, "", 0, feed_id)) ||
	    (rc = del_where(txn, TF_TBL_OBSTIME, feed_id, fl + 1, NULL)))
		return rc;
	rc = tf_txn_del(txn, TF_TBL_OBSSTAT, feed_id, fl);
	if (rc && rc != TF_ENOTFOUND)
		return rc;
	return tf_txn_put(txn, TF_TBL_META, META_MTIME, strlen(META_MTIME), &now, sizeof now);
}

/* ---- reading ------------------------------------------------------------------ */

struct scope_feed {
	char id[TF_MAX_FEED_ID + 1];
	int64_t ttl_us;     /* 0: none */
	int64_t updated_us;
};

struct tf_index_scope {
	int one;            /* a single feed */
	struct scope_feed *f;
	size_t n;
	int64_t now;
	uint64_t nets[3];
};

static int scope_add(tf_index_scope *sc, const char *id, json_object *feed)
{
	json_object *opts = NULL;
	struct scope_feed *f, *grown;
	int64_t ttl = 0, up = 0;
	const char *s;

	if (!(sc->n & (sc->n + 1))) { /* n + 1 a power of two: double */
		if (!(grown = realloc(sc->f, 2 * (sc->n + 1) * sizeof *grown)))
			return TF_ENOMEM;
		sc->f = grown;
	}
	f = &sc->f[sc->n++];
	snprintf(f->id, sizeof f->id, "%s", id);
	if (json_object_object_get_ex(feed, "options", &opts) &&
	    tf_json_get_int(opts, "ttl_days", &ttl) == TF_OK && ttl > 0)
		f->ttl_us = ttl * US_PER_DAY;
	else
		f->ttl_us = 0;
	f->updated_us = (s = tf_json_str(feed, "updated_at")) && !tf_time_parse(s, &up) ? up : 0;
	return TF_OK;
}

static int scope_feed_load(tf_txn *txn, tf_index_scope *sc, const char *id)
{
	json_object *feed;
	int rc = tf_feed_load(txn, id, &feed);

	if (rc)
		return rc;
	rc = scope_add(sc, id, feed);
	json_object_put(feed);
	return rc;
}

static int scope_all(tf_txn *txn, tf_index_scope *sc)
{
	char id[TF_MAX_FEED_ID + 1];
	const void *k, *v;
	size_t kl, vl;
	tf_cursor *c;
	int rc = tf_cursor_open(txn, TF_TBL_FEEDS, &c);

	if (rc)
		return rc;
	for (rc = tf_cursor_get(c, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		json_object *feed;
		if (kl > TF_MAX_FEED_ID)
			continue;
		memcpy(id, k, kl);
		id[kl] = '\0';
		if (tf_json_parse(v, vl, TF_MAX_FEED_JSON_DEPTH, &feed, NULL, 0))
			continue;
		rc = scope_add(sc, id, feed);
		json_object_put(feed);
		if (rc)
			break;
	}
	tf_cursor_close(c);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_index_scope_load(tf_txn *txn, const char *feed_id, int64_t now_us, tf_index_scope **out)
{
	tf_index_scope *sc = calloc(1, sizeof *sc);
	const void *v;
	size_t vl;
	int rc;

	*out = NULL;
	if (!sc)
		return TF_ENOMEM;
	sc->now = now_us;
	sc->one = feed_id != NULL;
	rc = feed_id ? scope_feed_load(txn, sc, feed_id) : scope_all(txn, sc);
	if (!rc && !tf_txn_get(txn, TF_TBL_META, META_NETS4, strlen(META_NETS4), &v, &vl) && vl == 8)
		memcpy(&sc->nets[0], v, 8);
	if (!rc && !tf_txn_get(txn, TF_TBL_META, META_NETS6, strlen(META_NETS6), &v, &vl) && vl == 16)
		memcpy(&sc->nets[1], v, 16);
	if (rc) {
		tf_index_scope_free(sc);
		return rc;
	}
	*out = sc;
	return TF_OK;
}

void tf_index_scope_free(tf_index_scope *sc)
{
	if (sc)
		free(sc->f);
	free(sc);
}

static const struct scope_feed *scope_find(const tf_index_scope *sc, const char *feed, size_t fl)
{
	for (size_t i = 0; i < sc->n; i++)
		if (strlen(sc->f[i].id) == fl && !memcmp(sc->f[i].id, feed, fl))
			return &sc->f[i];
	return NULL;
}

/* One source, copied: PostgreSQL cursors keep only their last two batches. */
struct src_copy {
	char feed[TF_MAX_FEED_ID + 1], rec[TF_MAX_RECORD_KEY + 1], task[TF_UUID_LEN + 1];
};

struct walker {
	const tf_index_scope *sc;
	const tf_index_filter *f;
	tf_index_hit_fn fn;
	void *ctx;
	const char *matched;
	char gkey[GROUP_MAX];
	size_t glen;
	int kind;
	char value[TF_MAX_OBS_VALUE + 1];
	tf_index_source src[TF_MAX_HIT_SOURCES];
	struct src_copy copy[TF_MAX_HIT_SOURCES];
	size_t nsrc, total;
	int live;
};

static int flush(struct walker *wk)
{
	tf_index_hit h;
	int rc = TF_OK;

	if (wk->total) {
		h = (tf_index_hit){.kind = wk->kind, .value = wk->value, .matched = wk->matched,
		                   .src = wk->src, .nsrc = wk->nsrc, .total = wk->total,
		                   .live = wk->live, .key = wk->gkey, .klen = wk->glen};
		rc = wk->fn(&h, wk->ctx);
	}
	wk->glen = 0;
	wk->nsrc = wk->total = 0;
	wk->live = 0;
	return rc;
}

static void start_group(struct walker *wk, const char *k, size_t glen, const char *v, size_t vl)
{
	size_t rl;
	uint16_t r16;

	memcpy(wk->gkey, k, glen);
	wk->glen = glen;
	wk->kind = (unsigned char)k[0];
	memcpy(&r16, v + ENT_RLEN, 2);
	rl = r16;
	if ((v[ENT_FLAGS] & F_LONG) && ENT_HDR + rl <= vl && vl - ENT_HDR - rl <= TF_MAX_OBS_VALUE) {
		memcpy(wk->value, v + ENT_HDR + rl, vl - ENT_HDR - rl);
		wk->value[vl - ENT_HDR - rl] = '\0';
	} else {
		memcpy(wk->value, k + 1, glen - 2);
		wk->value[glen - 2] = '\0';
	}
}

static int expired(const tf_index_scope *sc, const struct scope_feed *f, const char *v)
{
	int64_t until = get_i64(v + ENT_UNTIL);

	return (v[ENT_FLAGS] & F_REVOKED) || (until && until <= sc->now) ||
	       (f->ttl_us && get_i64(v + ENT_LAST) + f->ttl_us <= sc->now);
}

/* One entry (k, v) of the walk; *stop set when the callback ended it. */
static int take(struct walker *wk, const char *k, size_t kl, const char *v, size_t vl)
{
	const struct scope_feed *feed;
	const char *fid;
	size_t glen, fl, rl;
	uint16_t r16;
	int rc, exp;

	if (split_key(k, kl, &glen, &fid, &fl) || vl < ENT_HDR)
		return TF_ESTORE;
	memcpy(&r16, v + ENT_RLEN, 2);
	rl = r16;
	if (ENT_HDR + rl > vl || rl > TF_MAX_RECORD_KEY)
		return TF_ESTORE;
	if (wk->glen && (glen != wk->glen || memcmp(k, wk->gkey, glen)) && (rc = flush(wk)))
		return rc;
	if (!(feed = scope_find(wk->sc, fid, fl)))
		return TF_OK;
	exp = expired(wk->sc, feed, v);
	if (exp && !wk->f->include_expired)
		return TF_OK;
	if (!wk->glen)
		start_group(wk, k, glen, v, vl);
	if (wk->nsrc < TF_MAX_HIT_SOURCES) {
		struct src_copy *cp = &wk->copy[wk->nsrc];
		tf_index_source *s = &wk->src[wk->nsrc++];
		memcpy(cp->feed, fid, fl);
		cp->feed[fl] = '\0';
		memcpy(cp->rec, v + ENT_HDR, rl);
		cp->rec[rl] = '\0';
		memcpy(cp->task, v + ENT_TASK, TF_UUID_LEN);
		cp->task[TF_UUID_LEN] = '\0';
		*s = (tf_index_source){.feed_id = cp->feed, .record_id = cp->rec, .task_id = cp->task,
		                       .first_seen_us = get_i64(v + ENT_FIRST),
		                       .last_seen_us = get_i64(v + ENT_LAST),
		                       .valid_until_us = get_i64(v + ENT_UNTIL),
		                       .revoked = (v[ENT_FLAGS] & F_REVOKED) != 0, .expired = exp};
	}
	wk->total++;
	wk->live |= !exp;
	return TF_OK;
}

static int new_walker(struct walker **out, const tf_index_scope *sc, const tf_index_filter *f,
                      tf_index_hit_fn fn, void *ctx)
{
	struct walker *wk = calloc(1, sizeof *wk);

	if (!(*out = wk))
		return TF_ENOMEM;
	wk->sc = sc;
	wk->f = f;
	wk->fn = fn;
	wk->ctx = ctx;
	return TF_OK;
}

/* rc of a walk: 1 (stopped by the callback) and the end of the table are
 * a walk that went well. */
static int walk_rc(int rc)
{
	return rc == TF_ENOTFOUND || rc == 1 ? TF_OK : rc;
}

int tf_index_walk(tf_txn *txn, const tf_index_scope *sc, const tf_index_filter *f,
                  const void *after, size_t alen, tf_index_hit_fn fn, void *ctx)
{
	char start[GROUP_MAX];
	size_t sl = 0, kl, vl;
	const void *k, *v;
	struct walker *wk;
	tf_cursor *c;
	int rc;

	if (alen > sizeof start || (alen && ((const char *)after)[alen - 1] != '\0'))
		return TF_EINVAL;
	if ((rc = new_walker(&wk, sc, f, fn, ctx)))
		return rc;
	if ((rc = tf_cursor_open(txn, TF_TBL_OBS, &c))) {
		free(wk);
		return rc;
	}
	if (alen) {
		/* the group after `after`: its entries all start "…\0" */
		memcpy(start, after, alen);
		start[alen - 1] = '\x01';
		sl = alen;
	}
	rc = sl ? tf_cursor_get(c, TF_SEEK_GE, start, sl, &k, &kl, &v, &vl)
	        : tf_cursor_get(c, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		int kind = kl ? ((const unsigned char *)k)[0] : 0;
		if (f->kinds && kind < 32 && !(f->kinds & (1u << kind))) {
			/* a kind not wanted: skip to the next kind */
			if ((rc = flush(wk)))
				break;
			start[0] = (char)(kind + 1);
			rc = kind >= 255 ? TF_ENOTFOUND
			                 : tf_cursor_get(c, TF_SEEK_GE, start, 1, &k, &kl, &v, &vl);
			continue;
		}
		if ((rc = take(wk, k, kl, v, vl)))
			break;
		rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	if (rc == TF_ENOTFOUND)
		rc = flush(wk);
	tf_cursor_close(c);
	free(wk);
	return walk_rc(rc);
}

/* Every entry of one value (its group key). */
static int find_group(tf_txn *txn, struct walker *wk, int kind, const char *value)
{
	char g[GROUP_MAX];
	size_t gl = group_key(g, kind, value), kl, vl;
	const void *k, *v;
	tf_cursor *c;
	int rc = tf_cursor_open(txn, TF_TBL_OBS, &c);

	if (rc)
		return rc;
	rc = tf_cursor_get(c, TF_SEEK_GE, g, gl, &k, &kl, &v, &vl);
	while (rc == TF_OK && kl > gl && !memcmp(k, g, gl)) {
		if ((rc = take(wk, k, kl, v, vl)))
			break;
		rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(c);
	if (rc == TF_OK || rc == TF_ENOTFOUND)
		rc = flush(wk);
	return rc;
}

static int prefix_indexed(const tf_index_scope *sc, int kind, int len)
{
	uint64_t word = kind == TF_OBS_IPV4 ? sc->nets[0] : sc->nets[1 + len / 64];
	return (word >> (len % 64)) & 1;
}

/* The networks holding an address, longest prefix first. */
static int find_networks(tf_txn *txn, struct walker *wk, int kind, const char *addr)
{
	char net[TF_MAX_OBS_VALUE + 1];
	int rc = TF_OK;

	for (int len = tf_obs_addr_bits(kind) - 1; !rc && len >= 0; len--)
		if (prefix_indexed(wk->sc, kind, len) && !tf_obs_network(kind, addr, len, net))
			rc = find_group(txn, wk, kind, net);
	return rc;
}

int tf_index_lookup(tf_txn *txn, const tf_index_scope *sc, const tf_index_filter *f,
                    const char *value, int kind, tf_index_hit_fn fn, void *ctx)
{
	tf_obs_cand cand[TF_OBS_MAX_CANDIDATES];
	struct walker *wk;
	int n = 0, rc;

	if (kind) {
		if (tf_obs_normalize(kind, value, cand[0].value, &cand[0].prefix) == TF_OK)
			cand[0].kind = kind, n = 1;
	} else {
		n = tf_obs_candidates(value, cand);
	}
	if ((rc = new_walker(&wk, sc, f, fn, ctx)))
		return rc;
	for (int i = 0; !rc && i < n; i++) {
		if (f->kinds && !(f->kinds & (1u << cand[i].kind)))
			continue;
		wk->matched = cand[i].value;
		rc = find_group(txn, wk, cand[i].kind, cand[i].value);
		if (!rc && tf_obs_addr_bits(cand[i].kind) && cand[i].prefix < 0)
			rc = find_networks(txn, wk, cand[i].kind, cand[i].value);
	}
	free(wk);
	return walk_rc(rc);
}

/* The last time bucket of the feed's kind at or before t: 0 when none. */
static int last_bucket(tf_txn *txn, const char *feed, char kind, int64_t t, int64_t *out)
{
	char key[TF_MAX_FEED_ID + 10], lo[TF_MAX_FEED_ID + 10];
	size_t kl = time_key(key, feed, kind, t < INT64_MAX ? t + 1 : t), ll, fkl, fvl;
	const void *k, *v;
	tf_cursor *c;
	int rc = tf_cursor_open(txn, TF_TBL_OBSTIME, &c);

	*out = 0;
	if (rc)
		return rc;
	ll = time_key(lo, feed, kind, 0) - 8;
	rc = tf_cursor_get(c, TF_SEEK_GE, key, kl, &k, &fkl, &v, &fvl);
	rc = rc == TF_ENOTFOUND ? tf_cursor_get(c, TF_SEEK_LAST, NULL, 0, &k, &fkl, &v, &fvl)
	                        : tf_cursor_get(c, TF_SEEK_PREV, NULL, 0, &k, &fkl, &v, &fvl);
	if (rc == TF_OK && fkl == ll + 8 && !memcmp(k, lo, ll))
		*out = (int64_t)tf_get_be64((const unsigned char *)k + ll);
	tf_cursor_close(c);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_index_state(tf_txn *txn, const tf_index_scope *sc, uint64_t *digest,
                   int64_t *last_modified_us)
{
	uint64_t h = TF_FNV_OFFSET;
	int64_t lm = 0;
	const void *v;
	size_t vl;
	int rc;

	for (size_t i = 0; i < sc->n; i++) {
		const struct scope_feed *f = &sc->f[i];
		uint64_t stat[2] = {0, 0};
		int64_t seen = 0, until = 0;

		rc = tf_txn_get(txn, TF_TBL_OBSSTAT, f->id, strlen(f->id), &v, &vl);
		if (rc && rc != TF_ENOTFOUND)
			return rc;
		if (rc == TF_OK && vl == sizeof stat)
			memcpy(stat, v, sizeof stat);
		if (f->ttl_us && (rc = last_bucket(txn, f->id, 's', sc->now - f->ttl_us, &seen)))
			return rc;
		if ((rc = last_bucket(txn, f->id, 'v', sc->now, &until)))
			return rc;
		if (seen)
			seen += f->ttl_us; /* when those entries expired */
		h = tf_hash64_more(h, f->id, strlen(f->id) + 1);
		h = tf_hash64_more(h, stat, sizeof stat);
		h = tf_hash64_more(h, &f->ttl_us, sizeof f->ttl_us);
		h = tf_hash64_more(h, &seen, sizeof seen);
		h = tf_hash64_more(h, &until, sizeof until);
		lm = seen > lm ? seen : lm;
		lm = until > lm ? until : lm;
		lm = f->updated_us > lm ? f->updated_us : lm;
	}
	rc = tf_txn_get(txn, TF_TBL_META, META_MTIME, strlen(META_MTIME), &v, &vl);
	if (rc == TF_OK && vl == 8) {
		int64_t m;
		memcpy(&m, v, 8);
		lm = m > lm ? m : lm;
	} else if (rc && rc != TF_ENOTFOUND) {
		return rc;
	}
	*digest = h;
	*last_modified_us = lm;
	return TF_OK;
}

/* ---- dump (tests) ----------------------------------------------------------- */

struct dump_ctx {
	char *buf;
	size_t len, cap;
};

static int dump_hex(struct dump_ctx *d, const void *p, size_t n)
{
	if (reserve(&d->buf, &d->cap, d->len + 2 * n + 4))
		return TF_ENOMEM;
	for (size_t i = 0; i < n; i++)
		snprintf(d->buf + d->len + 2 * i, 3, "%02x", ((const unsigned char *)p)[i]);
	d->len += 2 * n;
	return TF_OK;
}

static int dump_txn(tf_txn *txn, void *vctx)
{
	static const tf_table tables[] = {TF_TBL_OBS, TF_TBL_OBSSTAT, TF_TBL_OBSTIME};
	struct dump_ctx *d = vctx;

	d->len = 0;
	for (size_t t = 0; t < sizeof tables / sizeof *tables; t++) {
		const void *k, *v;
		size_t kl, vl;
		tf_cursor *c;
		int rc = tf_cursor_open(txn, tables[t], &c);
		if (rc)
			return rc;
		for (rc = tf_cursor_get(c, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
		     rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
			if ((rc = dump_hex(d, &t, 1)) || (rc = dump_hex(d, k, kl)))
				break;
			d->buf[d->len++] = '=';
			if ((rc = dump_hex(d, v, vl)))
				break;
			d->buf[d->len++] = '\n';
		}
		tf_cursor_close(c);
		if (rc != TF_ENOTFOUND)
			return rc;
	}
	if (reserve(&d->buf, &d->cap, d->len + 1))
		return TF_ENOMEM;
	d->buf[d->len] = '\0';
	return TF_OK;
}

int tf_index_dump(tf_store *st, char **text)
{
	struct dump_ctx d = {0};
	int rc = tf_store_view(st, dump_txn, &d);

	if (rc) {
		free(d.buf);
		d.buf = NULL;
	}
	*text = d.buf;
	return rc;
}
