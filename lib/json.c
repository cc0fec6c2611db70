#include "json.h"
#include "err.h"
#include "tf_limits.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* json-c's strict mode still takes 'single-quoted' strings, NaN and
 * Infinity, and would write NaN back out as invalid JSON. One pass over the
 * tokens outside strings refuses everything RFC 8259 does not allow. */
static int lexically_strict(const char *t, size_t len, size_t *bad)
{
	static const char *const words[] = {"true", "false", "null"};
	int in_str = 0;

	for (size_t i = 0; i < len; i++) {
		char c = t[i];
		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
			continue;
		}
		if (c == '"') {
			in_str = 1;
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
			size_t w = 0, n = 0;
			if (c == 'e' || c == 'E') /* exponent: the number grammar is json-c's */
				continue;
			for (; w < 3; w++) {
				n = strlen(words[w]);
				if (len - i >= n && !memcmp(t + i, words[w], n))
					break;
			}
			if (w == 3) {
				*bad = i;
				return 0;
			}
			i += n - 1;
		} else if (c == '\'') {
			*bad = i;
			return 0;
		}
	}
	return 1;
}

/* 1e999 is valid JSON text but no finite number: refuse what we could not
 * write back faithfully. */
static int finite_numbers(json_object *o, int depth)
{
	if (depth > TF_JSON_WALK_MAX)
		return 1;
	switch (json_object_get_type(o)) {
	case json_type_double:
		return isfinite(json_object_get_double(o));
	case json_type_array:
		for (size_t i = 0, n = json_object_array_length(o); i < n; i++)
			if (!finite_numbers(json_object_array_get_idx(o, i), depth + 1))
				return 0;
		return 1;
	case json_type_object: {
		json_object_object_foreach(o, k, v) {
			(void)k;
			if (!finite_numbers(v, depth + 1))
				return 0;
		}
		return 1;
	}
	default:
		return 1;
	}
}

int tf_json_parse(const char *text, size_t len, int max_depth, json_object **out, char *err,
                  size_t errlen)
{
	json_tokener *tok;
	json_object *obj;
	enum json_tokener_error jerr;
	size_t used;
	char dummy[8];

	if (!err) {
		err = dummy;
		errlen = sizeof dummy;
	}
	*out = NULL;
	if (len > INT32_MAX) {
		snprintf(err, errlen, "JSON text too large");
		return TF_EINVAL;
	}
	if (!lexically_strict(text, len, &used)) {
		snprintf(err, errlen, "invalid JSON at byte %zu: unexpected character", used);
		return TF_EINVAL;
	}
	if (!(tok = json_tokener_new_ex(max_depth)))
		return TF_ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	used = json_tokener_get_parse_end(tok);
	if (jerr == json_tokener_continue && !obj) {
		/* A top-level number only ends at the end of input: say so. */
		obj = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		used = len;
	}
	if (jerr == json_tokener_continue) {
		snprintf(err, errlen, "invalid JSON: unexpected end of input");
		goto fail;
	}
	if (jerr != json_tokener_success) {
		snprintf(err, errlen, "invalid JSON at byte %zu: %s", used,
		         json_tokener_error_desc(jerr));
		goto fail;
	}
	for (; used < len; used++)
		if (!strchr(" \t\r\n", text[used])) {
			snprintf(err, errlen, "invalid JSON: trailing data at byte %zu", used);
			goto fail;
		}
	json_tokener_free(tok);
	if (!finite_numbers(obj, 0)) {
		snprintf(err, errlen, "invalid JSON: number out of range");
		json_object_put(obj);
		return TF_EINVAL;
	}
	*out = obj;
	return TF_OK;
fail:
	json_object_put(obj);
	json_tokener_free(tok);
	return TF_EINVAL;
}

static int field(json_object *obj, const char *key, json_type type, json_object **v)
{
	if (!obj || !json_object_is_type(obj, json_type_object) ||
	    !json_object_object_get_ex(obj, key, v) || json_object_is_type(*v, json_type_null))
		return TF_ENOTFOUND;
	return json_object_is_type(*v, type) ? TF_OK : TF_EINVAL;
}

int tf_json_get_str(json_object *obj, const char *key, const char **out)
{
	json_object *v;
	int rc = field(obj, key, json_type_string, &v);
	if (!rc)
		*out = json_object_get_string(v);
	return rc;
}

int tf_json_get_int(json_object *obj, const char *key, int64_t *out)
{
	json_object *v;
	int rc = field(obj, key, json_type_int, &v);
	if (!rc)
		*out = json_object_get_int64(v);
	return rc;
}

int tf_json_get_bool(json_object *obj, const char *key, int *out)
{
	json_object *v;
	int rc = field(obj, key, json_type_boolean, &v);
	if (!rc)
		*out = json_object_get_boolean(v);
	return rc;
}

const char *tf_json_str(json_object *obj, const char *key)
{
	const char *s = NULL;
	return tf_json_get_str(obj, key, &s) == TF_OK ? s : NULL;
}

const char *tf_json_text(json_object *obj, size_t *len)
{
	return json_object_to_json_string_length(obj, JSON_C_TO_STRING_PLAIN |
	                                                  JSON_C_TO_STRING_NOSLASHESCAPE, len);
}

size_t tf_json_quote(char *out, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;

	*o++ = '"';
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		unsigned char c = *p;
		const char *esc = NULL;
		switch (c) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		default: break;
		}
		if (esc) {
			*o++ = esc[0];
			*o++ = esc[1];
		} else if (c < 0x20) {
			memcpy(o, "\\u00", 4);
			o[4] = hex[c >> 4];
			o[5] = hex[c & 15];
			o += 6;
		} else {
			*o++ = (char)c;
		}
	}
	*o++ = '"';
	return (size_t)(o - out);
}

int tf_json_dup_text(json_object *obj, char **json, size_t *len)
{
	size_t n;
	const char *text = tf_json_text(obj, &n);

	if (!text || !(*json = tf_strndup(text, n)))
		return *json = NULL, TF_ENOMEM;
	if (len)
		*len = n;
	return TF_OK;
}

json_object *tf_json_list_root(const char *key, json_object **arr)
{
	json_object *root = json_object_new_object();

	*arr = json_object_new_array();
	if (!root || !*arr) {
		json_object_put(root);
		json_object_put(*arr);
		return *arr = NULL, NULL;
	}
	json_object_object_add(root, key, *arr);
	return root;
}
