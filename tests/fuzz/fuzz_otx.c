/* libFuzzer harness: an OTX page through the parser of worker/feeds/otx.h, the way
 * otx.c walks it: the envelope (tf_otx_page_parse), every pulse
 * (tf_otx_pulse_read), every indicator (tf_otx_indicator), and the page's
 * next URL (tf_otx_next_ok against two feed bases).
 *
 * Invariants checked: a kept record's key is otx:<pulse id>:<digits>, its
 * text is the compact JSON of its object and parses back, with the pulse
 * inside; a next URL that passes stays on the feed's host. */
#include "fuzz.h"

#include <strings.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "otx.h"

/* 2024-01-01T00:00:00Z */
#define NOW_US 1704067200000000LL

static void indicator(const tf_otx_pulse *p, json_object *ind)
{
	tf_otx_rec rec;
	char err[200], prefix[TF_OTX_KEY_LEN];
	json_object *back = NULL, *pulse;
	int rc = tf_otx_indicator(p, ind, NOW_US, &rec, err, sizeof err);

	FUZZ_CHECK(rc == TF_OK || rc == TF_ENOTFOUND || rc == TF_EINVAL || rc == TF_ENOMEM);
	if (rc == TF_ENOTFOUND)
		FUZZ_CHECK(rec.skip == TF_OTX_INACTIVE || rec.skip == TF_OTX_EXPIRED);
	if (rc != TF_OK)
		return;
	snprintf(prefix, sizeof prefix, "otx:%s:", p->id);
	FUZZ_CHECK(!strncmp(rec.key, prefix, strlen(prefix)));
	for (const char *c = rec.key + strlen(prefix); *c; c++)
		FUZZ_CHECK(*c >= '0' && *c <= '9');
	FUZZ_CHECK(rec.type && *rec.type && rec.value && *rec.value);
	FUZZ_CHECK(rec.text && strlen(rec.text) == rec.len);
	FUZZ_CHECK(tf_json_parse(rec.text, rec.len, TF_MAX_FEED_JSON_DEPTH + 4, &back, NULL, 0) ==
	           TF_OK);
	FUZZ_CHECK(json_object_object_get_ex(back, "pulse", &pulse));
	FUZZ_CHECK(!strcmp(tf_json_str(pulse, "id"), p->id));
	json_object_put(back);
	tf_otx_rec_free(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const bases[] = {"https://otx.alienvault.com", "http://127.0.0.1:8080"};
	tf_otx_page page;
	char err[300];
	int rc = tf_otx_page_parse((const char *)data, size, &page, err, sizeof err);

	FUZZ_CHECK(rc == TF_OK || rc == TF_EPARSE || rc == TF_ELIMIT || rc == TF_ENOMEM);
	if (rc != TF_OK) {
		FUZZ_CHECK(page.doc == NULL);
		return 0;
	}
	FUZZ_CHECK(page.n <= TF_MAX_PAGE_OBJECTS);
	for (size_t i = 0; i < page.n; i++) {
		tf_otx_pulse p;
		if (tf_otx_pulse_read(json_object_array_get_idx(page.results, i), &p, err, sizeof err))
			continue;
		FUZZ_CHECK(strlen(p.id) > 0 && strlen(p.id) <= TF_OTX_MAX_ID);
		FUZZ_CHECK(strlen(p.modified) == TF_OTX_TIME_LEN);
		for (size_t k = 0; p.indicators && k < json_object_array_length(p.indicators); k++)
			indicator(&p, json_object_array_get_idx(p.indicators, k));
		tf_otx_pulse_free(&p);
	}
	for (size_t b = 0; page.next && b < sizeof bases / sizeof bases[0]; b++)
		if (tf_otx_next_ok(bases[b], page.next, err, sizeof err) == TF_OK)
			FUZZ_CHECK(!strncasecmp(page.next, bases[b], 4));
	tf_otx_page_free(&page);
	return 0;
}
