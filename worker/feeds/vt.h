/* VirusTotal API v3 content (docs/SPEC.md §4, docs/FEEDS.md "VirusTotal API v3"): the pure
 * half of the virustotal feed driver — what a configured target is, what a
 * lookup answer says, and the record kept for it. No I/O and no run: the
 * unit tests and the fuzzer call these directly; vt.c drives them. */
#ifndef TF_VT_H
#define TF_VT_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"   /* TF_VT_MAX_DOMAIN */

typedef enum tf_vt_kind { TF_VT_FILE, TF_VT_DOMAIN, TF_VT_IP, TF_VT_URL } tf_vt_kind;

/* One lookup. Strings are owned: tf_vt_target_free(). */
typedef struct tf_vt_target {
	tf_vt_kind kind;
	char *value;              /* the target as recorded: lowercase hash or domain,
	                           * canonical IP text, the URL as given */
	char *id;                 /* the path segment: value, or for a URL its
	                           * URL-safe base64 without padding (VT's URL id) */
	char *key;                /* record key "vt:<collection>:<id>" */
} tf_vt_target;

/* "files", "domains", "ip_addresses", "urls". */
const char *tf_vt_collection(tf_vt_kind kind);
/* Record type: "vt-file", "vt-domain", "vt-ip", "vt-url". */
const char *tf_vt_record_type(tf_vt_kind kind);
/* data.type VirusTotal answers with: "file", "domain", "ip_address", "url". */
const char *tf_vt_data_type(tf_vt_kind kind);

/* Classifies one configured target (surrounding white space ignored):
 * 32/40/64 hex digits → a file (MD5/SHA-1/SHA-256), an IPv4 or IPv6 address
 * → ip_addresses, http:// or https:// → urls, a host name (letters, digits,
 * '-', '_', dot-separated labels of 1..63, at least two labels, at most 253
 * bytes; a trailing dot dropped) → domains. TF_OK with *t filled;
 * TF_EINVAL with a reason in err for anything else; TF_ENOMEM. */
int tf_vt_classify(const char *target, tf_vt_target *t, char *err, size_t errlen);
void tf_vt_target_free(tf_vt_target *t);

/* URL-safe base64 (RFC 4648 §5) of src[0..n) without padding into a new
 * string (caller frees), or NULL without memory. */
char *tf_vt_base64url(const char *src, size_t n);

/* What a 200 lookup answer says. */
typedef struct tf_vt_report {
	json_object *doc;         /* owned: the parsed answer */
	json_object *stats;       /* data.attributes.last_analysis_stats (in doc), or
	                           * NULL when VirusTotal has none */
	int64_t malicious, suspicious;
	int has_reputation;
	int64_t reputation;
	int has_date;
	int64_t last_analysis_date; /* Unix seconds */
	const char *verdict;      /* "malicious", "suspicious", "harmless/undetected",
	                           * or "unknown" (no last_analysis_stats) */
} tf_vt_report;

/* Parses the body of a 200 answer to a lookup of kind, with the depth limit
 * TF_MAX_FEED_JSON_DEPTH. TF_OK with *rep (tf_vt_report_free, also safe after
 * a failure). TF_EPARSE when the answer itself is wrong: not JSON, invalid
 * UTF-8, too deep, not an object, `data` not an object, `data.attributes`
 * not an object (the driver fails the run). TF_EINVAL when a field we read
 * has the wrong type or value: data.type not the kind's type name,
 * last_analysis_stats not an object of non-negative integers, reputation or
 * last_analysis_date not integers (the driver skips the target). err gets
 * one line. TF_ENOMEM. */
int tf_vt_report_parse(const char *body, size_t len, tf_vt_kind kind, tf_vt_report *rep,
                       char *err, size_t errlen);
void tf_vt_report_free(tf_vt_report *rep);

/* The `error.code` of a VirusTotal error answer ({"error":{"code","message"}})
 * into code and its message into msg (control characters replaced); both ""
 * when the body is not such an answer (an HTML page, say). */
void tf_vt_error(const char *body, size_t len, char *code, size_t codelen, char *msg,
                 size_t msglen);

/* The record's object, compact JSON:
 * {"target","last_analysis_stats","reputation","last_analysis_date","verdict"}
 * — from rep, or with rep NULL the not-found result (nulls, verdict
 * "not_found"). TF_OK with *obj (caller puts; its text via tf_json_text) or
 * TF_ENOMEM. */
int tf_vt_record(const tf_vt_target *t, const tf_vt_report *rep, json_object **obj);

/* The record's observables: [{"type","value"}] in the STIX vocabulary
 * (file:hashes.MD5/SHA-1/SHA-256, domain-name, ipv4-addr/ipv6-addr, url).
 * Caller puts; NULL without memory. */
json_object *tf_vt_observables(const tf_vt_target *t);

/* The one warning of a run that paces `lookups` lookups to `rpm` requests a
 * minute (the first goes out at once, each next one 60/rpm s later), so the
 * task says why it waits without a line per wait: "paced at 4 requests/min
 * (options.requests_per_minute): 20 lookups take about 5 min". */
void tf_vt_pacing_note(int rpm, size_t lookups, char *buf, size_t len);

#include "run.h"

/* The VirusTotal driver: one lookup per target, paced to the budget. */
int tf_vt_run(tf_run *r);

#endif
