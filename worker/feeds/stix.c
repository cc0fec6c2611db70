/* STIX 2.x objects → records, patterns → observables (docs/SPEC.md §4). See stix.h
 * for what is skipped and what fails. The pattern reader follows the STIX 2.1
 * patterning grammar (STIX 2.1 §9) closely enough to tell a malformed pattern
 * from a well-formed one; it extracts only equality comparisons on the
 * observable paths we index. */
#include "stix.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "err.h"
#include "json.h"
#include "tf_limits.h"
#include "util.h"


/* ---- small helpers ------------------------------------------------------- */

/* ---- pattern lexer -------------------------------------------------------- */

enum tok {
	T_END, T_LBRACK, T_RBRACK, T_LPAREN, T_RPAREN, T_COMMA, T_OP, T_STR, T_LIT, T_PATH, T_KW
};
enum op { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE };
enum kw {
	KW_AND, KW_OR, KW_NOT, KW_FOLLOWEDBY, KW_LIKE, KW_MATCHES, KW_IN, KW_ISSUBSET,
	KW_ISSUPERSET, KW_EXISTS, KW_START, KW_STOP, KW_WITHIN, KW_SECONDS, KW_REPEATS, KW_TIMES,
	KW_TRUE, KW_FALSE, KW__COUNT
};
static const char *const kw_names[KW__COUNT] = {
	"AND", "OR", "NOT", "FOLLOWEDBY", "LIKE", "MATCHES", "IN", "ISSUBSET", "ISSUPERSET",
	"EXISTS", "START", "STOP", "WITHIN", "SECONDS", "REPEATS", "TIMES", "true", "false",
};

typedef struct plex {
	const char *start;        /* the whole pattern, for byte offsets */
	const char *p;            /* next unread byte */
	enum tok t;               /* current token */
	const char *s;            /* its text */
	size_t n;
	int sub;                  /* T_OP: enum op; T_KW: enum kw; T_LIT: 't','h','b','n' */
	char *str;                /* T_STR: decoded value (buffer of strlen(pattern)+1) */
	json_object *out;         /* observables found so far */
	int depth;
	char *err;
	size_t errlen;
} plex;

static int perr(plex *x, const char *what)
{
	tf_set_err(x->err, x->errlen, "pattern: %s at byte %td", what, x->s - x->start);
	return TF_EINVAL;
}

static int is_ident(int c)
{
	return isalnum(c) || c == '_' || c == '-';
}

/* A quoted string starting at *pp (on the quote); with dst, decodes into it.
 * STIX escapes are \' and \\ only (STIX 2.1 §9.2). */
static int lex_quoted(const char **pp, char *dst, size_t *dlen)
{
	const char *p = *pp + 1;
	size_t n = 0;

	for (;; p++) {
		if (!*p)
			return -1;
		if (*p == '\'')
			break;
		if (*p == '\\') {
			if (p[1] != '\'' && p[1] != '\\')
				return -2;
			p++;
		}
		if (dst)
			dst[n] = *p;
		n++;
	}
	if (dst)
		dst[n] = '\0';
	if (dlen)
		*dlen = n;
	*pp = p + 1;
	return 0;
}

static int lex_next(plex *x)
{
	const char *p = x->p;
	int rc;

	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	x->s = p;
	switch (*p) {
	case '\0': x->t = T_END; break;
	case '[': x->t = T_LBRACK; p++; break;
	case ']': x->t = T_RBRACK; p++; break;
	case '(': x->t = T_LPAREN; p++; break;
	case ')': x->t = T_RPAREN; p++; break;
	case ',': x->t = T_COMMA; p++; break;
	case '=': x->t = T_OP; x->sub = OP_EQ; p++; break;
	case '!':
		if (p[1] != '=')
			return perr(x, "unexpected '!'");
		x->t = T_OP; x->sub = OP_NE; p += 2;
		break;
	case '<':
	case '>':
		x->t = T_OP;
		x->sub = *p == '<' ? (p[1] == '=' ? OP_LE : OP_LT) : (p[1] == '=' ? OP_GE : OP_GT);
		p += p[1] == '=' ? 2 : 1;
		break;
	case '\'':
		x->t = T_STR;
		rc = lex_quoted(&p, x->str, NULL);
		if (rc)
			return perr(x, rc == -1 ? "unterminated string" : "invalid escape in string");
		break;
	default:
		if ((*p == 't' || *p == 'h' || *p == 'b') && p[1] == '\'') {
			x->t = T_LIT;
			x->sub = *p++;
			if (lex_quoted(&p, NULL, NULL))
				return perr(x, "unterminated literal");
		} else if (isdigit((unsigned char)*p) ||
		           ((*p == '-' || *p == '+') && isdigit((unsigned char)p[1]))) {
			x->t = T_LIT;
			x->sub = 'n';
			p++;
			while (isdigit((unsigned char)*p))
				p++;
			if (*p == '.' && isdigit((unsigned char)p[1]))
				for (p++; isdigit((unsigned char)*p); p++)
					;
			if (is_ident((unsigned char)*p))
				return perr(x, "malformed number");
		} else if (isalpha((unsigned char)*p) || *p == '_') {
			while (is_ident((unsigned char)*p))
				p++;
			if (*p == ':') {
				/* object-type ':' component ( '.' component | '[' index ']' )* */
				x->t = T_PATH;
				p++;
				for (int first = 1;; first = 0) {
					if (!first && *p == '[') {
						p++;
						if (*p == '*')
							p++;
						else if (isdigit((unsigned char)*p) || *p == '-')
							for (p++; isdigit((unsigned char)*p); p++)
								;
						else
							return perr(x, "malformed object path index");
						if (*p++ != ']')
							return perr(x, "malformed object path index");
						continue;
					}
					if (!first) {
						if (*p != '.')
							break;
						p++;
					}
					if (*p == '\'') {
						if (lex_quoted(&p, NULL, NULL))
							return perr(x, "unterminated object path");
					} else if (is_ident((unsigned char)*p)) {
						while (is_ident((unsigned char)*p))
							p++;
					} else {
						return perr(x, "malformed object path");
					}
				}
			} else {
				size_t n = (size_t)(p - x->s);
				int k;

				for (k = 0; k < KW__COUNT; k++)
					if (strlen(kw_names[k]) == n && !strncasecmp(x->s, kw_names[k], n))
						break;
				if (k == KW__COUNT)
					return perr(x, "unknown keyword");
				if (k == KW_TRUE || k == KW_FALSE) {
					x->t = T_LIT;
					x->sub = 'n';
				} else {
					x->t = T_KW;
					x->sub = k;
				}
			}
		} else {
			return perr(x, "unexpected character");
		}
	}
	x->n = (size_t)(p - x->s);
	x->p = p;
	return TF_OK;
}

static int is_kw(const plex *x, enum kw k)
{
	return x->t == T_KW && x->sub == (int)k;
}

static int expect(plex *x, enum tok t, const char *what)
{
	if (x->t != t)
		return perr(x, what);
	return lex_next(x);
}

/* ---- observables ---------------------------------------------------------- */

/* The observable type for an object path we index, or NULL. Hash names are
 * compared without case, quotes, '-' or '_' (SHA256, 'SHA-256', sha_256). */
static const char *path_type(const char *s, size_t n, char *buf, size_t buflen)
{
	static const char *const plain[] = {"ipv4-addr:value", "ipv6-addr:value",
	                                    "domain-name:value", "url:value", "email-addr:value"};
	static const char *const hashes[][2] = {
		{"MD5", "MD5"}, {"SHA1", "SHA-1"}, {"SHA256", "SHA-256"}, {"SHA512", "SHA-512"}};
	static const char pre[] = "file:hashes.";
	char name[16];
	size_t k = 0;

	for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
		if (strlen(plain[i]) == n && !memcmp(s, plain[i], n)) {
			snprintf(buf, buflen, "%.*s", (int)(strchr(plain[i], ':') - plain[i]), plain[i]);
			return buf;
		}
	if (n <= sizeof pre - 1 || memcmp(s, pre, sizeof pre - 1))
		return NULL;
	s += sizeof pre - 1;
	n -= sizeof pre - 1;
	if (n >= 2 && s[0] == '\'' && s[n - 1] == '\'') {
		s++;
		n -= 2;
	}
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '-' || s[i] == '_')
			continue;
		if (!isalnum((unsigned char)s[i]) || k + 1 >= sizeof name)
			return NULL;
		name[k++] = (char)toupper((unsigned char)s[i]);
	}
	name[k] = '\0';
	for (size_t i = 0; i < sizeof hashes / sizeof hashes[0]; i++)
		if (!strcmp(name, hashes[i][0])) {
			snprintf(buf, buflen, "file:hashes.%s", hashes[i][1]);
			return buf;
		}
	return NULL;
}

/* Appends {"type","value"} unless present or over the cap. */
static int add_observable(json_object *arr, const char *type, const char *value, size_t vlen)
{
	size_t n = json_object_array_length(arr);
	json_object *o;

	if (!vlen || n >= TF_STIX_MAX_OBSERVABLES)
		return TF_OK;
	for (size_t i = 0; i < n; i++) {
		json_object *e = json_object_array_get_idx(arr, i);
		json_object *t, *v;
		if (json_object_object_get_ex(e, "type", &t) && json_object_object_get_ex(e, "value", &v) &&
		    !strcmp(json_object_get_string(t), type) &&
		    (size_t)json_object_get_string_len(v) == vlen &&
		    !memcmp(json_object_get_string(v), value, vlen))
			return TF_OK;
	}
	if (!(o = json_object_new_object()))
		return TF_ENOMEM;
	if (json_object_object_add(o, "type", json_object_new_string(type)) ||
	    json_object_object_add(o, "value", json_object_new_string_len(value, (int)vlen)) ||
	    json_object_array_add(arr, o)) {
		json_object_put(o);
		return TF_ENOMEM;
	}
	return TF_OK;
}

/* ---- pattern parser (STIX 2.1 §9, recursive descent, bounded depth) ------ */

static int p_obs_expr(plex *x);
static int p_cmp_expr(plex *x);

static int p_literal(plex *x)
{
	if (x->t != T_STR && x->t != T_LIT)
		return perr(x, "expected a literal");
	return lex_next(x);
}

static int p_cmp_unit(plex *x)
{
	const char *path;
	size_t plen;
	int neg = 0, rc;

	if (x->t == T_LPAREN) {
		if (++x->depth > TF_STIX_MAX_PATTERN_DEPTH)
			return perr(x, "nested too deeply");
		if ((rc = lex_next(x)) || (rc = p_cmp_expr(x)) ||
		    (rc = expect(x, T_RPAREN, "expected ')'")))
			return rc;
		x->depth--;
		return TF_OK;
	}
	if (is_kw(x, KW_EXISTS)) {
		if ((rc = lex_next(x)))
			return rc;
		return expect(x, T_PATH, "expected an object path after EXISTS");
	}
	if (x->t != T_PATH)
		return perr(x, "expected an object path");
	path = x->s;
	plen = x->n;
	if ((rc = lex_next(x)))
		return rc;
	if (is_kw(x, KW_NOT)) {
		neg = 1;
		if ((rc = lex_next(x)))
			return rc;
	}
	if (x->t == T_OP) {
		int eq = x->sub == OP_EQ;
		if ((rc = lex_next(x)))
			return rc;
		if (eq && !neg && x->t == T_STR) {
			char buf[32];
			const char *type = path_type(path, plen, buf, sizeof buf);
			if (type && (rc = add_observable(x->out, type, x->str, strlen(x->str))))
				return rc;
		}
		return p_literal(x);
	}
	if (is_kw(x, KW_LIKE) || is_kw(x, KW_MATCHES) || is_kw(x, KW_ISSUBSET) ||
	    is_kw(x, KW_ISSUPERSET)) {
		if ((rc = lex_next(x)))
			return rc;
		return expect(x, T_STR, "expected a string");
	}
	if (is_kw(x, KW_IN)) {
		if ((rc = lex_next(x)) || (rc = expect(x, T_LPAREN, "expected '(' after IN")) ||
		    (rc = p_literal(x)))
			return rc;
		while (x->t == T_COMMA)
			if ((rc = lex_next(x)) || (rc = p_literal(x)))
				return rc;
		return expect(x, T_RPAREN, "expected ')' after the IN set");
	}
	return perr(x, "expected a comparison operator");
}

static int p_cmp_expr(plex *x)
{
	int rc = p_cmp_unit(x);

	while (!rc && (is_kw(x, KW_AND) || is_kw(x, KW_OR)))
		if (!(rc = lex_next(x)))
			rc = p_cmp_unit(x);
	return rc;
}

static int p_qualifiers(plex *x)
{
	int rc = TF_OK;

	for (;;) {
		if (is_kw(x, KW_START)) {
			if ((rc = lex_next(x)))
				return rc;
			if (x->t != T_LIT || x->sub != 't')
				return perr(x, "expected t'…' after START");
			if ((rc = lex_next(x)))
				return rc;
			if (!is_kw(x, KW_STOP))
				return perr(x, "expected STOP");
			if ((rc = lex_next(x)))
				return rc;
			if (x->t != T_LIT || x->sub != 't')
				return perr(x, "expected t'…' after STOP");
			rc = lex_next(x);
		} else if (is_kw(x, KW_WITHIN) || is_kw(x, KW_REPEATS)) {
			enum kw unit = is_kw(x, KW_WITHIN) ? KW_SECONDS : KW_TIMES;
			if ((rc = lex_next(x)))
				return rc;
			if (x->t != T_LIT || x->sub != 'n')
				return perr(x, "expected a number");
			if ((rc = lex_next(x)))
				return rc;
			if (!is_kw(x, unit))
				return perr(x, unit == KW_SECONDS ? "expected SECONDS" : "expected TIMES");
			rc = lex_next(x);
		} else {
			return TF_OK;
		}
		if (rc)
			return rc;
	}
}

static int p_obs_unit(plex *x)
{
	int rc;

	if (x->t != T_LBRACK && x->t != T_LPAREN)
		return perr(x, "expected '[' or '('");
	if (++x->depth > TF_STIX_MAX_PATTERN_DEPTH)
		return perr(x, "nested too deeply");
	if (x->t == T_LBRACK) {
		if ((rc = lex_next(x)) || (rc = p_cmp_expr(x)) ||
		    (rc = expect(x, T_RBRACK, "expected ']'")))
			return rc;
	} else {
		if ((rc = lex_next(x)) || (rc = p_obs_expr(x)) ||
		    (rc = expect(x, T_RPAREN, "expected ')'")))
			return rc;
	}
	x->depth--;
	return p_qualifiers(x);
}

static int p_obs_expr(plex *x)
{
	int rc = p_obs_unit(x);

	while (!rc && (is_kw(x, KW_AND) || is_kw(x, KW_OR) || is_kw(x, KW_FOLLOWEDBY)))
		if (!(rc = lex_next(x)))
			rc = p_obs_unit(x);
	return rc;
}

int tf_stix_pattern(const char *pattern, json_object *out, char *err, size_t errlen)
{
	plex x = {0};
	size_t before;
	int rc;

	if (!pattern || !out || !json_object_is_type(out, json_type_array))
		return TF_EINVAL;
	if (!(x.str = malloc(strlen(pattern) + 1)))
		return TF_ENOMEM;
	before = json_object_array_length(out);
	x.start = x.p = x.s = pattern;
	x.out = out;
	x.err = err;
	x.errlen = errlen;
	rc = lex_next(&x);
	if (!rc && x.t == T_END)
		rc = perr(&x, "empty");
	if (!rc)
		rc = p_obs_expr(&x);
	if (!rc && x.t != T_END)
		rc = perr(&x, "unexpected text after the pattern");
	/* All or nothing: a malformed pattern contributes no observables. */
	if (rc && json_object_array_length(out) > before)
		json_object_array_del_idx(out, before, json_object_array_length(out) - before);
	free(x.str);
	return rc;
}

/* ---- objects -------------------------------------------------------------- */

static int valid_type(const char *t)
{
	size_t n = strlen(t);

	if (!n || n > TF_STIX_MAX_TYPE_LEN)
		return 0;
	for (; *t; t++)
		if (!((*t >= 'a' && *t <= 'z') || isdigit((unsigned char)*t) || *t == '-'))
			return 0;
	return 1;
}

/* `type--uuid`: STIX 2.1 §2.9 (any UUID version; v5 ids are common). */
static int valid_id(const char *id, const char *type)
{
	size_t n = strlen(type);

	if (strncmp(id, type, n) || strncmp(id + n, "--", 2))
		return 0;
	id += n + 2;
	if (strlen(id) != 36)
		return 0;
	for (int i = 0; i < 36; i++) {
		int dash = (i == 8 || i == 13 || i == 18 || i == 23);
		if (dash ? id[i] != '-' : !isxdigit((unsigned char)id[i]))
			return 0;
	}
	return 1;
}

static int get_time(json_object *obj, const char *key, int64_t *us, char *err, size_t errlen)
{
	const char *s;
	int rc = tf_json_get_str(obj, key, &s);

	if (rc == TF_EINVAL) {
		tf_set_err(err, errlen, "%s is not a string", key);
		return TF_EINVAL;
	}
	if (rc)
		return TF_ENOTFOUND;
	if (tf_time_parse(s, us)) {
		char shown[48];
		tf_printable(shown, sizeof shown, s, 40, ' ');
		tf_set_err(err, errlen, "%s is not an RFC 3339 timestamp: \"%s\"", key, shown);
		return TF_EINVAL;
	}
	return TF_OK;
}

/* Observables of an indicator's pattern; a malformed pattern is noted, not
 * fatal: the indicator is data and is kept. */
static int indicator_observables(json_object *obj, json_object *arr, int *pattern_error, char *err,
                                 size_t errlen)
{
	const char *pattern, *ptype;
	char perrbuf[128];
	int rc;

	rc = tf_json_get_str(obj, "pattern_type", &ptype);
	if (rc == TF_EINVAL) {
		tf_set_err(err, errlen, "pattern_type is not a string");
		return TF_EINVAL;
	}
	if (rc == TF_OK && strcmp(ptype, "stix")) {
		/* Other languages (sigma, yara, snort, …) are kept as data. Still
		 * reject a non-string pattern: the object is malformed either way. */
		if (tf_json_get_str(obj, "pattern", &pattern) == TF_EINVAL) {
			tf_set_err(err, errlen, "pattern is not a string");
			return TF_EINVAL;
		}
		return TF_OK;
	}
	rc = tf_json_get_str(obj, "pattern", &pattern);
	if (rc == TF_EINVAL) {
		tf_set_err(err, errlen, "pattern is not a string");
		return TF_EINVAL;
	}
	if (rc)
		return TF_OK; /* no pattern: nothing to extract */
	rc = tf_stix_pattern(pattern, arr, perrbuf, sizeof perrbuf);
	if (rc == TF_EINVAL) {
		*pattern_error = 1;
		tf_set_err(err, errlen, "%s", perrbuf);
		return TF_OK;
	}
	return rc;
}

/* Observables of a cyber-observable object (STIX 2.1 §6). */
static int sco_observables(json_object *obj, const char *type, json_object *arr)
{
	static const char *const valued[] = {"ipv4-addr", "ipv6-addr", "domain-name", "url",
	                                     "email-addr"};
	json_object *hashes;
	const char *v;

	for (size_t i = 0; i < sizeof valued / sizeof valued[0]; i++)
		if (!strcmp(type, valued[i]))
			return (v = tf_json_str(obj, "value")) ? add_observable(arr, type, v, strlen(v))
			                                       : TF_OK;
	if (strcmp(type, "file") || !json_object_object_get_ex(obj, "hashes", &hashes) ||
	    !json_object_is_type(hashes, json_type_object))
		return TF_OK;
	json_object_object_foreach(hashes, name, val) {
		char path[64], buf[32];
		const char *t;
		int rc;

		if (!json_object_is_type(val, json_type_string))
			continue;
		snprintf(path, sizeof path, "file:hashes.%s", name);
		if ((t = path_type(path, strlen(path), buf, sizeof buf)) &&
		    (rc = add_observable(arr, t, json_object_get_string(val),
		                         (size_t)json_object_get_string_len(val))))
			return rc;
	}
	return TF_OK;
}

/* valid_until and revoked (STIX 2.1 §3.2, §4.7): they only decide whether
 * the index offers the object's values, so an unreadable valid_until is no
 * reason to skip the object; it then never expires. */
static void life(json_object *obj, tf_stix_rec *rec)
{
	const char *s;
	int64_t us;
	int b;

	if (tf_json_get_str(obj, "valid_until", &s) == TF_OK && !tf_time_parse(s, &us))
		rec->valid_until_us = us > 0 ? us : 1;
	if (tf_json_get_bool(obj, "revoked", &b) == TF_OK)
		rec->revoked = b;
}

int tf_stix_record(json_object *obj, tf_stix_rec *rec, char *err, size_t errlen)
{
	const char *type, *id;
	json_object *arr;
	int64_t us = 0;
	int rc;

	memset(rec, 0, sizeof *rec);
	if (!obj || !json_object_is_type(obj, json_type_object)) {
		tf_set_err(err, errlen, "not a JSON object");
		return TF_EINVAL;
	}
	rc = tf_json_get_str(obj, "type", &type);
	if (rc) {
		tf_set_err(err, errlen, rc == TF_EINVAL ? "type is not a string" : "no type");
		return TF_EINVAL;
	}
	if (!valid_type(type)) {
		tf_set_err(err, errlen, "type is not a STIX type name");
		return TF_EINVAL;
	}
	rc = tf_json_get_str(obj, "id", &id);
	if (rc) {
		tf_set_err(err, errlen, rc == TF_EINVAL ? "id is not a string" : "no id");
		return TF_EINVAL;
	}
	if (!valid_id(id, type)) {
		tf_set_err(err, errlen, "id is not of the form %s--<uuid>", type);
		return TF_EINVAL;
	}
	/* Versions are told apart by `modified` (STIX 2.1 §3.2); objects without
	 * it use `created`; marking definitions and cyber-observables may have
	 * neither: version 0. A timestamp that is present must be valid. */
	rc = get_time(obj, "modified", &us, err, errlen);
	if (rc == TF_ENOTFOUND)
		rc = get_time(obj, "created", &us, err, errlen);
	else if (rc == TF_OK) {
		int64_t c;
		if (get_time(obj, "created", &c, err, errlen) == TF_EINVAL)
			return TF_EINVAL;
	}
	if (rc == TF_EINVAL)
		return TF_EINVAL;
	if (rc == TF_ENOTFOUND)
		us = 0;
	if (!(arr = json_object_new_array()))
		return TF_ENOMEM;
	rec->key = id;
	rec->type = type;
	rec->modified_us = us;
	life(obj, rec);
	if (!strcmp(type, "indicator"))
		rc = indicator_observables(obj, arr, &rec->pattern_error, err, errlen);
	else
		rc = sco_observables(obj, type, arr);
	if (rc) {
		json_object_put(arr);
		memset(rec, 0, sizeof *rec);
		return rc;
	}
	if (json_object_array_length(arr)) {
		json_object *v;
		json_object_object_get_ex(json_object_array_get_idx(arr, 0), "value", &v);
		rec->observables = arr;
		rec->value = json_object_get_string(v);
	} else {
		json_object_put(arr);
	}
	return TF_OK;
}

void tf_stix_rec_free(tf_stix_rec *rec)
{
	if (!rec)
		return;
	json_object_put(rec->observables);
	memset(rec, 0, sizeof *rec);
}

/* ---- feeding a run --------------------------------------------------------- */

static void skip_warn(tf_run *r, tf_stix_stats *st, int64_t *counter, const char *where,
                      size_t i, json_object *obj, const char *why)
{
	char id[80];
	const char *s = tf_json_str(obj, "id");

	(*counter)++;
	if (st->skipped + st->too_large + st->pattern_errors > TF_STIX_MAX_SKIP_WARNINGS)
		return;
	tf_printable(id, sizeof id, s ? s : "", 72, ' ');
	tf_run_warn(r, "%s: objects[%zu]%s%s%s skipped: %s", where, i, *id ? " (" : "", id,
	            *id ? ")" : "", why);
}

/* ---- object text from the page's own bytes ---------------------------------- */

/* The scanners below run on text tf_json_parse() accepted, so they only need
 * to find boundaries; each still checks bounds and reports SIZE_MAX when
 * something is not as expected (the caller then serializes instead). */
static size_t skip_ws(const char *s, size_t i, size_t n)
{
	while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
		i++;
	return i;
}

static size_t skip_string(const char *s, size_t i, size_t n)
{
	for (i++; i < n; i++) {
		if (s[i] == '\\')
			i++;
		else if (s[i] == '"')
			return i + 1;
	}
	return SIZE_MAX;
}

static size_t skip_value(const char *s, size_t i, size_t n)
{
	size_t depth = 0;

	if (i >= n)
		return SIZE_MAX;
	if (s[i] == '"')
		return skip_string(s, i, n);
	if (s[i] != '{' && s[i] != '[') {
		while (i < n && !strchr(",}] \t\r\n", s[i]))
			i++;
		return i;
	}
	while (i < n) {
		char c = s[i];
		if (c == '"') {
			if ((i = skip_string(s, i, n)) == SIZE_MAX)
				return SIZE_MAX;
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if ((c == '}' || c == ']') && --depth == 0)
			return i + 1;
		i++;
	}
	return SIZE_MAX;
}

int tf_stix_spans(const char *s, size_t n, tf_stix_span **spans, size_t *count)
{
	tf_stix_span *out = NULL;
	size_t i = skip_ws(s, 0, n), cap = 0, k = 0;
	int found = 0;

	*spans = NULL;
	*count = 0;
	if (i >= n || s[i] != '{')
		return TF_EINVAL;
	for (i = skip_ws(s, i + 1, n); i < n && s[i] != '}';) {
		size_t ks = i, ke, v;

		if (s[i] != '"' || (ke = skip_string(s, i, n)) == SIZE_MAX)
			goto bad;
		i = skip_ws(s, ke, n);
		if (i >= n || s[i] != ':')
			goto bad;
		v = i = skip_ws(s, i + 1, n);
		/* the last "objects" wins, as in json-c */
		if (ke - ks == 9 && !memcmp(s + ks, "\"objects\"", 9) && i < n && s[i] == '[') {
			found = 1;
			k = 0;
			for (i = skip_ws(s, i + 1, n); i < n && s[i] != ']';) {
				size_t e = skip_value(s, i, n);
				if (e == SIZE_MAX)
					goto bad;
				if (k == cap) {
					size_t nc = cap ? cap * 2 : 1024;
					tf_stix_span *g = realloc(out, nc * sizeof *g);
					if (!g) {
						free(out);
						return TF_ENOMEM;
					}
					out = g;
					cap = nc;
				}
				out[k].off = i;
				out[k].len = e - i;
				k++;
				i = skip_ws(s, e, n);
				if (i < n && s[i] == ',')
					i = skip_ws(s, i + 1, n);
			}
		}
		if ((i = skip_value(s, v, n)) == SIZE_MAX)
			goto bad;
		i = skip_ws(s, i, n);
		if (i < n && s[i] == ',')
			i = skip_ws(s, i + 1, n);
	}
	if (!found) {
		free(out);
		return TF_ENOTFOUND;
	}
	*spans = out;
	*count = k;
	return TF_OK;
bad:
	free(out);
	return TF_EINVAL;
}

size_t tf_stix_compact(const char *s, size_t n, char *out, size_t max)
{
	size_t o = 0;
	int in_str = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (in_str) {
			if (c == '\\' && i + 1 < n) {
				if (o + 2 > max)
					return SIZE_MAX;
				out[o++] = c;
				c = s[++i];
			} else if (c == '"') {
				in_str = 0;
			} else if ((unsigned char)c < 0x20) {
				/* json-c lets raw control characters through in strings;
				 * RFC 8259 §7 does not: escape them. */
				if (o + 6 > max)
					return SIZE_MAX;
				o += (size_t)snprintf(out + o, 7, "\\u%04x", (unsigned)c);
				continue;
			}
		} else if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
			continue;
		} else if (c == '"') {
			in_str = 1;
		}
		if (o + 1 > max)
			return SIZE_MAX;
		out[o++] = c;
	}
	out[o] = '\0';
	return o;
}

int tf_stix_ingest(tf_run *r, json_object *objects, size_t from, size_t count, const char *text,
                   const tf_stix_span *spans, const char *where, tf_stix_stats *st)
{
	tf_progress *p = tf_run_progress(r);
	uint64_t h = TF_FNV_OFFSET;
	char err[200];
	int rc;

	for (size_t i = from; i < from + count; i++) {
		json_object *obj = json_object_array_get_idx(objects, i);
		tf_stix_rec rec;
		const char *otext;
		size_t len = 0;

		if ((rc = tf_run_check(r)))
			return rc;
		p->objects_processed++;
		if (!json_object_is_type(obj, json_type_object)) {
			skip_warn(r, st, &st->skipped, where, i, NULL, "not a JSON object");
			continue;
		}
		/* Size first: a megabyte object is not worth reading a pattern from. */
		if (text && spans) {
			/* One buffer for the run, as large as a record may be (its
			 * pages that are never written are never resident). */
			if (!st->buf) {
				if (!(st->buf = malloc(TF_MAX_OBJECT_BYTES + 8)))
					goto nomem;
				st->cap = TF_MAX_OBJECT_BYTES + 8;
			}
			len = tf_stix_compact(text + spans[i].off, spans[i].len, st->buf,
			                      TF_MAX_OBJECT_BYTES);
			otext = st->buf;
		} else if (!(otext = tf_json_text(obj, &len))) {
			goto nomem;
		}
		if (len == SIZE_MAX || len > TF_MAX_OBJECT_BYTES) {
			char why[80];
			snprintf(why, sizeof why, "larger than %d bytes", TF_MAX_OBJECT_BYTES);
			skip_warn(r, st, &st->too_large, where, i, obj, why);
			continue;
		}
		rc = tf_stix_record(obj, &rec, err, sizeof err);
		if (rc == TF_EINVAL) {
			skip_warn(r, st, &st->skipped, where, i, obj, err);
			continue;
		}
		if (rc)
			goto nomem;
		if (rec.pattern_error) {
			st->pattern_errors++;
			if (st->skipped + st->too_large + st->pattern_errors <= TF_STIX_MAX_SKIP_WARNINGS)
				tf_run_warn(r, "%s: %s kept without observables: %s", where, rec.key, err);
		}
		rc = tf_run_add(r, rec.key, rec.type, rec.value, rec.observables, rec.modified_us, otext,
		                len);
		if (rc == TF_OK && (rec.valid_until_us || rec.revoked))
			rc = tf_run_set_life(r, rec.valid_until_us, rec.revoked);
		h = tf_hash64_more(h, rec.key, strlen(rec.key) + 1);
		h = tf_hash64_more(h, &rec.modified_us, sizeof rec.modified_us);
		tf_stix_rec_free(&rec);
		if (rc == TF_ELIMIT) {
			skip_warn(r, st, &st->too_large, where, i, obj, "too large to store");
			continue;
		}
		if (rc == TF_ECANCELLED)
			return rc;
		if (rc) {
			tf_run_fail(r, "%s: storing objects[%zu] failed: %s", where, i, tf_strerror(rc));
			return rc;
		}
	}
	st->digest = h;
	return TF_OK;
nomem:
	tf_run_fail(r, "%s: out of memory", where);
	return TF_ENOMEM;
}

void tf_stix_stats_free(tf_stix_stats *st)
{
	free(st->buf);
	st->buf = NULL;
	st->cap = 0;
}

void tf_stix_summary(tf_run *r, const tf_stix_stats *st)
{
	if (st->skipped + st->too_large > 0)
		tf_run_warn(r, "%lld objects skipped in total (%lld malformed, %lld too large)",
		            (long long)(st->skipped + st->too_large), (long long)st->skipped,
		            (long long)st->too_large);
	if (st->pattern_errors > 0)
		tf_run_warn(r, "%lld indicators kept without observables (pattern not understood)",
		            (long long)st->pattern_errors);
}
