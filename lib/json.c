#include "json.h"
#include "err.h"

#include <stdio.h>
#include <string.h>

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
	if (!(tok = json_tokener_new_ex(max_depth)))
		return TF_ENOMEM;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
	obj = json_tokener_parse_ex(tok, text, (int)len);
	jerr = json_tokener_get_error(tok);
	used = json_tokener_get_parse_end(tok);
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
