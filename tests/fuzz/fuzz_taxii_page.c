/* libFuzzer harness: a TAXII 2.1 objects page as worker/feeds/taxii.c reads it,
 * step by step over the functions the driver uses: tf_json_parse with
 * TF_MAX_FEED_JSON_DEPTH, tf_taxii_page_read (the envelope: objects an
 * array, more a boolean, next a string), tf_stix_spans to locate each
 * object's own bytes, tf_stix_compact on each span, tf_stix_record on each object — and the
 * error-answer helpers tf_upstream_error / tf_upstream_is_json on the body.
 *
 * Invariant checked: when tf_stix_spans finds one span per element, each
 * span compacted is JSON that parses to exactly the element json-c parsed
 * (the driver stores those bytes as the record's object). */
#include "fuzz.h"

#include "err.h"
#include "fetch.h"
#include "json.h"
#include "tf_limits.h"
#include "stix.h"
#include "upstream.h"
#include "taxii.h"

static char compact_buf[TF_MAX_OBJECT_BYTES + 8];

static void check_spans(const char *body, size_t len, json_object *objs, size_t n)
{
	tf_stix_span *spans = NULL;
	size_t ns = 0;
	int rc = tf_stix_spans(body, len, &spans, &ns);

	FUZZ_CHECK(rc == TF_OK || rc == TF_EINVAL || rc == TF_ENOTFOUND || rc == TF_ENOMEM);
	if (rc == TF_OK && ns == n) {
		for (size_t i = 0; i < n; i++) {
			json_object *back = NULL;
			size_t cl;

			FUZZ_CHECK(spans[i].off < len && spans[i].len <= len - spans[i].off);
			cl = tf_stix_compact(body + spans[i].off, spans[i].len, compact_buf,
			                     TF_MAX_OBJECT_BYTES);
			if (cl == SIZE_MAX)
				continue;
			FUZZ_CHECK(tf_json_parse(compact_buf, cl, TF_MAX_FEED_JSON_DEPTH, &back, NULL, 0) ==
			           TF_OK);
			FUZZ_CHECK(json_object_equal(back, json_object_array_get_idx(objs, i)));
			json_object_put(back);
		}
	}
	free(spans);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *body = fuzz_cstr(data, size), buf[400];
	json_object *doc = NULL;
	tf_fetch_resp resp = {0};
	tf_taxii_page pg;

	/* as an error answer (500) and as a 2xx of unknown media type */
	resp.status = 500;
	resp.body = body;
	resp.len = size;
	tf_upstream_error(&resp, buf, sizeof buf);
	FUZZ_CHECK(strlen(buf) < sizeof buf && !strncmp(buf, "HTTP 500", 8));
	for (const char *c = buf; *c; c++)
		FUZZ_CHECK((unsigned char)*c >= 0x20);
	resp.status = 200;
	tf_upstream_is_json(&resp, buf, sizeof buf);

	if (tf_json_parse(body, size, TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0) != TF_OK)
		goto out;
	if (!json_object_is_type(doc, json_type_object))
		goto out;
	/* the envelope, by the driver's own reader */
	if (tf_taxii_page_read(doc, &pg, buf, sizeof buf) != TF_OK) {
		FUZZ_CHECK(buf[0] == ':' || buf[0] == ' ');
		goto out;
	}
	FUZZ_CHECK(pg.n <= TF_MAX_PAGE_OBJECTS && (!pg.next || *pg.next));
	if (pg.n) {
		check_spans(body, size, pg.objects, pg.n);
		for (size_t i = 0; i < pg.n; i++) {
			tf_stix_rec rec;
			if (tf_stix_record(json_object_array_get_idx(pg.objects, i), &rec, buf,
			                   sizeof buf) == TF_OK)
				tf_stix_rec_free(&rec);
		}
	}
out:
	json_object_put(doc);
	free(body);
	return 0;
}
