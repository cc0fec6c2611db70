/* worker/feeds/taxii.c: an objects page's envelope as the driver reads it
 * (tf_taxii_page_read), on pages made of the real recorded STIX objects of
 * tests/data/stix and on every wrong envelope, with the words the run's
 * error gets. Paging, loop guards and cancels need the run engine: the
 * integration tests (test_runs.py, test_taxii_servers.py) drive those. */
#include "testutil.h"

#include "stix.h"
#include "taxii.h"

/* A page around the objects of a recorded bundle, as a TAXII server sends
 * them: {"more":..., "next":..., "objects":[...]}, serialized and parsed
 * again as the driver gets it. */
static json_object *page_of(const char *bundle, const char *more, const char *next,
                            char **text)
{
	size_t len;
	char *raw = tu_data("stix", bundle, &len), *out;
	const char *objs = strstr(raw, "\"objects\"");
	json_object *doc = NULL;
	size_t n;

	assert_non_null(objs);
	/* the bundle's own "objects" member and what follows it, verbatim */
	n = strlen(objs) + strlen(more) + strlen(next) + 64;
	assert_non_null(out = malloc(n));
	snprintf(out, n, "{\"more\": %s, \"next\": %s, %s", more, next, objs);
	free(raw);
	assert_int_equal(tf_json_parse(out, strlen(out), TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0),
	                 TF_OK);
	*text = out;
	return doc;
}

static void test_recorded_pages(void **state)
{
	static const struct {
		const char *bundle;
		size_t objects;
	} pages[] = {
		{"poisonivy.json", 155},
		{"feeds2stix-sslipblacklist-aggressive-2024.json", 963},
		{"ics-attack-18.1.json", 1826},
	};
	(void)state;

	for (size_t i = 0; i < sizeof pages / sizeof *pages; i++) {
		char why[96] = "", *text;
		json_object *doc = page_of(pages[i].bundle, "true", "\"MTcwNDA2NzIwMA\"", &text), *o;
		tf_taxii_page pg;
		tf_stix_span *spans = NULL;
		size_t ns = 0;

		assert_int_equal(tf_taxii_page_read(doc, &pg, why, sizeof why), TF_OK);
		assert_int_equal(pg.n, pages[i].objects);
		assert_true(json_object_object_get_ex(doc, "objects", &o));
		assert_ptr_equal(pg.objects, o);   /* borrowed from the page */
		assert_int_equal(pg.more, 1);
		assert_string_equal(pg.next, "MTcwNDA2NzIwMA");
		/* the driver then stores each object's own bytes: one span each */
		assert_int_equal(tf_stix_spans(text, strlen(text), &spans, &ns), TF_OK);
		assert_int_equal(ns, pg.n);
		free(spans);
		json_object_put(doc);
		free(text);
		/* the last page: more false, no next */
		doc = page_of(pages[i].bundle, "false", "null", &text);
		assert_int_equal(tf_taxii_page_read(doc, &pg, why, sizeof why), TF_OK);
		assert_int_equal(pg.n, pages[i].objects);
		assert_int_equal(pg.more, 0);
		assert_null(pg.next);
		json_object_put(doc);
		free(text);
	}
}

/* Parses text and reads its envelope: the return, with why. */
static int read_text(const char *text, tf_taxii_page *pg, char *why, size_t whylen)
{
	json_object *doc = NULL;
	int rc;

	assert_int_equal(tf_json_parse(text, strlen(text), TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0),
	                 TF_OK);
	why[0] = '\0';
	rc = tf_taxii_page_read(doc, pg, why, whylen);
	json_object_put(doc);
	return rc;
}

static void test_optional_members(void **state)
{
	/* An empty result may be {} (docs/FEEDS.md): every member optional,
	 * null as good as absent, an empty next token as none. */
	static const char *const empty[] = {
		"{}",
		"{\"objects\":null,\"more\":false,\"next\":null}",
		"{\"objects\":[],\"next\":\"\"}",
		"{\"more\":false,\"id\":\"ignored\",\"spec_version\":\"2.1\"}",
	};
	tf_taxii_page pg;
	char why[96];
	(void)state;

	for (size_t i = 0; i < sizeof empty / sizeof *empty; i++) {
		if (read_text(empty[i], &pg, why, sizeof why) != TF_OK)
			fail_msg("refused %s: page 1%s", empty[i], why);
		assert_int_equal(pg.n, 0);
		assert_int_equal(pg.more, 0);
		assert_null(pg.next);
	}
	/* more true without next: the driver continues from the date added */
	assert_int_equal(read_text("{\"more\":true,\"objects\":[{\"type\":\"x\"}]}", &pg, why,
	                           sizeof why),
	                 TF_OK);
	assert_int_equal(pg.n, 1);
	assert_int_equal(pg.more, 1);
	assert_null(pg.next);
}

static void test_wrong_envelopes(void **state)
{
	static const struct {
		const char *text;
		int rc;
		const char *why;
	} bad[] = {
		{"{\"objects\":{}}", TF_EPARSE, ": \"objects\" is not an array"},
		{"{\"objects\":\"[]\"}", TF_EPARSE, ": \"objects\" is not an array"},
		{"{\"more\":\"true\"}", TF_EPARSE, ": \"more\" is not a boolean"},
		{"{\"more\":1}", TF_EPARSE, ": \"more\" is not a boolean"},
		{"{\"next\":5}", TF_EPARSE, ": \"next\" is not a string"},
		{"{\"next\":[\"a\"]}", TF_EPARSE, ": \"next\" is not a string"},
	};
	tf_taxii_page pg;
	char why[96];
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		int rc = read_text(bad[i].text, &pg, why, sizeof why);
		if (rc != bad[i].rc || strcmp(why, bad[i].why))
			fail_msg("%s: %s '%s'", bad[i].text, tf_strerror(rc), why);
	}
}

static void test_limits(void **state)
{
	size_t n = 32 + 2 * (TF_MAX_PAGE_OBJECTS + 1) + TF_MAX_URL + 2;
	char *text = malloc(n), *p, why[96];
	tf_taxii_page pg;
	(void)state;

	assert_non_null(text);
	/* one object over TF_MAX_PAGE_OBJECTS */
	p = text + sprintf(text, "{\"objects\":[");
	for (int i = 0; i <= TF_MAX_PAGE_OBJECTS; i++)
		p += sprintf(p, i ? ",0" : "0");
	strcpy(p, "]}");
	assert_int_equal(read_text(text, &pg, why, sizeof why), TF_ELIMIT);
	snprintf(text, n, " has %d objects, limit %d", TF_MAX_PAGE_OBJECTS + 1, TF_MAX_PAGE_OBJECTS);
	assert_string_equal(why, text);
	/* a next token of TF_MAX_URL bytes is one, a byte more is not */
	p = text + sprintf(text, "{\"next\":\"");
	memset(p, 'a', TF_MAX_URL);
	strcpy(p + TF_MAX_URL, "\"}");
	{
		json_object *doc = tu_json(text);
		assert_int_equal(tf_taxii_page_read(doc, &pg, why, sizeof why), TF_OK);
		assert_int_equal(strlen(pg.next), TF_MAX_URL);
		json_object_put(doc);
	}
	p = text + sprintf(text, "{\"next\":\"");
	memset(p, 'a', TF_MAX_URL + 1);
	strcpy(p + TF_MAX_URL + 1, "\"}");
	assert_int_equal(read_text(text, &pg, why, sizeof why), TF_ELIMIT);
	snprintf(text, n, ": next token longer than %d bytes", TF_MAX_URL);
	assert_string_equal(why, text);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_recorded_pages),
		cmocka_unit_test(test_optional_members),
		cmocka_unit_test(test_wrong_envelopes),
		cmocka_unit_test(test_limits),
	};
	tu_init("taxii");
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
