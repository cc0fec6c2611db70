/* json-c helpers: parsing always with a depth limit, typed field access that
 * tells "absent" from "wrong type". */
#ifndef TF_JSON_H
#define TF_JSON_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

/* Parses exactly one JSON value from text[0..len) with at most max_depth
 * nesting. TF_OK with *out owned by the caller (json_object_put), or TF_EINVAL
 * with a reason in err ("invalid JSON at byte 12: unexpected character").
 * Trailing non-space bytes and invalid UTF-8 are errors. */
int tf_json_parse(const char *text, size_t len, int max_depth, json_object **out, char *err,
                  size_t errlen);

/* Field access. Each returns TF_OK, TF_ENOTFOUND (absent or null), or
 * TF_EINVAL (present with the wrong type). Strings point into obj. */
int tf_json_get_str(json_object *obj, const char *key, const char **out);
int tf_json_get_int(json_object *obj, const char *key, int64_t *out);
int tf_json_get_bool(json_object *obj, const char *key, int *out);

/* Convenience: the string at key, or NULL when absent/not a string. */
const char *tf_json_str(json_object *obj, const char *key);

/* Serialized compact text of obj; valid while obj lives. */
const char *tf_json_text(json_object *obj, size_t *len);
/* A malloc'd copy of obj's compact text (caller frees); len may be NULL. */
int tf_json_dup_text(json_object *obj, char **json, size_t *len);
/* Writes s as a quoted JSON string at out, which has room for
 * TF_JSON_QUOTED_MAX(strlen(s)) bytes; returns the bytes written (no NUL).
 * Escapes what RFC 8259 requires, as json-c does; for hot paths that build
 * JSON text without a json_object per field. */
#define TF_JSON_QUOTED_MAX(n) (6 * (n) + 2)
size_t tf_json_quote(char *out, const char *s);
/* {"<key>":[]}, the root of every list answer; *arr is its array (owned by
 * the root). NULL when out of memory. Caller owns the root. */
json_object *tf_json_list_root(const char *key, json_object **arr);

#endif
