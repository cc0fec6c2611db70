/* worker/feeds/vt: target classification, VT URL ids, and lookup answers — the
 * real recorded VirusTotal v3 responses of tests/data/vt (malwaredb/vt-client
 * test data, Apache-2.0) with their exact figures, plus every wrong-type and
 * hostile answer the driver must survive. Run from the repository root
 * (scripts/test.sh does), or set TF_TEST_DATA to the tests/data directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "vt.h"

#define REC "malwaredb-vt-client_"
#define SHA_A "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c"
#define SHA_B "fff40032c3dc062147c530e3a0a5c7e6acda4d1f1369fbc994cddd3c19a2de88"

/* ---- targets ------------------------------------------------------------------ */

static void test_classify(void **state)
{
	static const struct {
		const char *in;
		int rc;
		tf_vt_kind kind;
		const char *value, *key;
	} cases[] = {
		{"44d88612fea8a8f36de82e1278abb02f", TF_OK, TF_VT_FILE, "44d88612fea8a8f36de82e1278abb02f",
		 "vt:files:44d88612fea8a8f36de82e1278abb02f"},
		{" 3395856CE81F2B7382DEE72602F798B642F14140\n", TF_OK, TF_VT_FILE,
		 "3395856ce81f2b7382dee72602f798b642f14140",
		 "vt:files:3395856ce81f2b7382dee72602f798b642f14140"},
		{SHA_A, TF_OK, TF_VT_FILE, SHA_A, "vt:files:" SHA_A},
		{"8.8.8.8", TF_OK, TF_VT_IP, "8.8.8.8", "vt:ip_addresses:8.8.8.8"},
		{"2001:DB8:0:0::1", TF_OK, TF_VT_IP, "2001:db8::1", "vt:ip_addresses:2001:db8::1"},
		{"::ffff:192.0.2.1", TF_OK, TF_VT_IP, "::ffff:192.0.2.1", "vt:ip_addresses:::ffff:192.0.2.1"},
		{"haiku-os.org", TF_OK, TF_VT_DOMAIN, "haiku-os.org", "vt:domains:haiku-os.org"},
		{"WWW.Example.COM.", TF_OK, TF_VT_DOMAIN, "www.example.com", "vt:domains:www.example.com"},
		{"_dmarc.example.org", TF_OK, TF_VT_DOMAIN, "_dmarc.example.org",
		 "vt:domains:_dmarc.example.org"},
		{"abcdef.ab", TF_OK, TF_VT_DOMAIN, "abcdef.ab", "vt:domains:abcdef.ab"},
		/* VirusTotal's documented URL id example */
		{"http://www.virustotal.com/", TF_OK, TF_VT_URL, "http://www.virustotal.com/",
		 "vt:urls:aHR0cDovL3d3dy52aXJ1c3RvdGFsLmNvbS8"},
		{"HTTPS://example.com/a?b=c", TF_OK, TF_VT_URL, "HTTPS://example.com/a?b=c",
		 "vt:urls:SFRUUFM6Ly9leGFtcGxlLmNvbS9hP2I9Yw"},
		/* not targets */
		{"", TF_EINVAL, 0, NULL, NULL},
		{"   ", TF_EINVAL, 0, NULL, NULL},
		{"localhost", TF_EINVAL, 0, NULL, NULL},
		{"not a target", TF_EINVAL, 0, NULL, NULL},
		{"44d88612fea8a8f36de82e1278abb02", TF_EINVAL, 0, NULL, NULL},  /* 31 hex: no dot */
		{"44d88612fea8a8f36de82e1278abb02g", TF_EINVAL, 0, NULL, NULL},
		{"1.2.3", TF_OK, TF_VT_DOMAIN, "1.2.3", "vt:domains:1.2.3"},     /* a name, oddly */
		{"a..b", TF_EINVAL, 0, NULL, NULL},
		{".example.com", TF_EINVAL, 0, NULL, NULL},
		{"ex ample.com", TF_EINVAL, 0, NULL, NULL},
		{"example.com/path", TF_EINVAL, 0, NULL, NULL},
		{"ftp://example.com/", TF_EINVAL, 0, NULL, NULL},
		{"http://", TF_EINVAL, 0, NULL, NULL},
		{"http://a\x01" "b/", TF_EINVAL, 0, NULL, NULL},
		{"b\xc3\xbc" "cher.example", TF_EINVAL, 0, NULL, NULL},
		{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example", TF_EINVAL, 0,
		 NULL, NULL}, /* a 64-byte label */
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tf_vt_target t;
		char err[200] = "";
		int rc = tf_vt_classify(cases[i].in, &t, err, sizeof err);

		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %s, want %s (%s)", i, cases[i].in, tf_strerror(rc),
			         tf_strerror(cases[i].rc), err);
		if (rc == TF_OK) {
			assert_int_equal(t.kind, cases[i].kind);
			assert_string_equal(t.value, cases[i].value);
			assert_string_equal(t.key, cases[i].key);
		} else {
			assert_true(err[0] != '\0');
			assert_null(t.key);
		}
		tf_vt_target_free(&t);
	}
	{
		tf_vt_target t;
		char *big = malloc(TF_MAX_URL + 16);
		assert_non_null(big);
		memcpy(big, "http://x/", 9);
		memset(big + 9, 'a', TF_MAX_URL);
		big[TF_MAX_URL + 9] = '\0';
		assert_int_equal(tf_vt_classify(big, &t, NULL, 0), TF_EINVAL);
		assert_int_equal(tf_vt_classify(NULL, &t, NULL, 0), TF_EINVAL);
		free(big);
	}
	assert_string_equal(tf_vt_collection(TF_VT_IP), "ip_addresses");
	assert_string_equal(tf_vt_record_type(TF_VT_URL), "vt-url");
	assert_string_equal(tf_vt_data_type(TF_VT_IP), "ip_address");
}

static void test_base64url(void **state)
{
	/* RFC 4648 §10 test vectors, URL-safe alphabet, no padding */
	static const char *const v[][2] = {
		{"", ""},       {"f", "Zg"},         {"fo", "Zm8"},        {"foo", "Zm9v"},
		{"foob", "Zm9vYg"}, {"fooba", "Zm9vYmE"}, {"foobar", "Zm9vYmFy"},
		{"\xfb\xff\xfe", "-__-"}, {"?>", "Pz4"},
	};
	(void)state;

	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
		char *s = tf_vt_base64url(v[i][0], strlen(v[i][0]));
		assert_non_null(s);
		assert_string_equal(s, v[i][1]);
		free(s);
	}
}

/* ---- the real recorded answers ------------------------------------------------------ */

static void check_recording(const char *file, tf_vt_kind kind, const char *verdict,
                            int64_t malicious, int64_t date, int64_t reputation)
{
	size_t len;
	char *body = tu_data("vt", file, &len), err[200] = "";
	tf_vt_report rep;
	int rc = tf_vt_report_parse(body, len, kind, &rep, err, sizeof err);

	if (rc)
		fail_msg("%s: %s (%s)", file, tf_strerror(rc), err);
	assert_non_null(rep.stats);
	assert_int_equal(rep.malicious, malicious);
	assert_int_equal(rep.suspicious, 0);
	assert_true(rep.has_date);
	assert_int_equal(rep.last_analysis_date, date);
	assert_true(rep.has_reputation);
	assert_int_equal(rep.reputation, reputation);
	assert_string_equal(rep.verdict, verdict);
	tf_vt_report_free(&rep);
	tf_vt_report_free(&rep);
	free(body);
}

static void test_recorded_reports(void **state)
{
	(void)state;
	check_recording(REC SHA_A ".json", TF_VT_FILE, "malicious", 53, 1586546645, 0);
	check_recording(REC SHA_B ".json", TF_VT_FILE, "malicious", 36, 1605619856, 0);
	check_recording(REC "haikuorg.json", TF_VT_DOMAIN, "harmless/undetected", 0, 1742055614, 0);
}

static void test_recorded_record_text(void **state)
{
	size_t len, tl;
	char *body = tu_data("vt", REC "haikuorg.json", &len), err[200];
	tf_vt_target t;
	tf_vt_report rep;
	json_object *obj = NULL, *obs;
	const char *text;
	(void)state;

	assert_int_equal(tf_vt_classify("haiku-os.org", &t, err, sizeof err), TF_OK);
	assert_int_equal(tf_vt_report_parse(body, len, t.kind, &rep, err, sizeof err), TF_OK);
	assert_int_equal(tf_vt_record(&t, &rep, &obj), TF_OK);
	text = tf_json_text(obj, &tl);
	assert_string_equal(text, "{\"target\":\"haiku-os.org\",\"last_analysis_stats\":{\"malicious\":0,"
	                          "\"suspicious\":0,\"undetected\":31,\"harmless\":63,\"timeout\":0},"
	                          "\"reputation\":0,\"last_analysis_date\":1742055614,"
	                          "\"verdict\":\"harmless/undetected\"}");
	json_object_put(obj);
	/* the not-found result */
	assert_int_equal(tf_vt_record(&t, NULL, &obj), TF_OK);
	text = tf_json_text(obj, &tl);
	assert_string_equal(text, "{\"target\":\"haiku-os.org\",\"last_analysis_stats\":null,"
	                          "\"reputation\":null,\"last_analysis_date\":null,"
	                          "\"verdict\":\"not_found\"}");
	json_object_put(obj);
	obs = tf_vt_observables(&t);
	assert_string_equal(tf_json_text(obs, &tl), "[{\"type\":\"domain-name\",\"value\":\"haiku-os.org\"}]");
	json_object_put(obs);
	tf_vt_report_free(&rep);
	tf_vt_target_free(&t);
	free(body);
}

static void test_recorded_errors(void **state)
{
	size_t len;
	char *body, code[64], msg[200], err[200];
	tf_vt_report rep;
	(void)state;

	body = tu_data("vt", REC "not_found.json", &len);
	tf_vt_error(body, len, code, sizeof code, msg, sizeof msg);
	assert_string_equal(code, "NotFoundError");
	assert_string_equal(msg, "File \"fffdddd2c3dc06d147c5ddddddd5c7e6acda4d1f1369fbc994cddd3c19a2de88\" "
	                         "not found");
	/* an error body is not a report */
	assert_int_equal(tf_vt_report_parse(body, len, TF_VT_FILE, &rep, err, sizeof err), TF_EPARSE);
	assert_null(rep.doc);
	free(body);

	body = tu_data("vt", REC "wrong_key.json", &len);
	tf_vt_error(body, len, code, sizeof code, msg, sizeof msg);
	assert_string_equal(code, "WrongCredentialsError");
	assert_string_equal(msg, "Wrong API key");
	free(body);

	/* an analysis (no attributes) is not a lookup answer */
	body = tu_data("vt", REC "rescan.json", &len);
	assert_int_equal(tf_vt_report_parse(body, len, TF_VT_FILE, &rep, err, sizeof err), TF_EPARSE);
	assert_non_null(strstr(err, "attributes"));
	tf_vt_error(body, len, code, sizeof code, msg, sizeof msg);
	assert_string_equal(code, "");
	free(body);

	/* a domain answer to a file lookup is a malformed answer */
	body = tu_data("vt", REC "haikuorg.json", &len);
	assert_int_equal(tf_vt_report_parse(body, len, TF_VT_FILE, &rep, err, sizeof err), TF_EINVAL);
	assert_non_null(strstr(err, "data.type"));
	free(body);

	/* HTML, empty, and odd error bodies */
	tf_vt_error("<html>429</html>", 16, code, sizeof code, msg, sizeof msg);
	assert_string_equal(code, "");
	assert_string_equal(msg, "");
	tf_vt_error(NULL, 0, code, sizeof code, msg, sizeof msg);
	assert_string_equal(code, "");
	tf_vt_error("{\"error\":{\"code\":5,\"message\":\"a\\nb\"}}", 38, code, sizeof code, msg,
	            sizeof msg);
	assert_string_equal(code, "");
	assert_string_equal(msg, "a?b");
}

/* ---- hostile answers --------------------------------------------------------------- */

static void test_answers(void **state)
{
	static const struct {
		const char *body;
		int rc;
		const char *want; /* verdict, or the error text */
	} cases[] = {
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"malicious\":0,"
		 "\"suspicious\":2}}}}",
		 TF_OK, "suspicious"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"malicious\":1,"
		 "\"suspicious\":2}}}}",
		 TF_OK, "malicious"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{}}}}", TF_OK,
		 "harmless/undetected"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{}}}", TF_OK, "unknown"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":null,"
		 "\"reputation\":null,\"last_analysis_date\":null}}}",
		 TF_OK, "unknown"},
		/* the envelope: the run fails */
		{"", TF_EPARSE, "invalid JSON"},
		{"<!DOCTYPE html><html><body>Sign in</body></html>", TF_EPARSE, "invalid JSON"},
		{"[]", TF_EPARSE, "data"},
		{"{}", TF_EPARSE, "data"},
		{"{\"data\":[1,2,3]}", TF_EPARSE, "data"},
		{"{\"data\":null}", TF_EPARSE, "data"},
		{"{\"data\":{\"type\":\"file\"}}", TF_EPARSE, "attributes"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":[]}}", TF_EPARSE, "attributes"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"x\":\"\xff\xfe\"}}}", TF_EPARSE,
		 "invalid JSON"},
		/* fields: the target is skipped */
		{"{\"data\":{\"attributes\":{}}}", TF_EINVAL, "data.type is missing"},
		{"{\"data\":{\"type\":5,\"attributes\":{}}}", TF_EINVAL, "not a string"},
		{"{\"data\":{\"type\":\"url\",\"attributes\":{}}}", TF_EINVAL, "expected \"file\""},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":[]}}}", TF_EINVAL,
		 "last_analysis_stats is not an object"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"malicious\":"
		 "\"many\"}}}}",
		 TF_EINVAL, "last_analysis_stats.malicious"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"harmless\":null}}}}",
		 TF_EINVAL, "last_analysis_stats.harmless"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"x\":-1}}}}",
		 TF_EINVAL, "not a count"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_stats\":{\"x\":1.5}}}}",
		 TF_EINVAL, "not a count"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"reputation\":\"high\"}}}", TF_EINVAL,
		 "reputation"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_date\":\"yesterday\"}}}",
		 TF_EINVAL, "last_analysis_date is not"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_date\":-5}}}", TF_EINVAL,
		 "out of range"},
		{"{\"data\":{\"type\":\"file\",\"attributes\":{\"last_analysis_date\":"
		 "9223372036854775807}}}",
		 TF_EINVAL, "out of range"},
		/* the test upstream's wrong_types "fields" variant */
		{"{\"data\":{\"type\":5,\"id\":[1],\"links\":\"x\",\"attributes\":{\"last_analysis_stats\":"
		 "{\"malicious\":\"many\",\"harmless\":null},\"reputation\":\"high\","
		 "\"last_analysis_date\":\"yesterday\"}}}",
		 TF_EINVAL, "data.type"},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tf_vt_report rep;
		char err[200] = "";
		int rc = tf_vt_report_parse(cases[i].body, strlen(cases[i].body), TF_VT_FILE, &rep, err,
		                            sizeof err);
		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %s, want %s (%s)", i, cases[i].body, tf_strerror(rc),
			         tf_strerror(cases[i].rc), err);
		if (rc == TF_OK)
			assert_string_equal(rep.verdict, cases[i].want);
		else if (!strstr(err, cases[i].want))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].want);
		if (rc)
			assert_null(rep.doc);
		tf_vt_report_free(&rep);
	}
}

static void test_deep_answer(void **state)
{
	int depth = TF_MAX_FEED_JSON_DEPTH + 1;
	char *body = malloc((size_t)depth * 2 + 64), err[200];
	size_t len = (size_t)sprintf(body, "{\"data\":{\"type\":\"file\",\"attributes\":{\"x\":");
	tf_vt_report rep;
	(void)state;

	for (int i = 0; i < depth; i++)
		body[len++] = '[';
	for (int i = 0; i < depth; i++)
		body[len++] = ']';
	len += (size_t)sprintf(body + len, "}}}");
	assert_int_equal(tf_vt_report_parse(body, len, TF_VT_FILE, &rep, err, sizeof err), TF_EPARSE);
	free(body);
}

static void test_observables(void **state)
{
	static const char *const cases[][2] = {
		{"44d88612fea8a8f36de82e1278abb02f", "file:hashes.MD5"},
		{"3395856ce81f2b7382dee72602f798b642f14140", "file:hashes.SHA-1"},
		{SHA_A, "file:hashes.SHA-256"},
		{"192.0.2.1", "ipv4-addr"},
		{"2001:db8::1", "ipv6-addr"},
		{"https://x.example/", "url"},
		{"x.example", "domain-name"},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tf_vt_target t;
		json_object *obs;
		assert_int_equal(tf_vt_classify(cases[i][0], &t, NULL, 0), TF_OK);
		obs = tf_vt_observables(&t);
		assert_non_null(obs);
		assert_int_equal(json_object_array_length(obs), 1);
		assert_string_equal(tf_json_str(json_object_array_get_idx(obs, 0), "type"), cases[i][1]);
		assert_string_equal(tf_json_str(json_object_array_get_idx(obs, 0), "value"), t.value);
		json_object_put(obs);
		tf_vt_target_free(&t);
	}
}

/* One line for the whole paced run: the budget's waits, summed. */
static void test_pacing_note(void **state)
{
	static const struct {
		int rpm;
		size_t lookups;
		const char *want;
	} cases[] = {
		{4, 20, "paced at 4 requests/min (options.requests_per_minute): 20 lookups take "
		        "about 5 min"},                          /* 19 waits of 15 s = 285 s */
		{4, 2, "paced at 4 requests/min (options.requests_per_minute): 2 lookups take "
		       "about 15 s"},
		{4, 8, "paced at 4 requests/min (options.requests_per_minute): 8 lookups take "
		       "about 105 s"},                           /* seconds below 2 min */
		{4, 9, "paced at 4 requests/min (options.requests_per_minute): 9 lookups take "
		       "about 2 min"},
		{4, 6, "paced at 4 requests/min (options.requests_per_minute): 6 lookups take "
		       "about 75 s"},
		{600, 6, "paced at 600 requests/min (options.requests_per_minute): 6 lookups take "
		         "about 1 s"},                           /* 0.5 s rounds up, never 0 s */
		{1000, 2, "paced at 1000 requests/min (options.requests_per_minute): 2 lookups "
		          "take about 1 s"},
		{4, 10000, "paced at 4 requests/min (options.requests_per_minute): 10000 lookups "
		           "take about 41 h 40 min"},            /* 9999 × 15 s = 41 h 39 min 45 s */
		{1, 61, "paced at 1 requests/min (options.requests_per_minute): 61 lookups take "
		        "about 60 min"},
		{1, 91, "paced at 1 requests/min (options.requests_per_minute): 91 lookups take "
		        "about 1 h 30 min"},                     /* hours from 90 min */
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char buf[300];
		tf_vt_pacing_note(cases[i].rpm, cases[i].lookups, buf, sizeof buf);
		assert_string_equal(buf, cases[i].want);
		assert_true(strlen(buf) <= TF_MAX_WARNING_LEN);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_base64url),
		cmocka_unit_test(test_recorded_reports),
		cmocka_unit_test(test_recorded_record_text),
		cmocka_unit_test(test_recorded_errors),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_deep_answer),
		cmocka_unit_test(test_observables),
		cmocka_unit_test(test_pacing_note),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
