/* worker/feeds/stix: pattern → observables, object validation, and the three real
 * bundles of tests/data/stix with exact counts. Run from the repository root
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
#include "stix.h"

/* "type=value;type=value" of an observables array ("" when NULL/empty). */
static void flatten(json_object *arr, char *buf, size_t len)
{
	size_t n = arr ? json_object_array_length(arr) : 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		json_object *o = json_object_array_get_idx(arr, i);
		size_t used = strlen(buf);
		snprintf(buf + used, len - used, "%s%s=%s", i ? ";" : "", tf_json_str(o, "type"),
		         tf_json_str(o, "value"));
	}
}

/* ---- patterns ------------------------------------------------------------------ */

static const struct pcase {
	const char *pattern;
	int rc;
	const char *want;
} pcases[] = {
	/* every observable kind */
	{"[ipv4-addr:value = '198.51.100.1']", TF_OK, "ipv4-addr=198.51.100.1"},
	{"[ipv4-addr:value = '10.0.0.0/8']", TF_OK, "ipv4-addr=10.0.0.0/8"},
	{"[ipv6-addr:value = '2001:db8::1']", TF_OK, "ipv6-addr=2001:db8::1"},
	{"[domain-name:value = 'x.example']", TF_OK, "domain-name=x.example"},
	{"[url:value = 'http://x.example/a?b=c&d=[e]']", TF_OK, "url=http://x.example/a?b=c&d=[e]"},
	{"[email-addr:value = 'a@b.example']", TF_OK, "email-addr=a@b.example"},
	{"[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
	 TF_OK, "file:hashes.SHA-256=aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f"},
	{"[file:hashes.SHA256 = 'ab']", TF_OK, "file:hashes.SHA-256=ab"},
	{"[file:hashes.'SHA256' = 'ab']", TF_OK, "file:hashes.SHA-256=ab"},
	{"[file:hashes.MD5 = '79054025255fb1a26e4bc422aef54eb4']", TF_OK,
	 "file:hashes.MD5=79054025255fb1a26e4bc422aef54eb4"},
	{"[file:hashes.'MD5' = 'cd']", TF_OK, "file:hashes.MD5=cd"},
	{"[file:hashes.'SHA-1' = 'ef']", TF_OK, "file:hashes.SHA-1=ef"},
	{"[file:hashes.SHA1 = 'ef']", TF_OK, "file:hashes.SHA-1=ef"},
	{"[file:hashes.'SHA-512' = '01']", TF_OK, "file:hashes.SHA-512=01"},
	/* AND / OR, compound and nested */
	{"[ipv4-addr:value = '45.77.45.120' AND network-traffic:dst_port = '443']", TF_OK,
	 "ipv4-addr=45.77.45.120"},
	{"[domain-name:value = 'a.example' OR ipv4-addr:value = '1.2.3.4' OR ipv4-addr:value = "
	 "'1.2.3.4']",
	 TF_OK, "domain-name=a.example;ipv4-addr=1.2.3.4"},
	{"[(ipv4-addr:value = '1.1.1.1' OR ipv4-addr:value = '2.2.2.2') AND "
	 "network-traffic:dst_port = 80]",
	 TF_OK, "ipv4-addr=1.1.1.1;ipv4-addr=2.2.2.2"},
	{"([ipv4-addr:value = '1.1.1.1'] AND [domain-name:value = 'd.example']) WITHIN 300 SECONDS",
	 TF_OK, "ipv4-addr=1.1.1.1;domain-name=d.example"},
	{"[url:value = 'http://u.example/'] FOLLOWEDBY [file:hashes.MD5 = 'aa'] REPEATS 2 TIMES",
	 TF_OK, "url=http://u.example/;file:hashes.MD5=aa"},
	{"[ipv4-addr:value = '9.9.9.9'] START t'2016-01-01T00:00:00Z' STOP t'2017-01-01T00:00:00Z'",
	 TF_OK, "ipv4-addr=9.9.9.9"},
	{"(([(domain-name:value = 'deep.example')]))", TF_OK, "domain-name=deep.example"},
	{"  [ipv4-addr:value='1.2.3.4']  ", TF_OK, "ipv4-addr=1.2.3.4"},
	/* STIX string escapes */
	{"[url:value = 'http://x.example/it\\'s']", TF_OK, "url=http://x.example/it's"},
	{"[url:value = 'C:\\\\dir\\\\f']", TF_OK, "url=C:\\dir\\f"},
	{"[domain-name:value = 'a'' OR 1']", TF_EINVAL, NULL},
	/* ignored: other paths, operators, NOT, non-string literals */
	{"[network-traffic:dst_port = 443]", TF_OK, ""},
	{"[file:name = 'CBricksDoc']", TF_OK, ""},
	{"[ipv4-addr:value != '1.2.3.4']", TF_OK, ""},
	{"[ipv4-addr:value NOT = '1.2.3.4']", TF_OK, ""},
	{"[ipv4-addr:value ISSUBSET '10.0.0.0/8']", TF_OK, ""},
	{"[domain-name:value LIKE '%.example']", TF_OK, ""},
	{"[domain-name:value MATCHES '^x']", TF_OK, ""},
	{"[ipv4-addr:value IN ('1.1.1.1', '2.2.2.2')]", TF_OK, ""},
	{"[file:size > 100 AND file:hashes.MD5 = 'aa']", TF_OK, "file:hashes.MD5=aa"},
	{"[file:hashes.SSDEEP = '3:a:b']", TF_OK, ""},
	{"[file:hashes.MD5 = h'aa']", TF_OK, ""},
	{"[windows-registry-key:values[*].name = 'x']", TF_OK, ""},
	{"[EXISTS ipv4-addr:value]", TF_OK, ""},
	{"[file:parent_directory_ref.path = 'C:\\\\Windows']", TF_OK, ""},
	/* malformed: nothing extracted */
	{"", TF_EINVAL, NULL},
	{"   ", TF_EINVAL, NULL},
	{"ipv4-addr:value = '1.2.3.4'", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4'", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4']]", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4)", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4]", TF_EINVAL, NULL},
	{"[ipv4-addr:value = ]", TF_EINVAL, NULL},
	{"[ipv4-addr:value '1.2.3.4']", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4' AND]", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4' XOR ipv4-addr:value = '5.6.7.8']", TF_EINVAL, NULL},
	{"[ipv4-addr:value = 'a\\x']", TF_EINVAL, NULL},
	{"[ipv4-addr:value = '1.2.3.4'] WITHIN SECONDS", TF_EINVAL, NULL},
	{"[ipv4-addr:value == '1.2.3.4']", TF_EINVAL, NULL},
	{"[] ", TF_EINVAL, NULL},
	{"[ipv4-addr:value = \"1.2.3.4\"]", TF_EINVAL, NULL},
	{"[domain-name:value = 'good.example'] AND [", TF_EINVAL, NULL},
};

static void test_pattern_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof pcases / sizeof pcases[0]; i++) {
		json_object *arr = json_object_new_array();
		char got[1024], err[200] = "";
		int rc = tf_stix_pattern(pcases[i].pattern, arr, err, sizeof err);

		if (rc != pcases[i].rc)
			fail_msg("pattern %zu <%s>: rc %d, want %d (%s)", i, pcases[i].pattern, rc,
			         pcases[i].rc, err);
		flatten(arr, got, sizeof got);
		if (pcases[i].want && strcmp(got, pcases[i].want))
			fail_msg("pattern %zu <%s>: got <%s>, want <%s>", i, pcases[i].pattern, got,
			         pcases[i].want);
		if (rc == TF_EINVAL) {
			/* all or nothing, and a reason */
			assert_int_equal(json_object_array_length(arr), 0);
			assert_non_null(strstr(err, "pattern:"));
		}
		json_object_put(arr);
	}
}

static void test_pattern_depth_and_appends(void **state)
{
	char deep[4 * TF_STIX_MAX_PATTERN_DEPTH + 64], got[256];
	json_object *arr = json_object_new_array();
	size_t n = 0;
	(void)state;

	/* nesting beyond the limit is malformed, not a stack overflow */
	for (int i = 0; i < TF_STIX_MAX_PATTERN_DEPTH + 2; i++)
		deep[n++] = '(';
	deep[n] = '\0';
	strcat(deep, "[ipv4-addr:value = '1.1.1.1']");
	n = strlen(deep);
	for (int i = 0; i < TF_STIX_MAX_PATTERN_DEPTH + 2; i++)
		deep[n++] = ')';
	deep[n] = '\0';
	assert_int_equal(tf_stix_pattern(deep, arr, NULL, 0), TF_EINVAL);
	assert_int_equal(json_object_array_length(arr), 0);

	/* appends to what is there, without duplicates */
	assert_int_equal(tf_stix_pattern("[ipv4-addr:value = '1.1.1.1']", arr, NULL, 0), TF_OK);
	assert_int_equal(tf_stix_pattern("[ipv4-addr:value = '1.1.1.1' OR url:value = 'u']", arr, NULL,
	                                 0),
	                 TF_OK);
	flatten(arr, got, sizeof got);
	assert_string_equal(got, "ipv4-addr=1.1.1.1;url=u");
	assert_int_equal(tf_stix_pattern(NULL, arr, NULL, 0), TF_EINVAL);
	json_object_put(arr);
}

/* ---- objects ------------------------------------------------------------------- */

#define IND_ID "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"

static const struct ocase {
	const char *json;
	int rc;
	const char *key;
	int64_t modified_us;
	const char *value;
	const char *obs;
	int pattern_error;
} ocases[] = {
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"created\":\"2016-04-06T20:03:48.000Z\","
	 "\"modified\":\"2016-04-06T20:03:48.123456Z\",\"pattern_type\":\"stix\","
	 "\"pattern\":\"[ipv4-addr:value = '1.2.3.4' OR domain-name:value = 'x.example']\"}",
	 TF_OK, IND_ID, 1459973028123456LL, "1.2.3.4", "ipv4-addr=1.2.3.4;domain-name=x.example", 0},
	/* no pattern_type: STIX assumed */
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern\":\"[url:value = 'http://u.example/']\"}",
	 TF_OK, IND_ID, 1459973028000000LL, "http://u.example/", "url=http://u.example/", 0},
	/* created stands in for modified */
	{"{\"type\":\"malware\",\"id\":\"malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061\","
	 "\"created\":\"2016-04-06T20:03:48.000Z\",\"name\":\"x\"}",
	 TF_OK, "malware--0c7b5b88-8ff7-4a4d-aa9d-feb398cd0061", 1459973028000000LL, NULL, "", 0},
	/* marking definitions (and observables) may have neither: version 0 */
	{"{\"type\":\"marking-definition\",\"id\":\"marking-definition--"
	 "613f2e26-407d-48c7-9eca-b8e91df99dc9\",\"definition_type\":\"tlp\"}",
	 TF_OK, "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9", 0, NULL, "", 0},
	/* custom types are data; upper-case UUID hex accepted */
	{"{\"type\":\"x-acme-note\",\"id\":\"x-acme-note--0B6A2F7E-9A52-4C1E-8F0E-5D1C2B3A4F50\","
	 "\"modified\":\"2024-01-01T00:00:00.000Z\",\"pattern\":\"[ipv4-addr:value = '1.1.1.1']\"}",
	 TF_OK, "x-acme-note--0B6A2F7E-9A52-4C1E-8F0E-5D1C2B3A4F50", 1704067200000000LL, NULL, "", 0},
	/* cyber-observable objects carry their own value / hashes */
	{"{\"type\":\"ipv4-addr\",\"id\":\"ipv4-addr--ff26c055-6336-5bc5-b98d-13d6226742dd\","
	 "\"value\":\"198.51.100.3\"}",
	 TF_OK, "ipv4-addr--ff26c055-6336-5bc5-b98d-13d6226742dd", 0, "198.51.100.3",
	 "ipv4-addr=198.51.100.3", 0},
	{"{\"type\":\"file\",\"id\":\"file--5a27d487-c542-5f97-a131-a8866b477b46\","
	 "\"hashes\":{\"SHA-256\":\"aa\",\"MD5\":\"bb\",\"TLSH\":\"cc\"}}",
	 TF_OK, "file--5a27d487-c542-5f97-a131-a8866b477b46", 0, "aa",
	 "file:hashes.SHA-256=aa;file:hashes.MD5=bb", 0},
	/* other pattern languages are kept without observables */
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern_type\":\"yara\",\"pattern\":\"rule x { condition: true }\"}",
	 TF_OK, IND_ID, 1459973028000000LL, NULL, "", 0},
	/* a malformed STIX pattern: kept, no observables, noted */
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern\":\"[ipv4-addr:value = '1.2.3.4'\"}",
	 TF_OK, IND_ID, 1459973028000000LL, NULL, "", 1},
	/* malformed objects: skipped */
	{"[]", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"id\":\"" IND_ID "\"}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\"}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":[\"indicator\"],\"id\":\"" IND_ID "\"}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":12345}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"\",\"id\":\"--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f\"}", TF_EINVAL, NULL, 0,
	 NULL, NULL, 0},
	{"{\"type\":\"Indicator\",\"id\":\"Indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f\"}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"malware\",\"id\":\"" IND_ID "\"}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"indicator--x\"}", TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3fa\"}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":1459973028}", TF_EINVAL, NULL, 0,
	 NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"yesterday\"}", TF_EINVAL, NULL,
	 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"created\":true}", TF_EINVAL, NULL, 0, NULL,
	 NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"created\":\"garbage\"}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern\":42,\"pattern_type\":\"stix\"}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern\":\"[ipv4-addr:value = '1.2.3.4']\",\"pattern_type\":{}}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
	{"{\"type\":\"indicator\",\"id\":\"" IND_ID "\",\"modified\":\"2016-04-06T20:03:48Z\","
	 "\"pattern\":[\"[ipv4-addr:value = '1.2.3.4']\"]}",
	 TF_EINVAL, NULL, 0, NULL, NULL, 0},
};

static void test_object_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof ocases / sizeof ocases[0]; i++) {
		const struct ocase *c = &ocases[i];
		json_object *obj = NULL;
		tf_stix_rec rec;
		char err[200] = "", got[512];
		int rc;

		assert_int_equal(tf_json_parse(c->json, strlen(c->json), 16, &obj, NULL, 0), TF_OK);
		rc = tf_stix_record(obj, &rec, err, sizeof err);
		if (rc != c->rc)
			fail_msg("object %zu: rc %d, want %d (%s)", i, rc, c->rc, err);
		if (rc == TF_OK) {
			assert_string_equal(rec.key, c->key);
			assert_int_equal(rec.modified_us, c->modified_us);
			if (c->value)
				assert_string_equal(rec.value, c->value);
			else
				assert_null(rec.value);
			flatten(rec.observables, got, sizeof got);
			assert_string_equal(got, c->obs);
			if (!*c->obs)
				assert_null(rec.observables);
			assert_int_equal(rec.pattern_error, c->pattern_error);
			if (c->pattern_error)
				assert_non_null(strstr(err, "pattern:"));
			tf_stix_rec_free(&rec);
		} else {
			assert_true(strlen(err) > 0);
			assert_null(rec.observables);
		}
		json_object_put(obj);
	}
	assert_int_equal(tf_stix_record(NULL, &(tf_stix_rec){0}, NULL, 0), TF_EINVAL);
}

/* ---- real bundles --------------------------------------------------------------- */

typedef struct counts {
	size_t objects, ok, skipped, with_value, observables, pattern_errors, versionless;
	size_t by_obs_type[8];
} counts;

static const char *const obs_types[] = {"ipv4-addr", "ipv6-addr", "domain-name", "url",
                                        "email-addr", "file:hashes.SHA-256", "file:hashes.MD5",
                                        "file:hashes.SHA-1"};

static json_object *load(const char *name)
{
	char err[200];
	json_object *doc = NULL;
	size_t n;
	char *buf = tu_data("stix", name, &n);

	if (tf_json_parse(buf, n, TF_MAX_FEED_JSON_DEPTH, &doc, err, sizeof err))
		fail_msg("stix/%s: %s", name, err);
	free(buf);
	return doc;
}

static counts count_bundle(const char *name)
{
	json_object *doc = load(name), *objs;
	counts c = {0};

	assert_string_equal(tf_json_str(doc, "type"), "bundle");
	assert_true(json_object_object_get_ex(doc, "objects", &objs));
	c.objects = json_object_array_length(objs);
	for (size_t i = 0; i < c.objects; i++) {
		tf_stix_rec rec;
		char err[200];
		json_object *o = json_object_array_get_idx(objs, i);

		if (tf_stix_record(o, &rec, err, sizeof err)) {
			c.skipped++;
			continue;
		}
		c.ok++;
		c.pattern_errors += (size_t)rec.pattern_error;
		c.versionless += rec.modified_us == 0;
		if (rec.value)
			c.with_value++;
		for (size_t k = 0; rec.observables && k < json_object_array_length(rec.observables);
		     k++) {
			const char *t =
			    tf_json_str(json_object_array_get_idx(rec.observables, k), "type");
			c.observables++;
			for (size_t j = 0; j < sizeof obs_types / sizeof obs_types[0]; j++)
				if (!strcmp(t, obs_types[j]))
					c.by_obs_type[j]++;
		}
		/* the key is the id, the type the type */
		assert_string_equal(rec.key, tf_json_str(o, "id"));
		assert_string_equal(rec.type, tf_json_str(o, "type"));
		tf_stix_rec_free(&rec);
	}
	json_object_put(doc);
	return c;
}

static void test_bundle_poisonivy(void **state)
{
	counts c = count_bundle("poisonivy.json");
	(void)state;

	assert_int_equal(c.objects, 155);
	assert_int_equal(c.ok, 155);
	assert_int_equal(c.skipped, 0);
	assert_int_equal(c.pattern_errors, 0);
	assert_int_equal(c.versionless, 0);
	/* 25 indicators: 23 with ipv4/domain observables, 2 with file:name only */
	assert_int_equal(c.with_value, 23);
	assert_int_equal(c.observables, 65);
	assert_int_equal(c.by_obs_type[0], 40); /* ipv4-addr */
	assert_int_equal(c.by_obs_type[2], 25); /* domain-name */
}

static void test_bundle_sslipblacklist(void **state)
{
	counts c = count_bundle("feeds2stix-sslipblacklist-aggressive-2024.json");
	(void)state;

	assert_int_equal(c.objects, 963);
	assert_int_equal(c.ok, 963);
	assert_int_equal(c.skipped, 0);
	/* 230 indicators ([ipv4 AND network-traffic:dst_port]) + 230 ipv4-addr
	 * objects; 270 network-traffic objects have no observable value */
	assert_int_equal(c.with_value, 460);
	assert_int_equal(c.observables, 460);
	assert_int_equal(c.by_obs_type[0], 460);
	/* 230 ipv4-addr + 270 network-traffic have no created/modified */
	assert_int_equal(c.versionless, 500);
}

static void test_bundle_ics_attack(void **state)
{
	counts c = count_bundle("ics-attack-18.1.json");
	(void)state;

	assert_int_equal(c.objects, 1826);
	assert_int_equal(c.ok, 1826);
	assert_int_equal(c.skipped, 0);
	assert_int_equal(c.with_value, 0);
	assert_int_equal(c.observables, 0);
	assert_int_equal(c.versionless, 0);
}

/* ---- object spans ------------------------------------------------------------------ */

/* Every span parses to exactly the element json-c found there. */
static void check_spans(const char *text, size_t len, size_t want)
{
	json_object *doc = NULL, *arr;
	tf_stix_span *spans = NULL;
	size_t n = 0;

	assert_int_equal(tf_json_parse(text, len, TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0), TF_OK);
	assert_int_equal(tf_stix_spans(text, len, &spans, &n), TF_OK);
	assert_true(json_object_object_get_ex(doc, "objects", &arr));
	assert_int_equal(n, want);
	assert_int_equal(n, json_object_array_length(arr));
	for (size_t i = 0; i < n; i++) {
		json_object *e = NULL;
		char *copy;

		assert_true(spans[i].off + spans[i].len <= len);
		/* a bare number needs a delimiter to end: add one space */
		assert_non_null(copy = malloc(spans[i].len + 1));
		memcpy(copy, text + spans[i].off, spans[i].len);
		copy[spans[i].len] = ' ';
		assert_int_equal(tf_json_parse(copy, spans[i].len + 1, TF_MAX_FEED_JSON_DEPTH, &e, NULL, 0),
		                 TF_OK);
		free(copy);
		assert_true(json_object_equal(e, json_object_array_get_idx(arr, i)));
		json_object_put(e);
	}
	free(spans);
	json_object_put(doc);
}

static void test_spans(void **state)
{
	static const char t1[] = " {\"a\":[1,{\"objects\":[9]}], \"objects\" : [ {\"x\":\"]\\\"[\"} ,\n"
	                         "[1,2], \"s\", -3.5e2 ,null,true,{}], \"z\":{\"objects\":[1]}} ";
	static const char t2[] = "{\"objects\":[1],\"objects\":[2,3]}";
	static const char t3[] = "{\"more\":false}";
	static const char t4[] = "{\"objects\":[]}";
	static const char *const files[] = {"poisonivy.json", "ics-attack-18.1.json",
	                                    "feeds2stix-sslipblacklist-aggressive-2024.json"};
	tf_stix_span *spans;
	size_t n;
	(void)state;

	check_spans(t1, sizeof t1 - 1, 7);
	check_spans(t2, sizeof t2 - 1, 2);
	check_spans(t4, sizeof t4 - 1, 0);
	assert_int_equal(tf_stix_spans(t3, sizeof t3 - 1, &spans, &n), TF_ENOTFOUND);
	assert_int_equal(tf_stix_spans("[1]", 3, &spans, &n), TF_EINVAL);
	assert_int_equal(tf_stix_spans("{\"objects\":[\"x", 14, &spans, &n), TF_EINVAL);
	/* the real bundles, pretty-printed and compact alike */
	for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
		size_t len;
		char *buf = tu_data("stix", files[f], &len);

		check_spans(buf, len, f == 0 ? 155 : f == 1 ? 1826 : 963);
		free(buf);
	}
}

static void test_compact(void **state)
{
	static const char in[] = " { \"a\" : [ 1 , 2 ],\n\t\"b\":\"x y\\\" \\\\\" ,\"c\":\"l1\nl2\001\"}\r\n";
	static const char want[] = "{\"a\":[1,2],\"b\":\"x y\\\" \\\\\",\"c\":\"l1\\u000al2\\u0001\"}";
	char out[128 + 8];
	(void)state;

	assert_int_equal(tf_stix_compact(in, sizeof in - 1, out, 128), sizeof want - 1);
	assert_string_equal(out, want);
	assert_int_equal(tf_stix_compact(in, sizeof in - 1, out, 10), SIZE_MAX);
	assert_int_equal(tf_stix_compact(in, sizeof in - 1, out, sizeof want - 1), sizeof want - 1);
	assert_int_equal(tf_stix_compact(in, sizeof in - 1, out, sizeof want - 2), SIZE_MAX);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pattern_table),
		cmocka_unit_test(test_pattern_depth_and_appends),
		cmocka_unit_test(test_object_table),
		cmocka_unit_test(test_bundle_poisonivy),
		cmocka_unit_test(test_bundle_sslipblacklist),
		cmocka_unit_test(test_bundle_ics_attack),
		cmocka_unit_test(test_spans),
		cmocka_unit_test(test_compact),
	};
	return cmocka_run_group_tests_name("stix", tests, NULL, NULL);
}
