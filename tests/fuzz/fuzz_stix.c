/* libFuzzer harness: the STIX reader of worker/feeds/stix.h. Each input is tried
 *  - as a STIX pattern (tf_stix_pattern): whatever it returns, a malformed
 *    pattern must leave the observables array as it was (all or nothing);
 *  - as JSON (depth TF_MAX_FEED_JSON_DEPTH): an object, or each element of an
 *    array, through tf_stix_record; a kept record's key and type are the
 *    object's own id and type, its value the first observable's;
 *  - through tf_stix_compact, whose output must fit the cap it was given. */
#include "fuzz.h"

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "stix.h"

static void record(json_object *obj)
{
	tf_stix_rec rec;
	char err[200];
	int rc = tf_stix_record(obj, &rec, err, sizeof err);

	FUZZ_CHECK(rc == TF_OK || rc == TF_EINVAL || rc == TF_ENOMEM);
	if (rc != TF_OK)
		return;
	FUZZ_CHECK(rec.key && !strcmp(rec.key, tf_json_str(obj, "id")));
	FUZZ_CHECK(rec.type && !strcmp(rec.type, tf_json_str(obj, "type")));
	FUZZ_CHECK(!rec.value || (rec.observables && json_object_array_length(rec.observables) > 0));
	tf_stix_rec_free(&rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s = fuzz_cstr(data, size), err[200], *out;
	json_object *arr = json_object_new_array(), *doc = NULL;
	size_t n, max;
	int rc;

	/* a pattern: all or nothing */
	json_object_array_add(arr, json_object_new_string("sentinel"));
	rc = tf_stix_pattern(s, arr, err, sizeof err);
	FUZZ_CHECK(rc == TF_OK || rc == TF_EINVAL || rc == TF_ENOMEM);
	if (rc != TF_OK)
		FUZZ_CHECK(json_object_array_length(arr) == 1);
	json_object_put(arr);

	/* an object, or an array of them */
	if (tf_json_parse(s, size, TF_MAX_FEED_JSON_DEPTH, &doc, NULL, 0) == TF_OK) {
		if (json_object_is_type(doc, json_type_array))
			for (size_t i = 0; i < json_object_array_length(doc); i++)
				record(json_object_array_get_idx(doc, i));
		else
			record(doc);
		json_object_put(doc);
	}

	/* compaction never writes past max (+ the 8 bytes of slack promised) */
	max = size / 2 + 1;
	out = malloc(max + 8);
	FUZZ_CHECK(out != NULL);
	n = tf_stix_compact(s, size, out, max);
	FUZZ_CHECK(n == SIZE_MAX || (n <= max && out[n] == '\0'));
	free(out);
	free(s);
	return 0;
}
