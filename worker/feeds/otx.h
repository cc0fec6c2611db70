/* AlienVault OTX DirectConnect v1 content (docs/SPEC.md §4, docs/FEEDS.md "AlienVault
 * OTX"): the pure half of the otx feed driver — a page envelope, a pulse, an
 * indicator → one record, and the checks on a `next` URL. No I/O and no run:
 * the unit tests and the fuzzer call these directly; otx.c drives them.
 *
 * What is an error of the page and what is a bad object (see otx.c for the
 * whole policy): a body that is not JSON, or an envelope of the wrong shape,
 * makes tf_otx_page_parse() fail (the driver fails the run, nothing of the
 * page is kept); a malformed pulse or indicator makes tf_otx_pulse_read() /
 * tf_otx_indicator() return TF_EINVAL with a reason (the driver skips it and
 * counts it). Unknown indicator types are data. */
#ifndef TF_OTX_H
#define TF_OTX_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"   /* TF_OTX_MAX_ID, TF_OTX_MAX_TYPE */

/* "otx:" + pulse id + ":" + a 64-bit indicator id + NUL */
#define TF_OTX_KEY_LEN (4 + TF_OTX_MAX_ID + 1 + 20 + 1)
#define TF_OTX_TIME_LEN 26        /* "2023-08-22T09:43:18.855000" */

/* One page of /api/v1/pulses/subscribed or /api/v1/pulses/{id}/indicators:
 * {"results":[…], "count":N, "next":"url"|null, "previous":…}. */
typedef struct tf_otx_page {
	json_object *doc;         /* owned: the whole parsed page */
	json_object *results;     /* the results array, inside doc */
	size_t n;                 /* its length (<= TF_MAX_PAGE_OBJECTS) */
	int64_t count;            /* `count`, or -1 when absent or not a non-negative integer */
	const char *next;         /* `next`, or NULL when absent, null or ""; inside doc */
} tf_otx_page;

/* Parses body[0..len) with the depth limit TF_MAX_FEED_JSON_DEPTH (invalid
 * UTF-8 is an error). TF_OK with *page filled (free with tf_otx_page_free;
 * also safe to call after a failure); TF_EPARSE when the text is not JSON or
 * the envelope is wrong (not an object, `results` absent or not an array,
 * `next` neither a string nor null, a next longer than TF_MAX_URL);
 * TF_ELIMIT for more than TF_MAX_PAGE_OBJECTS results. err gets one line. */
int tf_otx_page_parse(const char *body, size_t len, tf_otx_page *page, char *err, size_t errlen);
void tf_otx_page_free(tf_otx_page *page);

/* The parts of a pulse that every record of it carries. */
typedef struct tf_otx_pulse {
	char id[TF_OTX_MAX_ID + 1];
	int64_t modified_us;      /* `modified`, else `created` (UTC when zone-less) */
	char modified[TF_OTX_TIME_LEN + 1]; /* the same, OTX style, for a cursor */
	json_object *meta;        /* owned: {"id","name","tlp","tags","modified"} as copied
	                           * into each record's object */
	json_object *indicators;  /* the pulse's `indicators` array (inside the pulse
	                           * object, not owned), or NULL when absent */
	int more_indicators;      /* more_indicators: the list is incomplete and
	                           * /api/v1/pulses/{id}/indicators has the rest */
} tf_otx_pulse;

/* Reads one element of `results`. TF_OK with *p filled (tf_otx_pulse_free;
 * valid while obj lives); TF_EINVAL with a reason in err when obj is not a
 * pulse we can key records by: not an object; id not a string of
 * [A-Za-z0-9._-]{1,64}; neither modified nor created a readable timestamp;
 * name, tlp, tags (an array of strings), indicators (an array) or
 * more_indicators (a boolean) present with the wrong type. TF_ENOMEM. */
int tf_otx_pulse_read(json_object *obj, tf_otx_pulse *p, char *err, size_t errlen);
void tf_otx_pulse_free(tf_otx_pulse *p);

/* Why tf_otx_indicator() did not produce a record although the indicator is
 * well-formed. */
typedef enum tf_otx_skip { TF_OTX_KEEP = 0, TF_OTX_INACTIVE, TF_OTX_EXPIRED } tf_otx_skip;

/* One record: key otx:<pulse id>:<indicator id>, the OTX type, the indicator
 * value, observables in the STIX vocabulary the other feeds use (IPv4 →
 * ipv4-addr, domain/hostname → domain-name, FileHash-SHA256 →
 * file:hashes.SHA-256, …; none for other types), and the object: the
 * indicator's own members plus "pulse": the pulse's meta. */
typedef struct tf_otx_rec {
	char key[TF_OTX_KEY_LEN];
	const char *type;         /* inside the indicator object */
	const char *value;        /* inside the indicator object */
	int64_t modified_us;      /* the pulse's */
	int64_t valid_until_us;   /* its `expiration` (a future one), 0: none */
	json_object *observables; /* owned, or NULL */
	json_object *object;      /* owned */
	const char *text;         /* compact JSON of object (valid while it lives) */
	size_t len;
	tf_otx_skip skip;
} tf_otx_rec;

/* Turns one indicator of pulse p into a record. TF_OK with rec->skip ==
 * TF_OTX_KEEP and *rec filled (tf_otx_rec_free); TF_ENOTFOUND with rec->skip
 * saying why a well-formed indicator is not kept (is_active 0 or false, an
 * expiration before now_us); TF_EINVAL with a reason in err for a malformed
 * one (not an object; id not a non-negative integer; indicator not a
 * non-empty string without NUL; type not [A-Za-z0-9 ._-]{1,64}; is_active
 * not an integer or boolean; expiration not null, "" or a readable
 * timestamp); TF_ENOMEM. */
int tf_otx_indicator(const tf_otx_pulse *p, json_object *ind, int64_t now_us, tf_otx_rec *rec,
                     char *err, size_t errlen);
void tf_otx_rec_free(tf_otx_rec *rec);

/* May the driver follow next (from a page of base's feed) with the API key?
 * TF_OK when next is an absolute http(s) URL on the same host and port as
 * base and not a downgrade from https to http; else TF_EINVAL with a reason
 * in err. */
int tf_otx_next_ok(const char *base, const char *next, char *err, size_t errlen);

/* us as an OTX timestamp "YYYY-MM-DDTHH:MM:SS.ffffff" (UTC, no zone) into buf
 * (>= TF_OTX_TIME_LEN + 1 bytes). */
void tf_otx_format_time(int64_t us, char *buf, size_t len);

#include "run.h"

/* The OTX driver: every subscribed pulse modified since the feed position. */
int tf_otx_run(tf_run *r);

#endif
