/* worker/feeds/otx: the OTX page envelope, pulses, indicators → records, next-URL
 * checks, on the fixtures of tests/data/otx (synthetic pages in the shapes of
 * docs/FEEDS.md) with exact counts, and every wrong-type and hostile case the
 * driver must survive. Run from the repository root (scripts/test.sh does),
 * or set TF_TEST_DATA to the tests/data directory. */
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
#include "otx.h"
#include "util.h"

/* 2024-01-01T00:00:00Z: "now" for expiration checks */
#define NOW_US 1704067200000000LL

static void load_page(const char *name, tf_otx_page *page)
{
	size_t len;
	char *text = tu_data("otx", name, &len), err[200] = "";
	int rc = tf_otx_page_parse(text, len, page, err, sizeof err);

	if (rc)
		fail_msg("%s: %s (%s)", name, tf_strerror(rc), err);
	free(text);
}

/* What a page gives, the way the driver walks it. */
typedef struct tally {
	size_t pulses, bad_pulses, records, inactive, expired, bad_indicators, more;
	char keys[4096];          /* "key type value obs;" per record */
} tally;

static void walk(const tf_otx_page *page, tally *t)
{
	memset(t, 0, sizeof *t);
	for (size_t i = 0; i < page->n; i++) {
		tf_otx_pulse p;
		char err[200];
		json_object *list;

		t->pulses++;
		if (tf_otx_pulse_read(json_object_array_get_idx(page->results, i), &p, err,
		                      sizeof err)) {
			t->bad_pulses++;
			continue;
		}
		t->more += (size_t)p.more_indicators;
		list = p.indicators;
		for (size_t k = 0; list && k < json_object_array_length(list); k++) {
			tf_otx_rec rec;
			int rc = tf_otx_indicator(&p, json_object_array_get_idx(list, k), NOW_US, &rec,
			                          err, sizeof err);
			if (rc == TF_ENOTFOUND) {
				if (rec.skip == TF_OTX_INACTIVE)
					t->inactive++;
				else
					t->expired++;
				continue;
			}
			if (rc == TF_EINVAL) {
				t->bad_indicators++;
				continue;
			}
			assert_int_equal(rc, TF_OK);
			t->records++;
			{
				size_t used = strlen(t->keys);
				const char *obs = "-";
				if (rec.observables)
					obs = tf_json_str(json_object_array_get_idx(rec.observables, 0), "type");
				snprintf(t->keys + used, sizeof t->keys - used, "%s %s %s;", rec.key,
				         rec.type, obs);
			}
			tf_otx_rec_free(&rec);
		}
		tf_otx_pulse_free(&p);
	}
}

/* ---- fixtures ---------------------------------------------------------------- */

static void test_page1_counts(void **state)
{
	tf_otx_page page;
	tally t;
	(void)state;

	load_page("subscribed_page1.json", &page);
	assert_int_equal(page.n, 2);
	assert_int_equal(page.count, 3);
	assert_non_null(page.next);
	assert_true(strstr(page.next, "page=2") != NULL);
	walk(&page, &t);
	assert_int_equal(t.pulses, 2);
	assert_int_equal(t.bad_pulses, 0);
	assert_int_equal(t.records, 11);
	assert_int_equal(t.inactive, 1);
	assert_int_equal(t.expired, 1);
	assert_int_equal(t.bad_indicators, 0);
	assert_int_equal(t.more, 0);
	/* every OTX type, its observable vocabulary; unknown → none */
	assert_string_equal(
	    t.keys,
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345001 IPv4 ipv4-addr;"
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345002 IPv6 ipv6-addr;"
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345003 domain domain-name;"
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345004 hostname domain-name;"
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345005 URL url;"
	    "otx:64e47c8a1f3b2a5d6c7e8f90:3312345006 email email-addr;"
	    "otx:64e47d001f3b2a5d6c7e8f91:3312345101 FileHash-MD5 file:hashes.MD5;"
	    "otx:64e47d001f3b2a5d6c7e8f91:3312345102 FileHash-SHA1 file:hashes.SHA-1;"
	    "otx:64e47d001f3b2a5d6c7e8f91:3312345103 FileHash-SHA256 file:hashes.SHA-256;"
	    "otx:64e47d001f3b2a5d6c7e8f91:3312345104 CVE -;"
	    "otx:64e47d001f3b2a5d6c7e8f91:3312345105 YARA -;");
	tf_otx_page_free(&page);
}

static void test_record_object(void **state)
{
	tf_otx_page page;
	tf_otx_pulse p;
	tf_otx_rec rec;
	json_object *obj = NULL, *pulse, *v;
	char err[200];
	int64_t want;
	(void)state;

	load_page("subscribed_page1.json", &page);
	assert_int_equal(tf_otx_pulse_read(json_object_array_get_idx(page.results, 1), &p, err,
	                                   sizeof err),
	                 TF_OK);
	assert_string_equal(p.id, "64e47d001f3b2a5d6c7e8f91");
	/* modified, zone-less = UTC, microseconds kept */
	assert_int_equal(tf_time_parse("2023-08-23T11:30:45.123456Z", &want), TF_OK);
	assert_int_equal(p.modified_us, want);
	assert_string_equal(p.modified, "2023-08-23T11:30:45.123456");
	assert_int_equal(tf_otx_indicator(&p, json_object_array_get_idx(p.indicators, 0), NOW_US,
	                                  &rec, err, sizeof err),
	                 TF_OK);
	assert_string_equal(rec.key, "otx:64e47d001f3b2a5d6c7e8f91:3312345101");
	assert_string_equal(rec.type, "FileHash-MD5");
	assert_string_equal(rec.value, "44d88612fea8a8f36de82e1278abb02f");
	assert_int_equal(rec.modified_us, want);
	assert_int_equal(strlen(rec.text), rec.len);
	/* compact, one line, parses back: the indicator plus the pulse */
	assert_null(strchr(rec.text, '\n'));
	assert_int_equal(tf_json_parse(rec.text, rec.len, 16, &obj, err, sizeof err), TF_OK);
	assert_string_equal(tf_json_str(obj, "indicator"), "44d88612fea8a8f36de82e1278abb02f");
	assert_string_equal(tf_json_str(obj, "description"), "EICAR");
	assert_true(json_object_object_get_ex(obj, "id", &v));
	assert_int_equal(json_object_get_int64(v), 3312345101LL);
	assert_true(json_object_object_get_ex(obj, "pulse", &pulse));
	assert_string_equal(tf_json_str(pulse, "id"), "64e47d001f3b2a5d6c7e8f91");
	assert_string_equal(tf_json_str(pulse, "name"), "Loader \"SmokeLdr\" hashes");
	assert_string_equal(tf_json_str(pulse, "tlp"), "green");
	assert_string_equal(tf_json_str(pulse, "modified"), "2023-08-23T11:30:45.123456");
	assert_true(json_object_object_get_ex(pulse, "tags", &v));
	assert_int_equal(json_object_array_length(v), 0);
	/* observables: exactly one, the hash */
	assert_int_equal(json_object_array_length(rec.observables), 1);
	assert_string_equal(tf_json_str(json_object_array_get_idx(rec.observables, 0), "value"),
	                    "44d88612fea8a8f36de82e1278abb02f");
	json_object_put(obj);
	tf_otx_rec_free(&rec);
	tf_otx_pulse_free(&p);
	tf_otx_page_free(&page);
}

static void test_expiry_is_relative_to_now(void **state)
{
	tf_otx_page page;
	tf_otx_pulse p;
	tf_otx_rec rec;
	json_object *ind;
	char err[200];
	int64_t later;
	(void)state;

	load_page("subscribed_page1.json", &page);
	assert_int_equal(tf_otx_pulse_read(json_object_array_get_idx(page.results, 0), &p, err,
	                                   sizeof err),
	                 TF_OK);
	/* indicators[6] expired on 2023-02-01: kept before, skipped after */
	ind = json_object_array_get_idx(p.indicators, 6);
	assert_int_equal(tf_otx_indicator(&p, ind, 0, &rec, err, sizeof err), TF_OK);
	tf_otx_rec_free(&rec);
	assert_int_equal(tf_otx_indicator(&p, ind, NOW_US, &rec, err, sizeof err), TF_ENOTFOUND);
	assert_int_equal(rec.skip, TF_OTX_EXPIRED);
	assert_non_null(strstr(err, "expired"));
	/* indicators[0] expires in 2099 */
	ind = json_object_array_get_idx(p.indicators, 0);
	assert_int_equal(tf_time_parse("2099-09-21T00:00:01Z", &later), TF_OK);
	assert_int_equal(tf_otx_indicator(&p, ind, NOW_US, &rec, err, sizeof err), TF_OK);
	tf_otx_rec_free(&rec);
	assert_int_equal(tf_otx_indicator(&p, ind, later, &rec, err, sizeof err), TF_ENOTFOUND);
	/* inactive stays skipped whatever the time */
	ind = json_object_array_get_idx(p.indicators, 7);
	assert_int_equal(tf_otx_indicator(&p, ind, 0, &rec, err, sizeof err), TF_ENOTFOUND);
	assert_int_equal(rec.skip, TF_OTX_INACTIVE);
	tf_otx_pulse_free(&p);
	tf_otx_page_free(&page);
}

static void test_last_page_and_more_indicators(void **state)
{
	tf_otx_page page, ind;
	tf_otx_pulse p;
	char err[200];
	size_t records = 0;
	(void)state;

	load_page("subscribed_page2.json", &page);
	assert_null(page.next);
	assert_int_equal(page.n, 1);
	assert_int_equal(tf_otx_pulse_read(json_object_array_get_idx(page.results, 0), &p, err,
	                                   sizeof err),
	                 TF_OK);
	assert_true(p.more_indicators);
	load_page("pulse_indicators.json", &ind);
	assert_null(ind.next);
	for (size_t i = 0; i < ind.n; i++) {
		tf_otx_rec rec;
		assert_int_equal(tf_otx_indicator(&p, json_object_array_get_idx(ind.results, i),
		                                  NOW_US, &rec, err, sizeof err),
		                 TF_OK);
		records++;
		if (i == 2) {
			/* an unknown type is data: kept, no observables */
			assert_string_equal(rec.type, "X-Future-Type");
			assert_null(rec.observables);
		}
		tf_otx_rec_free(&rec);
	}
	assert_int_equal(records, 3);
	tf_otx_pulse_free(&p);
	tf_otx_page_free(&ind);
	tf_otx_page_free(&page);
}

static void test_wrong_types_fixture(void **state)
{
	tf_otx_page page;
	tally t;
	(void)state;

	/* "count":"many" is not fatal: percent just stays unknown */
	load_page("wrong_types.json", &page);
	assert_int_equal(page.count, -1);
	walk(&page, &t);
	assert_int_equal(t.pulses, 10);
	assert_int_equal(t.bad_pulses, 9);
	assert_int_equal(t.bad_indicators, 9);
	assert_int_equal(t.records, 1);
	assert_string_equal(t.keys, "otx:64e47c8a1f3b2a5d6c7e8f93:7 domain domain-name;");
	tf_otx_page_free(&page);
}

/* ---- envelopes ---------------------------------------------------------------- */

static void test_envelopes(void **state)
{
	static const struct {
		const char *body;
		int rc;
		const char *err;
	} cases[] = {
		{"{\"results\":[]}", TF_OK, NULL},
		{"{\"results\":[],\"next\":null,\"count\":0}", TF_OK, NULL},
		{"{\"results\":[],\"next\":\"\"}", TF_OK, NULL},
		{"  {\"results\":[{}]}\n", TF_OK, NULL},
		{"", TF_EPARSE, "invalid JSON"},
		{"<!DOCTYPE html><html></html>", TF_EPARSE, "invalid JSON"},
		{"{\"results\":[]} x", TF_EPARSE, "invalid JSON"},
		{"[]", TF_EPARSE, "object"},
		{"\"results\"", TF_EPARSE, "object"},
		{"{}", TF_EPARSE, "no \"results\""},
		{"{\"results\":null}", TF_EPARSE, "no \"results\""},
		{"{\"results\":{\"a\":1}}", TF_EPARSE, "not an array"},
		{"{\"results\":\"[]\"}", TF_EPARSE, "not an array"},
		{"{\"results\":[],\"next\":5}", TF_EPARSE, "next"},
		{"{\"results\":[],\"next\":[\"http://x/\"]}", TF_EPARSE, "next"},
		{"{\"results\":[],\"next\":\"http://x/\\u0000y\"}", TF_EPARSE, "NUL"},
		/* the test upstream's wrong_types envelope variant */
		{"{\"count\":{},\"next\":5,\"previous\":[],\"results\":{\"a\":1}}", TF_EPARSE, "results"},
		/* invalid UTF-8 */
		{"{\"results\":[{\"name\":\"\xff\xfe\xc3\x28\"}]}", TF_EPARSE, "invalid JSON"},
		{"{\"results\":[], \"count\": -5}", TF_OK, NULL},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		tf_otx_page page;
		char err[200] = "";
		int rc = tf_otx_page_parse(cases[i].body, strlen(cases[i].body), &page, err,
		                           sizeof err);
		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %s, want %s (%s)", i, cases[i].body, tf_strerror(rc),
			         tf_strerror(cases[i].rc), err);
		if (cases[i].err && !strstr(err, cases[i].err))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].err);
		if (rc == TF_OK)
			assert_int_equal(page.count, -1 + (strstr(cases[i].body, "\"count\":0") ? 1 : 0));
		else
			assert_null(page.doc);
		tf_otx_page_free(&page);
		tf_otx_page_free(&page); /* twice is harmless */
	}
}

static void test_limits(void **state)
{
	size_t n = TF_MAX_PAGE_OBJECTS + 1, len = 0;
	char *big = malloc(16 + 3 * n), err[200];
	tf_otx_page page;
	int depth = TF_MAX_FEED_JSON_DEPTH + 1;
	(void)state;

	/* more than TF_MAX_PAGE_OBJECTS results */
	assert_non_null(big);
	len += (size_t)sprintf(big, "{\"results\":[");
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(big + len, "%s{}", i ? "," : "");
	len += (size_t)sprintf(big + len, "]}");
	assert_int_equal(tf_otx_page_parse(big, len, &page, err, sizeof err), TF_ELIMIT);
	assert_non_null(strstr(err, "limit"));
	/* exactly the limit is fine */
	len = (size_t)sprintf(big, "{\"results\":[");
	for (size_t i = 0; i < n - 1; i++)
		len += (size_t)sprintf(big + len, "%s{}", i ? "," : "");
	len += (size_t)sprintf(big + len, "]}");
	assert_int_equal(tf_otx_page_parse(big, len, &page, err, sizeof err), TF_OK);
	assert_int_equal(page.n, TF_MAX_PAGE_OBJECTS);
	tf_otx_page_free(&page);
	/* nesting deeper than TF_MAX_FEED_JSON_DEPTH */
	len = (size_t)sprintf(big, "{\"results\":");
	for (int i = 0; i < depth; i++)
		big[len++] = '[';
	for (int i = 0; i < depth; i++)
		big[len++] = ']';
	big[len++] = '}';
	assert_int_equal(tf_otx_page_parse(big, len, &page, err, sizeof err), TF_EPARSE);
	/* a next longer than TF_MAX_URL */
	free(big);
	big = malloc(TF_MAX_URL + 64);
	assert_non_null(big);
	len = (size_t)sprintf(big, "{\"results\":[],\"next\":\"http://h/");
	memset(big + len, 'a', TF_MAX_URL);
	len += TF_MAX_URL;
	len += (size_t)sprintf(big + len, "\"}");
	assert_int_equal(tf_otx_page_parse(big, len, &page, err, sizeof err), TF_EPARSE);
	assert_non_null(strstr(err, "longer"));
	free(big);
}

/* ---- pulses and indicators -------------------------------------------------------- */

static void test_pulse_cases(void **state)
{
	static const struct {
		const char *json;
		int rc;
		const char *err;
	} cases[] = {
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\"}", TF_OK, NULL},
		{"{\"id\":\"abc\",\"created\":\"2023-08-22T09:43:18.5\"}", TF_OK, NULL},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18Z\",\"name\":null,\"tlp\":null,"
		 "\"tags\":null,\"indicators\":null,\"more_indicators\":null}",
		 TF_OK, NULL},
		{"{\"id\":\"a_b-c.d\",\"modified\":\"2023-08-22 09:43:18\"}", TF_OK, NULL},
		{"[]", TF_EINVAL, "not a JSON object"},
		{"{\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "no id"},
		{"{\"id\":null,\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "no id"},
		{"{\"id\":5,\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "not a string"},
		{"{\"id\":\"\",\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "pulse id"},
		{"{\"id\":\"a:b\",\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "pulse id"},
		{"{\"id\":\"a/b\",\"modified\":\"2023-08-22T09:43:18\"}", TF_EINVAL, "pulse id"},
		{"{\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
		 "\"modified\":\"2023-08-22T09:43:18\"}",
		 TF_EINVAL, "pulse id"},
		{"{\"id\":\"abc\"}", TF_EINVAL, "neither"},
		{"{\"id\":\"abc\",\"modified\":5}", TF_EINVAL, "modified is not a string"},
		{"{\"id\":\"abc\",\"modified\":\"soon\"}", TF_EINVAL, "not a timestamp"},
		{"{\"id\":\"abc\",\"created\":\"2023-08-22T09:43:18\",\"modified\":\"x\"}", TF_EINVAL,
		 "modified"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"name\":[]}", TF_EINVAL, "name"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"tlp\":1}", TF_EINVAL, "tlp"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"tags\":\"a\"}", TF_EINVAL,
		 "tags"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"tags\":[\"a\",{}]}", TF_EINVAL,
		 "tags[1]"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"indicators\":{}}", TF_EINVAL,
		 "indicators"},
		{"{\"id\":\"abc\",\"modified\":\"2023-08-22T09:43:18\",\"more_indicators\":1}",
		 TF_EINVAL, "more_indicators"},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_object *o = NULL;
		tf_otx_pulse p;
		char err[200] = "";
		int rc;

		assert_int_equal(tf_json_parse(cases[i].json, strlen(cases[i].json), 16, &o, NULL, 0),
		                 TF_OK);
		rc = tf_otx_pulse_read(o, &p, err, sizeof err);
		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %s, want %s (%s)", i, cases[i].json, tf_strerror(rc),
			         tf_strerror(cases[i].rc), err);
		if (cases[i].err && !strstr(err, cases[i].err))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].err);
		if (!rc)
			assert_non_null(p.meta);
		tf_otx_pulse_free(&p);
		json_object_put(o);
	}
	/* not even JSON */
	{
		tf_otx_pulse p;
		assert_int_equal(tf_otx_pulse_read(NULL, &p, NULL, 0), TF_EINVAL);
	}
}

static void test_indicator_cases(void **state)
{
	static const struct {
		const char *json;
		int rc;
		const char *want; /* key, or the error text */
	} cases[] = {
		{"{\"id\":1,\"indicator\":\"a.example\",\"type\":\"domain\"}", TF_OK, "otx:P1:1"},
		{"{\"id\":0,\"indicator\":\"a\",\"type\":\"Some Type.v2_x-y\"}", TF_OK, "otx:P1:0"},
		{"{\"id\":9223372036854775807,\"indicator\":\"a\",\"type\":\"t\"}", TF_OK,
		 "otx:P1:9223372036854775807"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":1,\"expiration\":\"\"}",
		 TF_OK, "otx:P1:1"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":true,\"expiration\":null}",
		 TF_OK, "otx:P1:1"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":0}", TF_ENOTFOUND,
		 "inactive"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":false}", TF_ENOTFOUND,
		 "inactive"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"expiration\":\"2020-01-01T00:00:00\"}",
		 TF_ENOTFOUND, "expired"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"expiration\":\"2020-01-01T00:00:00Z\"}",
		 TF_ENOTFOUND, "expired"},
		{"[5]", TF_EINVAL, "not a JSON object"},
		{"{\"indicator\":\"a\",\"type\":\"t\"}", TF_EINVAL, "no id"},
		{"{\"id\":\"1\",\"indicator\":\"a\",\"type\":\"t\"}", TF_EINVAL, "id is not"},
		{"{\"id\":1.5,\"indicator\":\"a\",\"type\":\"t\"}", TF_EINVAL, "id is not"},
		{"{\"id\":-1,\"indicator\":\"a\",\"type\":\"t\"}", TF_EINVAL, "id is not"},
		{"{\"id\":1,\"type\":\"t\"}", TF_EINVAL, "no value"},
		{"{\"id\":1,\"indicator\":7,\"type\":\"t\"}", TF_EINVAL, "not a non-empty string"},
		{"{\"id\":1,\"indicator\":\"\",\"type\":\"t\"}", TF_EINVAL, "not a non-empty string"},
		{"{\"id\":1,\"indicator\":\"a\\u0000b\",\"type\":\"t\"}", TF_EINVAL, "NUL"},
		{"{\"id\":1,\"indicator\":\"a\"}", TF_EINVAL, "no type"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":[\"IPv4\"]}", TF_EINVAL, "type is not"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"\"}", TF_EINVAL, "type is not"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"a:b\"}", TF_EINVAL, "type is not"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":\"1\"}", TF_EINVAL,
		 "is_active"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"is_active\":1.0}", TF_EINVAL,
		 "is_active"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"expiration\":5}", TF_EINVAL,
		 "expiration"},
		{"{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"expiration\":\"never\"}", TF_EINVAL,
		 "expiration"},
	};
	json_object *po = NULL;
	tf_otx_pulse p;
	char err[200];
	(void)state;

	const char *pulse = "{\"id\":\"P1\",\"modified\":\"2023-08-22T09:43:18\"}";

	assert_int_equal(tf_json_parse(pulse, strlen(pulse), 8, &po, NULL, 0), TF_OK);
	assert_int_equal(tf_otx_pulse_read(po, &p, err, sizeof err), TF_OK);
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		json_object *o = NULL;
		tf_otx_rec rec;
		int rc;

		err[0] = '\0';
		if (tf_json_parse(cases[i].json, strlen(cases[i].json), 16, &o, err, sizeof err))
			fail_msg("case %zu: bad JSON in the test: %s", i, err);
		rc = tf_otx_indicator(&p, o, NOW_US, &rec, err, sizeof err);
		if (rc != cases[i].rc)
			fail_msg("case %zu (%s): rc %s, want %s (%s)", i, cases[i].json, tf_strerror(rc),
			         tf_strerror(cases[i].rc), err);
		if (rc == TF_OK)
			assert_string_equal(rec.key, cases[i].want);
		else if (!strstr(err, cases[i].want))
			fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, cases[i].want);
		if (rc != TF_OK) {
			assert_null(rec.object);
			assert_null(rec.type);
		}
		tf_otx_rec_free(&rec);
		json_object_put(o);
	}
	/* an indicator's own "pulse" member is replaced, not duplicated */
	{
		const char *j = "{\"id\":1,\"indicator\":\"a\",\"type\":\"t\",\"pulse\":\"mine\"}";
		json_object *o = NULL, *back = NULL, *pm;
		tf_otx_rec rec;
		assert_int_equal(tf_json_parse(j, strlen(j), 8, &o, NULL, 0), TF_OK);
		assert_int_equal(tf_otx_indicator(&p, o, NOW_US, &rec, err, sizeof err), TF_OK);
		assert_int_equal(tf_json_parse(rec.text, rec.len, 8, &back, NULL, 0), TF_OK);
		assert_true(json_object_object_get_ex(back, "pulse", &pm));
		assert_string_equal(tf_json_str(pm, "id"), "P1");
		assert_int_equal(json_object_object_length(back), 4);
		json_object_put(back);
		tf_otx_rec_free(&rec);
		json_object_put(o);
	}
	tf_otx_pulse_free(&p);
	json_object_put(po);
}

/* ---- next URLs and times ------------------------------------------------------------ */

static void test_next_ok(void **state)
{
	static const struct {
		const char *base, *next;
		int rc;
	} cases[] = {
		{"https://otx.alienvault.com", "https://otx.alienvault.com/api/v1/pulses/subscribed?page=2",
		 TF_OK},
		{"https://otx.alienvault.com", "https://OTX.AlienVault.com:443/api/v1/x?page=2", TF_OK},
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000/api/v1/pulses/subscribed?page=2", TF_OK},
		{"http://127.0.0.1:8000/", "https://127.0.0.1:8000/x", TF_OK}, /* upgrade is fine */
		{"https://otx.alienvault.com", "http://otx.alienvault.com/x", TF_EINVAL},
		{"https://otx.alienvault.com", "https://evil.example/x", TF_EINVAL},
		{"https://otx.alienvault.com", "https://otx.alienvault.com.evil.example/x", TF_EINVAL},
		{"https://otx.alienvault.com", "https://otx.alienvault.com:8443/x", TF_EINVAL},
		{"http://127.0.0.1:8000", "http://127.0.0.1:8001/x", TF_EINVAL},
		{"http://127.0.0.1:8000", "ftp://127.0.0.1:8000/x", TF_EINVAL},
		{"http://127.0.0.1:8000", "file:///etc/passwd", TF_EINVAL},
		{"http://127.0.0.1:8000", "/api/v1/pulses/subscribed?page=2", TF_EINVAL},
		{"http://127.0.0.1:8000", "//127.0.0.1:8000/x", TF_EINVAL},
		{"http://127.0.0.1:8000", "httpx://127.0.0.1:8000/x", TF_EINVAL},
		{"http://127.0.0.1:8000", "http://", TF_EINVAL},
		{"http://127.0.0.1:8000", "", TF_EINVAL},
		{"http://127.0.0.1:8000", "http://127.0.0.1:8000@evil.example/x", TF_EINVAL},
		{"not a url", "http://127.0.0.1:8000/x", TF_EINVAL},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		char err[200] = "";
		int rc = tf_otx_next_ok(cases[i].base, cases[i].next, err, sizeof err);
		if (rc != cases[i].rc)
			fail_msg("case %zu (%s → %s): rc %s (%s)", i, cases[i].base, cases[i].next,
			         tf_strerror(rc), err);
		if (rc)
			assert_true(err[0] != '\0');
	}
	assert_int_equal(tf_otx_next_ok("http://h", NULL, NULL, 0), TF_EINVAL);
}

static void test_format_time(void **state)
{
	char buf[TF_OTX_TIME_LEN + 1];
	int64_t us;
	(void)state;

	assert_int_equal(tf_time_parse("2023-08-22T09:43:18.855000", &us), TF_OK);
	tf_otx_format_time(us, buf, sizeof buf);
	assert_string_equal(buf, "2023-08-22T09:43:18.855000");
	tf_otx_format_time(0, buf, sizeof buf);
	assert_string_equal(buf, "1970-01-01T00:00:00.000000");
	tf_otx_format_time(-1, buf, sizeof buf);
	assert_string_equal(buf, "1969-12-31T23:59:59.999999");
	/* round trip */
	assert_int_equal(tf_time_parse(buf, &us), TF_OK);
	assert_int_equal(us, -1);
	/* four-digit years, so the text reads back (found by fuzz_otx) */
	assert_int_equal(tf_time_parse("0023-08-22T09:43:18.855000", &us), TF_OK);
	tf_otx_format_time(us, buf, sizeof buf);
	assert_string_equal(buf, "0023-08-22T09:43:18.855000");
	/* absurd values do not overflow the buffer */
	tf_otx_format_time(INT64_MAX, buf, sizeof buf);
	assert_int_equal(strlen(buf), TF_OTX_TIME_LEN);
	tf_otx_format_time(INT64_MIN, buf, sizeof buf);
	assert_int_equal(strlen(buf), TF_OTX_TIME_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_page1_counts),
		cmocka_unit_test(test_record_object),
		cmocka_unit_test(test_expiry_is_relative_to_now),
		cmocka_unit_test(test_last_page_and_more_indicators),
		cmocka_unit_test(test_wrong_types_fixture),
		cmocka_unit_test(test_envelopes),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_pulse_cases),
		cmocka_unit_test(test_indicator_cases),
		cmocka_unit_test(test_next_ok),
		cmocka_unit_test(test_format_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
