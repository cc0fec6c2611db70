/* tf_json_parse: the one JSON entry point for API bodies and feed pages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "err.h"
#include "json.h"

static int parse(const char *text, int depth)
{
	json_object *o = NULL;
	char err[128] = "";
	int rc = tf_json_parse(text, strlen(text), depth, &o, err, sizeof err);
	if (rc == TF_OK)
		assert_non_null(o);
	else
		assert_true(err[0] != '\0');
	json_object_put(o);
	return rc;
}

static void accepts_rfc8259(void **state)
{
	(void)state;
	assert_int_equal(parse("{\"a\":\"it's NaN and Infinity\",\"b\":[1e5,true,null,false,-2.5E-3]}", 8), TF_OK);
	assert_int_equal(parse("  [\"\\\"quoted\\\\\", \"\\u00e9\"]\n", 8), TF_OK);
	assert_int_equal(parse("0", 8), TF_OK);
}

static void refuses_what_jsonc_lets_through(void **state)
{
	(void)state;
	assert_int_equal(parse("[NaN]", 8), TF_EINVAL);
	assert_int_equal(parse("[Infinity]", 8), TF_EINVAL);
	assert_int_equal(parse("[-Infinity]", 8), TF_EINVAL);
	assert_int_equal(parse("{'a':1}", 8), TF_EINVAL);
	assert_int_equal(parse("[1e999]", 8), TF_EINVAL);
	assert_int_equal(parse("[truex]", 8), TF_EINVAL);
}

static void refuses_malformed_and_deep(void **state)
{
	(void)state;
	assert_int_equal(parse("{\"a\":1", 8), TF_EINVAL);       /* truncated */
	assert_int_equal(parse("{\"a\":1} x", 8), TF_EINVAL);    /* trailing data */
	assert_int_equal(parse("[[[[[[[[[[1]]]]]]]]]]", 4), TF_EINVAL);
	assert_int_equal(parse("[\"\xff\"]", 8), TF_EINVAL);    /* invalid UTF-8 */
	assert_int_equal(parse("", 8), TF_EINVAL);
}

/* Every ASCII character, those JSON must escape, and UTF-8 come back intact
 * through json-c's parser, as one string. */
static void quote_round_trips(void **state)
{
	char in[300], out[TF_JSON_QUOTED_MAX(300)];
	const char *odd[] = {"", "plain", "a\"b\\c/d", "tab\tnl\ncr\rbs\bff\f", "\x01\x1f\x7f",
	                     "caf\xc3\xa9 \xe2\x82\xac"};
	(void)state;
	for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
		json_object *o = NULL;
		size_t n = tf_json_quote(out, odd[i]);
		assert_true(n <= TF_JSON_QUOTED_MAX(strlen(odd[i])));
		assert_int_equal(tf_json_parse(out, n, 2, &o, NULL, 0), TF_OK);
		assert_true(json_object_is_type(o, json_type_string));
		assert_string_equal(json_object_get_string(o), odd[i]);
		json_object_put(o);
	}
	for (int c = 1; c < 128; c++)
		in[c - 1] = (char)c;
	in[127] = '\0';
	{
		json_object *o = NULL;
		size_t n = tf_json_quote(out, in);
		assert_int_equal(tf_json_parse(out, n, 2, &o, NULL, 0), TF_OK);
		assert_string_equal(json_object_get_string(o), in);
		json_object_put(o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(accepts_rfc8259),
		cmocka_unit_test(refuses_what_jsonc_lets_through),
		cmocka_unit_test(refuses_malformed_and_deep),
		cmocka_unit_test(quote_round_trips),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
