/* Run-end webhooks (worker/webhook.c, lib/feed.c, lib/config.c): the
 * signature against the published HMAC-SHA256 vectors, which answers are
 * retried, the backoff's bound, the settings' validation, and the per-feed
 * webhook_secret being write-only. Delivery itself is tested end to end in
 * tests/integration/test_webhooks.py against a real receiver. */
#include "testutil.h"

#include "config.h"
#include "webhook.h"

#define HOOK_SECRET "hook-s3cret-QUUX"

/* RFC 4231 §4: test cases 1, 2 and 6 (a key longer than SHA-256's block). */
static void sign_matches_rfc4231(void **state)
{
	char key1[21], key6[132], hex[65];
	(void)state;

	memset(key1, 0x0b, 20);
	key1[20] = '\0';
	assert_int_equal(tf_webhook_sign(key1, "Hi There", 8, hex), TF_OK);
	assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
	assert_int_equal(tf_webhook_sign("Jefe", "what do ya want for nothing?", 28, hex), TF_OK);
	assert_string_equal(hex, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	memset(key6, 0xaa, 131);
	key6[131] = '\0';
	assert_int_equal(tf_webhook_sign(key6, "Test Using Larger Than Block-Size Key - Hash Key First",
	                                 54, hex),
	                 TF_OK);
	assert_string_equal(hex, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* The signature covers every byte of the body: one changed byte, or the
 * other secret, gives another one. */
static void sign_covers_the_body(void **state)
{
	const char body[] = "{\"task_id\":\"x\",\"status\":\"completed\"}";
	char a[65], b[65], c[65];
	(void)state;

	assert_int_equal(tf_webhook_sign(HOOK_SECRET, body, sizeof body - 1, a), TF_OK);
	assert_int_equal(tf_webhook_sign(HOOK_SECRET, body, sizeof body - 2, b), TF_OK);
	assert_int_equal(tf_webhook_sign("other", body, sizeof body - 1, c), TF_OK);
	assert_int_equal(strlen(a), 64);
	assert_string_not_equal(a, b);
	assert_string_not_equal(a, c);
}

static void retries_only_what_may_change(void **state)
{
	(void)state;
	assert_true(tf_webhook_retryable(1, 0));     /* refused, timed out, reset */
	assert_true(tf_webhook_retryable(0, 500));
	assert_true(tf_webhook_retryable(0, 503));
	assert_true(tf_webhook_retryable(0, 429));
	assert_false(tf_webhook_retryable(0, 400));
	assert_false(tf_webhook_retryable(0, 401));
	assert_false(tf_webhook_retryable(0, 404));
	assert_false(tf_webhook_retryable(0, 301));
}

static void backoff_doubles_up_to_its_cap(void **state)
{
	int prev = 0;
	(void)state;
	assert_int_equal(tf_webhook_backoff_s(1), TF_WEBHOOK_BACKOFF_S);
	for (int n = 1; n <= 1000; n++) {
		int s = tf_webhook_backoff_s(n);
		assert_true(s >= prev);
		assert_true(s <= TF_WEBHOOK_MAX_BACKOFF_S);
		assert_true(n == 1 || s == TF_WEBHOOK_MAX_BACKOFF_S || s == 2 * prev);
		prev = s;
	}
	assert_int_equal(prev, TF_WEBHOOK_MAX_BACKOFF_S);
}

static void webhook_urls(void **state)
{
	char longer[TF_WEBHOOK_MAX_URL + 2];
	(void)state;
	assert_true(tf_valid_webhook_url("http://127.0.0.1:9000/hook"));
	assert_true(tf_valid_webhook_url("HTTPS://soar.example.test/in?x=1"));
	assert_false(tf_valid_webhook_url("ftp://soar.example.test/"));
	assert_false(tf_valid_webhook_url("http://"));
	assert_false(tf_valid_webhook_url("http:///path"));
	assert_false(tf_valid_webhook_url("http://a b/"));
	assert_false(tf_valid_webhook_url("http://a\n/"));
	assert_false(tf_valid_webhook_url(""));
	memcpy(longer, "http://", 7);
	memset(longer + 7, 'a', sizeof longer - 8);
	longer[sizeof longer - 1] = '\0';
	assert_false(tf_valid_webhook_url(longer));
	longer[sizeof longer - 2] = '\0';
	assert_true(tf_valid_webhook_url(longer));
}

static void config_keys(void **state)
{
	tf_config cfg;
	(void)state;

	assert_int_equal(tu_config(&cfg, "", NULL, 0), TF_OK);
	assert_string_equal(cfg.webhook_url, "");
	assert_int_equal(cfg.webhook_attempts, TF_WEBHOOK_DEFAULT_ATTEMPTS);
	assert_int_equal(cfg.webhook_timeout_s, TF_WEBHOOK_DEFAULT_TIMEOUT_S);
	assert_int_equal(tu_config(&cfg,
	                           "webhook_url = http://127.0.0.1:1/h\nwebhook_secret = " HOOK_SECRET
	                           "\nwebhook_attempts = 3\nwebhook_timeout_s = 2\n",
	                           NULL, 0),
	                 TF_OK);
	assert_string_equal(cfg.webhook_url, "http://127.0.0.1:1/h");
	assert_string_equal(cfg.webhook_secret, HOOK_SECRET);
	assert_int_equal(cfg.webhook_attempts, 3);
	assert_int_equal(cfg.webhook_timeout_s, 2);
	assert_int_equal(tu_config(&cfg, "webhook_url = file:///etc/passwd\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "webhook_attempts = 0\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "webhook_attempts = 11\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "webhook_timeout_s = 61\n", NULL, 0), TF_EINVAL);
}

/* ---- the per-feed webhook in the feed's options ----------------------------------------- */

static json_object *api_feed(tf_store *st, const char *id)
{
	char *text = NULL;
	json_object *o;
	assert_int_equal(tf_feed_read(st, id, &text, NULL), TF_OK);
	if (tu_contains(text, HOOK_SECRET) || tu_contains(text, "\"webhook_secret\""))
		fail_msg("the feed's API form shows its webhook_secret: %s", text);
	o = tu_json(text);
	free(text);
	return o;
}

static int patch(tf_store *st, const char *id, const char *body, char *err, size_t errlen)
{
	json_object *b = tu_json(body);
	char *out = NULL;
	int rc = tf_feed_patch(st, id, b, &out, NULL, err, errlen);
	if (out && (tu_contains(out, HOOK_SECRET) || tu_contains(out, "\"webhook_secret\"")))
		fail_msg("tf_feed_patch answers the webhook_secret: %s", out);
	free(out);
	json_object_put(b);
	return rc;
}

struct pick_ctx {
	const char *id;
	const char *gurl, *gsecret;
	char url[256], secret[256];
	int has_url, has_secret;
};

static int pick_txn(tf_txn *txn, void *vctx)
{
	struct pick_ctx *c = vctx;
	json_object *feed = NULL;
	const char *u, *k;
	int rc = tf_feed_load(txn, c->id, &feed);
	if (rc)
		return rc;
	tf_feed_webhook(feed, c->gurl, c->gsecret, &u, &k);
	c->has_url = u != NULL;
	c->has_secret = k != NULL;
	snprintf(c->url, sizeof c->url, "%s", u ? u : "");
	snprintf(c->secret, sizeof c->secret, "%s", k ? k : "");
	json_object_put(feed);
	return TF_OK;
}

static struct pick_ctx pick(tf_store *st, const char *gurl, const char *gsecret)
{
	struct pick_ctx c = {.id = "h1", .gurl = gurl, .gsecret = gsecret};
	assert_int_equal(tf_store_view(st, pick_txn, &c), TF_OK);
	return c;
}

static void feed_options_webhook(void **state)
{
	tf_store *st = tu_new_store("hookfeed", NULL, 0);
	json_object *body = tu_json("{\"id\":\"h1\",\"name\":\"Hooked\",\"type\":\"stix_bundle\","
	                            "\"url\":\"http://127.0.0.1:1/b.json\"}");
	json_object *o, *opts, *v;
	char *out = NULL, err[256] = "";
	struct pick_ctx p;
	(void)state;

	assert_int_equal(tf_feed_create(st, body, &out, NULL, err, sizeof err), TF_OK);
	json_object_put(body);
	free(out);
	/* none of its own: the global one, or none */
	p = pick(st, "http://127.0.0.1:2/global", "gsecret");
	assert_true(p.has_url);
	assert_string_equal(p.url, "http://127.0.0.1:2/global");
	assert_string_equal(p.secret, "gsecret");
	p = pick(st, "", "");
	assert_false(p.has_url);
	assert_false(p.has_secret);
	/* bad values are refused with what is wrong */
	assert_int_equal(patch(st, "h1", "{\"options\":{\"webhook_url\":\"gopher://x/\"}}", err,
	                       sizeof err),
	                 TF_EINVAL);
	assert_true(tu_contains(err, "options.webhook_url"));
	assert_int_equal(patch(st, "h1", "{\"options\":{\"webhook_secret\":\"\"}}", err, sizeof err),
	                 TF_EINVAL);
	assert_true(tu_contains(err, "options.webhook_secret"));
	assert_int_equal(patch(st, "h1", "{\"options\":{\"webhook_secret\":5}}", err, sizeof err),
	                 TF_EINVAL);
	/* its own override the global ones; the secret is never shown */
	assert_int_equal(patch(st, "h1",
	                       "{\"options\":{\"webhook_url\":\"http://127.0.0.1:3/own\","
	                       "\"webhook_secret\":\"" HOOK_SECRET "\",\"ttl_days\":7}}",
	                       err, sizeof err),
	                 TF_OK);
	p = pick(st, "http://127.0.0.1:2/global", "gsecret");
	assert_string_equal(p.url, "http://127.0.0.1:3/own");
	assert_string_equal(p.secret, HOOK_SECRET);
	o = api_feed(st, "h1");
	assert_true(json_object_object_get_ex(o, "options", &opts));
	assert_string_equal(tf_json_str(opts, "webhook_url"), "http://127.0.0.1:3/own");
	assert_true(json_object_object_get_ex(opts, "has_webhook_secret", &v));
	assert_true(json_object_get_boolean(v));
	/* sending back what was read keeps the secret (it was never shown) */
	{
		char *text = NULL;
		json_object *back = json_object_new_object();
		json_object_object_add(back, "options", json_object_get(opts));
		text = strdup(json_object_to_json_string(back));
		json_object_put(back);
		assert_int_equal(patch(st, "h1", text, err, sizeof err), TF_OK);
		free(text);
	}
	json_object_put(o);
	p = pick(st, NULL, NULL);
	assert_string_equal(p.secret, HOOK_SECRET);
	/* options without the secret replace the others and keep it */
	assert_int_equal(patch(st, "h1", "{\"options\":{\"ttl_days\":9}}", err, sizeof err), TF_OK);
	p = pick(st, "http://127.0.0.1:2/global", NULL);
	assert_string_equal(p.url, "http://127.0.0.1:2/global");
	assert_string_equal(p.secret, HOOK_SECRET);
	/* null clears it: the global secret applies again */
	assert_int_equal(patch(st, "h1", "{\"options\":{\"webhook_secret\":null}}", err, sizeof err),
	                 TF_OK);
	p = pick(st, "http://127.0.0.1:2/global", "gsecret");
	assert_string_equal(p.secret, "gsecret");
	o = api_feed(st, "h1");
	assert_true(json_object_object_get_ex(o, "options", &opts));
	assert_false(json_object_object_get_ex(opts, "has_webhook_secret", NULL));
	json_object_put(o);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(sign_matches_rfc4231),
		cmocka_unit_test(sign_covers_the_body),
		cmocka_unit_test(retries_only_what_may_change),
		cmocka_unit_test(backoff_doubles_up_to_its_cap),
		cmocka_unit_test(webhook_urls),
		cmocka_unit_test(config_keys),
		cmocka_unit_test(feed_options_webhook),
	};
	tu_init("webhook");
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
