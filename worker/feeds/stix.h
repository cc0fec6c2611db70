/* STIX 2.x content (docs/SPEC.md §4): one STIX object → one record (key, type,
 * version time, observables), indicator patterns → observables, and the
 * piece the two STIX feed drivers (taxii.c, bundle.c) share: feeding an
 * `objects` array into a run.
 *
 * What is data and what is an error: unknown and custom (x-…) types are data
 * (stored, no observables). An object that is not a JSON object, lacks a
 * string `type` or a `type--uuid` id of that type, or carries a field of the
 * wrong JSON type (modified, created, pattern, pattern_type) or an unreadable
 * timestamp is *skipped* with a warning and counted; a page that cannot be
 * parsed or has the wrong envelope *fails the run* (nothing of it is kept). */
#ifndef TF_STIX_H
#define TF_STIX_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "fetch.h"
#include "run.h"
#include "task.h"


typedef struct tf_stix_rec {
	const char *key;          /* the object's id; points into the object */
	const char *type;         /* points into the object */
	int64_t modified_us;      /* `modified`, else `created`, else 0 */
	json_object *observables; /* owned: array of {"type","value"}, NULL when none */
	const char *value;        /* the first observable's value, or NULL; points
	                           * into observables */
	int pattern_error;        /* an indicator whose STIX pattern could not be
	                           * read: kept, without observables */
	int64_t valid_until_us;   /* `valid_until` (STIX 2.1 §4.7), 0: none or
	                           * unreadable (then it never expires) */
	int revoked;              /* `revoked`: true */
} tf_stix_rec;

/* Reads one STIX object. TF_OK with *rec filled (free with
 * tf_stix_rec_free; key/type/value live as long as obj and rec), TF_EINVAL
 * with a one-line reason in err for a malformed object (skip it), TF_ENOMEM.
 * Observables: from an indicator's pattern (pattern_type "stix" or absent),
 * or from an observable object's own `value` (ipv4-addr, ipv6-addr,
 * domain-name, url, email-addr) or `hashes` (file). */
int tf_stix_record(json_object *obj, tf_stix_rec *rec, char *err, size_t errlen);
void tf_stix_rec_free(tf_stix_rec *rec);

/* Appends to the array `out` one {"type","value"} per distinct `path = 'v'`
 * comparison of a STIX pattern whose path is ipv4-addr:value,
 * ipv6-addr:value, domain-name:value, url:value, email-addr:value or
 * file:hashes.<MD5|SHA-1|SHA-256|SHA-512> (type "file:hashes.SHA-256"),
 * wherever it sits (AND/OR, parentheses, several observation expressions,
 * qualifiers). Other paths, other operators and NOT are ignored.
 * TF_EINVAL (err says why, out unchanged) when the pattern is malformed. */
int tf_stix_pattern(const char *pattern, json_object *out, char *err, size_t errlen);

/* ---- shared by the STIX feed drivers ------------------------------------ */

typedef struct tf_stix_stats {
	int64_t skipped;          /* malformed objects skipped in this run */
	int64_t too_large;        /* objects over TF_MAX_OBJECT_BYTES */
	int64_t pattern_errors;   /* indicators kept without observables */
	uint64_t digest;          /* of the last ingested slice's ids and versions */
	char *buf;                /* scratch for compacted object text */
	size_t cap;
} tf_stix_stats;

/* Where each element of the top-level member "objects" sits in a JSON text
 * that tf_json_parse() accepted: lets a driver store every object's own
 * bytes (whitespace outside strings removed) instead of serializing the
 * parsed tree again. TF_OK with *spans (caller frees) and *n, TF_ENOTFOUND
 * when there is no such array, TF_EINVAL when the text is not as expected,
 * TF_ENOMEM. */
typedef struct tf_stix_span {
	size_t off, len;
} tf_stix_span;
int tf_stix_spans(const char *text, size_t len, tf_stix_span **spans, size_t *n);
/* The JSON text s[0..n) on one line: whitespace outside strings removed, raw
 * control characters inside strings escaped (json-c accepts them; RFC 8259
 * does not, and a record is one line of `threatfeed export`). Writes at most
 * max bytes plus a NUL to out (which holds max + 8 bytes); returns the
 * length, or SIZE_MAX when the result would be longer than max. */
size_t tf_stix_compact(const char *s, size_t n, char *out, size_t max);

/* Adds objects[from, from + count) of a JSON array to the run's batch,
 * checking for a cancel between objects and counting objects_processed.
 * With text and spans (from tf_stix_spans on the text objects was parsed
 * from, one span per element) each object's own bytes are stored; else the
 * parsed object is serialized. Malformed objects are skipped with a warning
 * (`where` names the page, e.g. "page 3"). TF_OK, TF_ECANCELLED, or an error
 * after tf_run_fail(). */
int tf_stix_ingest(tf_run *r, json_object *objects, size_t from, size_t count, const char *text,
                   const tf_stix_span *spans, const char *where, tf_stix_stats *st);
/* One warning summing up the skipped objects, if any (end of a run). */
void tf_stix_summary(tf_run *r, const tf_stix_stats *st);
/* Frees the scratch buffer of st (the counts stay). */
void tf_stix_stats_free(tf_stix_stats *st);

#endif
