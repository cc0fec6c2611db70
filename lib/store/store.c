/* The store's front: picks the backend from the location and forwards. */
#include <string.h>

#include "backend.h"
#include "err.h"
#include "tf_limits.h"

int tf_store_is_pg(const char *location)
{
	return location && (!strncmp(location, "postgresql://", 13) ||
	                    !strncmp(location, "postgres://", 11));
}

static const tf_store_ops *backend_of(const char *location)
{
	return tf_store_is_pg(location) ? &tf_pg_ops : &tf_lmdb_ops;
}

int tf_store_open(tf_store **out, const char *location, size_t map_size, char *err,
                  size_t errlen)
{
	return backend_of(location)->open(out, location, map_size, err, errlen);
}

int tf_store_migrate(const char *location, int *from, int *to, char *err, size_t errlen)
{
	return backend_of(location)->migrate(location, from, to, err, errlen);
}

const char *tf_store_backend(const tf_store *st)
{
	return st->ops->name;
}

void tf_store_close(tf_store *st)
{
	if (st)
		st->ops->close(st);
}

int tf_store_update(tf_store *st, tf_txn_fn fn, void *ctx)
{
	return st->ops->update(st, fn, ctx);
}

int tf_store_view(tf_store *st, tf_txn_fn fn, void *ctx)
{
	return st->ops->view(st, fn, ctx);
}

int tf_txn_get(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void **val,
               size_t *vlen)
{
	return t->ops->get(t, tbl, key, klen, val, vlen);
}

int tf_txn_put(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void *val,
               size_t vlen)
{
	return t->ops->put(t, tbl, key, klen, val, vlen);
}

int tf_txn_del(tf_txn *t, tf_table tbl, const void *key, size_t klen)
{
	return t->ops->del(t, tbl, key, klen);
}

int tf_txn_get_many(tf_txn *t, tf_table tbl, size_t n, const void *const *keys,
                    const size_t *klens, const void **vals, size_t *vlens)
{
	if (t->ops->get_many)
		return t->ops->get_many(t, tbl, n, keys, klens, vals, vlens);
	for (size_t i = 0; i < n; i++) {
		int rc = t->ops->get(t, tbl, keys[i], klens[i], &vals[i], &vlens[i]);
		if (rc == TF_ENOTFOUND)
			vals[i] = NULL, vlens[i] = 0;
		else if (rc)
			return rc;
	}
	return TF_OK;
}





int tf_cursor_open(tf_txn *t, tf_table tbl, tf_cursor **out)
{
	return t->ops->cursor_open(t, tbl, out);
}

int tf_cursor_get(tf_cursor *c, enum tf_seek op, const void *key, size_t klen, const void **k,
                  size_t *kl, const void **v, size_t *vl)
{
	return c->ops->cursor_get(c, op, key, klen, k, kl, v, vl);
}

int tf_cursor_del(tf_cursor *c)
{
	return c->ops->cursor_del(c);
}

void tf_cursor_close(tf_cursor *c)
{
	if (c)
		c->ops->cursor_close(c);
}




int tf_store_set_lazy(tf_store *st, int lazy)
{
	return st->ops->set_lazy(st, lazy);
}

int tf_store_sync(tf_store *st)
{
	return st->ops->sync(st);
}

size_t tf_store_map_size(tf_store *st)
{
	return st->ops->map_size(st);
}

int tf_store_shared(const tf_store *st)
{
	return st->ops->lease != NULL;
}

int tf_store_lease(tf_store *st, const char *name)
{
	return st->ops->lease ? st->ops->lease(st, name) : TF_OK;
}

int tf_txn_lease_held(tf_txn *t, const char *name, int *held)
{
	*held = 0;
	return t->ops->lease_held ? t->ops->lease_held(t, name, held) : TF_EINVAL;
}

int tf_store_notify(tf_store *st, const char *channel)
{
	return st->ops->notify ? st->ops->notify(st, channel) : TF_OK;
}

int tf_store_listen(tf_store *st, const char *channel, int *fd)
{
	*fd = -1;
	return st->ops->listen ? st->ops->listen(st, channel, fd) : TF_EINVAL;
}

int tf_store_notifications(tf_store *st, int *n, int *fd)
{
	*n = 0;
	return st->ops->notifications ? st->ops->notifications(st, n, fd) : TF_EINVAL;
}

int tf_txn_space(tf_txn *t, uint64_t *used, uint64_t *map)
{
	return t->ops->space(t, used, map);
}

int tf_store_signal_write(tf_store *st, const void *key, size_t klen, const void *val,
                          size_t vlen, int raise, void *out, size_t cap, size_t *outlen)
{
	size_t dummy;
	if (!klen || klen > TF_SIGNAL_MAX_KEY || !vlen || vlen > TF_SIGNAL_MAX_VAL)
		return TF_EINVAL;
	return st->ops->signal_write(st, key, klen, val, vlen, raise, out, out ? cap : 0,
	                             outlen ? outlen : &dummy);
}

int tf_store_signal_del(tf_store *st, const void *key, size_t klen)
{
	return st->ops->signal_del(st, key, klen);
}

int tf_txn_signal_get(tf_txn *t, const void *key, size_t klen, void *out, size_t cap,
                      size_t *outlen)
{
	return t->ops->signal_get(t, key, klen, out, cap, outlen);
}

int tf_txn_signal_scan(tf_txn *t, const void *prefix, size_t plen, size_t max, tf_signal_fn fn,
                       void *ctx)
{
	return t->ops->signal_scan(t, prefix, plen, max, fn, ctx);
}
