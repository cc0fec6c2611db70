/* libFuzzer harness: the VirusTotal parser of worker/feeds/vt.h. The input's first
 * line is a configured target (tf_vt_classify), the rest a lookup answer
 * (tf_vt_report_parse for the target's kind, else for kind byte % 4), also
 * read as an error answer (tf_vt_error); a kept answer becomes a record
 * (tf_vt_record, tf_vt_observables).
 *
 * Invariants checked: a classified target's id is safe as one URL path
 * segment and its key is vt:<collection>:<id>; a URL's id decodes back to
 * the URL; a record's text parses back; a verdict is one of the documented
 * words. */
#include "fuzz.h"

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "vt.h"

static int b64val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	return c == '-' ? 62 : c == '_' ? 63 : -1;
}

/* URL-safe base64 without padding → bytes; returns the length. */
static size_t unb64(const char *s, char *out)
{
	size_t o = 0, n = strlen(s);
	uint32_t acc = 0;
	int bits = 0;

	FUZZ_CHECK(n % 4 != 1);
	for (size_t i = 0; i < n; i++) {
		int v = b64val(s[i]);
		FUZZ_CHECK(v >= 0);
		acc = acc << 6 | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (char)(acc >> bits & 0xff);
		}
	}
	return o;
}

static void check_target(const tf_vt_target *t)
{
	char want[64];

	FUZZ_CHECK(t->value && *t->value && t->id && *t->id && t->key);
	for (const char *c = t->id; *c; c++)
		FUZZ_CHECK((unsigned char)*c > 0x20 && (unsigned char)*c < 0x7f && !strchr("/?#%\\", *c));
	snprintf(want, sizeof want, "vt:%s:", tf_vt_collection(t->kind));
	FUZZ_CHECK(!strncmp(t->key, want, strlen(want)) && !strcmp(t->key + strlen(want), t->id));
	if (t->kind == TF_VT_URL) {
		size_t n = strlen(t->value);
		char *dec = malloc(n + 4);
		FUZZ_CHECK(dec && unb64(t->id, dec) == n && !memcmp(dec, t->value, n));
		free(dec);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl = memchr(data, '\n', size);
	size_t tlen = nl ? (size_t)(nl - data) : size;
	char *target = fuzz_cstr(data, tlen), err[300], code[80], msg[240];
	const char *body = nl ? (const char *)nl + 1 : "";
	size_t blen = nl ? size - tlen - 1 : 0;
	tf_vt_target t;
	tf_vt_report rep;
	tf_vt_kind kind = size ? (tf_vt_kind)(data[0] % 4) : TF_VT_FILE;
	int rc = tf_vt_classify(target, &t, err, sizeof err);

	FUZZ_CHECK(rc == TF_OK || rc == TF_EINVAL || rc == TF_ENOMEM);
	if (rc == TF_OK) {
		check_target(&t);
		kind = t.kind;
	}
	tf_vt_error(body, blen, code, sizeof code, msg, sizeof msg);
	FUZZ_CHECK(strlen(code) < sizeof code && strlen(msg) < sizeof msg);
	rc = tf_vt_report_parse(body, blen, kind, &rep, err, sizeof err);
	FUZZ_CHECK(rc == TF_OK || rc == TF_EPARSE || rc == TF_EINVAL || rc == TF_ENOMEM);
	if (rc == TF_OK) {
		FUZZ_CHECK(!strcmp(rep.verdict, "malicious") || !strcmp(rep.verdict, "suspicious") ||
		           !strcmp(rep.verdict, "harmless/undetected") ||
		           !strcmp(rep.verdict, "unknown"));
		if (t.key) {
			json_object *obj = NULL, *back = NULL, *obs;
			size_t len;
			const char *text;

			FUZZ_CHECK(tf_vt_record(&t, &rep, &obj) == TF_OK);
			text = tf_json_text(obj, &len);
			FUZZ_CHECK(tf_json_parse(text, len, TF_MAX_FEED_JSON_DEPTH, &back, NULL, 0) == TF_OK);
			FUZZ_CHECK(!strcmp(tf_json_str(back, "verdict"), rep.verdict));
			json_object_put(back);
			json_object_put(obj);
			obs = tf_vt_observables(&t);
			FUZZ_CHECK(obs && json_object_array_length(obs) == 1);
			json_object_put(obs);
		}
	} else {
		FUZZ_CHECK(rep.doc == NULL);
	}
	tf_vt_report_free(&rep);
	tf_vt_target_free(&t);
	free(target);
	return 0;
}
