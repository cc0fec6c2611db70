/* Lookup by observable value across feeds, browsing the index, and the
 * bulk lookup for SIEM enrichment (docs/SPEC.md §8; lib/index.h).
 *
 *   GET  /api/indicators/?value=V[&type=][&include_expired=1][&include_object=1]
 *   GET  /api/indicators/?type=&feed_id=&limit=&cursor=
 *   POST /api/indicators/lookup   {"values":[…], "type", "include_expired", "include_object"} */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "handlers.h"
#include "index.h"
#include "json.h"
#include "tf_limits.h"
#include "records.h"
#include "router.h"
#include "util.h"

struct hits_ctx {
	tf_txn *txn;
	int include_object;
	json_object *arr;      /* where hits go */
	int limit;             /* browsing: hits per page (0: no limit) */
	char next[2 * (2 + TF_OBS_KEY_VALUE) + 1];
	char last[2 * (2 + TF_OBS_KEY_VALUE) + 1];
};

static json_object *time_or_null(int64_t us)
{
	char ts[TF_TIME_LEN + 1];

	if (!us)
		return NULL;
	tf_time_format(us, ts, sizeof ts);
	return json_object_new_string(ts);
}

/* The record's source object ("object" of the stored record), or null. */
static json_object *record_object(tf_txn *txn, const tf_index_source *s)
{
	json_object *rec = NULL, *obj = NULL;
	const char *text;
	size_t len;

	if (tf_records_get(txn, s->feed_id, s->record_id, &text, &len) ||
	    tf_json_parse(text, len, TF_MAX_FEED_JSON_DEPTH + 8, &rec, NULL, 0))
		return NULL;
	if (json_object_object_get_ex(rec, "object", &obj))
		json_object_get(obj);
	json_object_put(rec);
	return obj;
}

static json_object *source_json(struct hits_ctx *c, const tf_index_source *s)
{
	json_object *o = json_object_new_object();

	if (!o)
		return NULL;
	json_object_object_add(o, "feed_id", json_object_new_string(s->feed_id));
	json_object_object_add(o, "record_id", json_object_new_string(s->record_id));
	json_object_object_add(o, "task_id", json_object_new_string(s->task_id));
	json_object_object_add(o, "first_seen", time_or_null(s->first_seen_us));
	json_object_object_add(o, "last_seen", time_or_null(s->last_seen_us));
	json_object_object_add(o, "valid_until", time_or_null(s->valid_until_us));
	json_object_object_add(o, "revoked", json_object_new_boolean(s->revoked));
	json_object_object_add(o, "expired", json_object_new_boolean(s->expired));
	if (c->include_object)
		json_object_object_add(o, "object", record_object(c->txn, s));
	return o;
}

static void hex(char *out, const void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		snprintf(out + 2 * i, 3, "%02x", ((const unsigned char *)p)[i]);
	out[2 * n] = '\0';
}

static int add_hit(const tf_index_hit *h, void *vctx)
{
	struct hits_ctx *c = vctx;
	json_object *o, *feeds;

	if (c->limit && (int)json_object_array_length(c->arr) == c->limit) {
		/* one more exists: the cursor names the last one listed */
		snprintf(c->next, sizeof c->next, "%s", c->last);
		return 1;
	}
	if (!(o = json_object_new_object()) || !(feeds = json_object_new_array())) {
		json_object_put(o);
		return TF_ENOMEM;
	}
	json_object_object_add(o, "value", json_object_new_string(h->value));
	json_object_object_add(o, "type", json_object_new_string(tf_obs_name(h->kind)));
	if (h->matched)
		json_object_object_add(o, "match", json_object_new_string(
		                                       strcmp(h->matched, h->value) ? "network" : "exact"));
	json_object_object_add(o, "expired", json_object_new_boolean(!h->live));
	for (size_t i = 0; i < h->nsrc; i++)
		json_object_array_add(feeds, source_json(c, &h->src[i]));
	json_object_object_add(o, "feeds", feeds);
	json_object_object_add(o, "feeds_total", json_object_new_int64((int64_t)h->total));
	json_object_array_add(c->arr, o);
	if (h->klen <= 2 + TF_OBS_KEY_VALUE)
		hex(c->last, h->key, h->klen);
	return TF_OK;
}

static int unhex(const char *s, char *out, size_t cap, size_t *n)
{
	size_t len = strlen(s);

	if (len % 2 || len / 2 > cap)
		return TF_EINVAL;
	for (size_t i = 0; i < len; i += 2) {
		unsigned v;
		if (!strchr("0123456789abcdef", s[i]) || !strchr("0123456789abcdef", s[i + 1]) ||
		    sscanf(s + i, "%2x", &v) != 1)
			return TF_EINVAL;
		out[i / 2] = (char)v;
	}
	*n = len / 2;
	return TF_OK;
}

/* ---- GET /api/indicators/ ------------------------------------------------------ */

struct get_ctx {
	struct hits_ctx h;
	const char *feed_id, *value, *cursor;
	tf_index_filter f;
	int not_feed, bad_cursor;
};

static int get_txn(tf_txn *txn, void *vctx)
{
	struct get_ctx *c = vctx;
	char after[2 + TF_OBS_KEY_VALUE];
	size_t alen = 0;
	tf_index_scope *sc;
	int rc;

	c->h.txn = txn;
	c->h.next[0] = '\0';
	/* A replayed view starts over. */
	json_object_array_del_idx(c->h.arr, 0, json_object_array_length(c->h.arr));
	if (c->cursor && unhex(c->cursor, after, sizeof after, &alen)) {
		c->bad_cursor = 1;
		return TF_EINVAL;
	}
	rc = tf_index_scope_load(txn, c->feed_id, tf_now_us(), &sc);
	if (rc == TF_ENOTFOUND)
		c->not_feed = 1;
	if (rc)
		return rc;
	if (c->value)
		rc = tf_index_lookup(txn, sc, &c->f, c->value, 0, add_hit, &c->h);
	else
		rc = tf_index_walk(txn, sc, &c->f, alen ? after : NULL, alen, add_hit, &c->h);
	if (rc == TF_EINVAL && alen)
		c->bad_cursor = 1;
	tf_index_scope_free(sc);
	return rc;
}

static int answer_json(tf_resp *resp, json_object *root)
{
	char *json = NULL;
	size_t len = 0;
	int rc = tf_json_dup_text(root, &json, &len);

	json_object_put(root);
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_indicators(tf_app *app, tf_req *req, tf_resp *resp)
{
	const tf_qparam *value = tf_req_query(req, "value"), *type = tf_req_query(req, "type");
	const tf_qparam *feed = tf_req_query(req, "feed_id");
	tf_req_paging pg = tf_req_page(req);
	const tf_qparam *expired = tf_req_query(req, "include_expired");
	const tf_qparam *object = tf_req_query(req, "include_object");
	struct get_ctx c = {.feed_id = feed ? feed->value : NULL,
	                    .value = value ? value->value : NULL,
	                    .cursor = pg.cursor};
	json_object *arr, *root;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	c.f.kinds = type ? (unsigned)type->num : 0;
	c.f.include_expired = expired && expired->num;
	c.h.include_object = object && object->num;
	c.h.limit = value ? 0 : pg.limit;
	if (!(root = tf_json_list_root(value ? "hits" : "indicators", &arr)))
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	c.h.arr = arr;
	rc = tf_store_view(app->st, get_txn, &c);
	if (rc) {
		json_object_put(root);
		if (c.not_feed)
			return tf_resp_error(resp, 404, "not_found", "no such feed");
		if (c.bad_cursor)
			return tf_h_bad_cursor(resp);
		return tf_resp_fail(resp, rc, NULL);
	}
	if (value)
		json_object_object_add(root, "value", json_object_new_string(value->value));
	else
		json_object_object_add(root, "next_cursor",
		                       c.h.next[0] ? json_object_new_string(c.h.next) : NULL);
	return answer_json(resp, root);
}

/* ---- POST /api/indicators/lookup --------------------------------------------- */

struct bulk_ctx {
	struct hits_ctx h;
	json_object *values, *results;
	tf_index_filter f;
};

static int bulk_txn(tf_txn *txn, void *vctx)
{
	struct bulk_ctx *c = vctx;
	tf_index_scope *sc;
	int rc = tf_index_scope_load(txn, NULL, tf_now_us(), &sc);

	if (rc)
		return rc;
	c->h.txn = txn;
	/* A replayed view starts over. */
	json_object_array_del_idx(c->results, 0, json_object_array_length(c->results));
	for (size_t i = 0, n = json_object_array_length(c->values); !rc && i < n; i++) {
		const char *v = json_object_get_string(json_object_array_get_idx(c->values, i));
		json_object *one = json_object_new_object(), *hits = json_object_new_array();
		if (!one || !hits) {
			json_object_put(one);
			json_object_put(hits);
			rc = TF_ENOMEM;
			break;
		}
		json_object_object_add(one, "value", json_object_new_string(v));
		json_object_object_add(one, "hits", hits);
		json_object_array_add(c->results, one);
		c->h.arr = hits;
		rc = tf_index_lookup(txn, sc, &c->f, v, 0, add_hit, &c->h);
	}
	tf_index_scope_free(sc);
	return rc;
}

/* Body checks: 0, or -1 with the error answered. */
static int bulk_body(tf_req *req, tf_resp *resp, struct bulk_ctx *c)
{
	json_object *v;
	const char *type = NULL;

	if (!json_object_object_get_ex(req->json, "values", &c->values) ||
	    !json_object_is_type(c->values, json_type_array))
		return tf_resp_error(resp, 400, "invalid_field", "values: must be an array of strings");
	if (json_object_array_length(c->values) > TF_MAX_LOOKUP_VALUES)
		return tf_resp_error(resp, 413, "payload_too_large",
		                     "values: at most %d per request (%zu given)", TF_MAX_LOOKUP_VALUES,
		                     json_object_array_length(c->values));
	for (size_t i = 0, n = json_object_array_length(c->values); i < n; i++) {
		v = json_object_array_get_idx(c->values, i);
		if (!json_object_is_type(v, json_type_string) || !json_object_get_string_len(v) ||
		    json_object_get_string_len(v) > TF_MAX_OBS_VALUE)
			return tf_resp_error(resp, 400, "invalid_field",
			                     "values[%zu]: must be a string of 1 to %d bytes", i,
			                     TF_MAX_OBS_VALUE);
	}
	if (tf_json_get_str(req->json, "type", &type) == TF_EINVAL ||
	    (type && tf_router_kinds(type, &c->f.kinds)))
		return tf_resp_error(resp, 400, "invalid_field",
		                     "type: not a list of observable types (see GET /api/indicators/)");
	if (tf_json_get_bool(req->json, "include_expired", &c->f.include_expired) == TF_EINVAL ||
	    tf_json_get_bool(req->json, "include_object", &c->h.include_object) == TF_EINVAL)
		return tf_resp_error(resp, 400, "invalid_field",
		                     "include_expired, include_object: must be true or false");
	return 0;
}

int tf_h_indicators_lookup(tf_app *app, tf_req *req, tf_resp *resp)
{
	struct bulk_ctx c = {0};
	json_object *root;
	int rc;

	if (bulk_body(req, resp, &c) || tf_app_store(app, resp))
		return -1;
	if (!(root = tf_json_list_root("results", &c.results)))
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	if ((rc = tf_store_view(app->st, bulk_txn, &c))) {
		json_object_put(root);
		return tf_resp_fail(resp, rc, NULL);
	}
	return answer_json(resp, root);
}
