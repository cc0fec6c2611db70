/* Small shared helpers: time, ids, hashing, process identity. */
#ifndef TF_UTIL_H
#define TF_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TF_UUID_LEN 36          /* textual UUID, without the NUL */
#define TF_TIME_LEN 27          /* "2026-11-25T20:25:42.123456Z" */

/* Wall clock in microseconds since the epoch. */
int64_t tf_now_us(void);
/* Monotonic clock in microseconds (for timeouts and latencies). */
int64_t tf_mono_us(void);
/* RFC 3339 UTC with microseconds into buf (>= TF_TIME_LEN + 1 bytes). */
void tf_time_format(int64_t us, char *buf, size_t len);
/* Parses RFC 3339 ("...Z" or "+00:00", optional fraction); also accepts the
 * zone-less OTX form as UTC. TF_OK or TF_EINVAL. */
int tf_time_parse(const char *s, int64_t *us);

/* A random (getrandom) UUID v4 in lowercase text form into buf (>= 37). */
int tf_uuid_v4(char *buf, size_t len);
/* Strict checks of identifiers before any lookup. */
int tf_valid_uuid(const char *s);
int tf_valid_feed_id(const char *s);   /* [a-z0-9][a-z0-9_-]{0,63}, not reserved */
/* The TAXII collection of every feed (fcgi/h_taxii.c): reserved, never a
 * feed id, so it cannot shadow a feed's collection. */
#define TF_TAXII_ALL_COLLECTION "2f4d6c1e-8b3a-4e5f-9a7c-0d1e2f3a4b5c"
/* A webhook target: http:// or https://, a host, at most TF_WEBHOOK_MAX_URL
 * bytes, no spaces or control characters (it goes into a curl call and logs). */
int tf_valid_webhook_url(const char *s);

/* FNV-1a 64-bit, for ETags. */
uint64_t tf_hash64(const void *data, size_t len);
/* FNV-1a continued from h over data: digests built from several fields
 * (the page loop guards of the feed drivers). Start from TF_FNV_OFFSET. */
#define TF_FNV_OFFSET 14695981039346656037ULL
uint64_t tf_hash64_more(uint64_t h, const void *data, size_t len);
/* Big-endian 64-bit integers in store keys: keys sort as the numbers do. */
static inline void tf_put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

static inline uint64_t tf_get_be64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

/* Appends s to the string dst, percent-encoded for a URL query value
 * (RFC 3986 unreserved characters kept); dst needs 3 * strlen(s) more bytes. */
void tf_url_enc_append(char *dst, const char *s);

/* Process identity that survives pid reuse: start time in clock ticks since
 * boot from /proc/PID/stat, or 0 when the process does not exist. */
uint64_t tf_proc_start(pid_t pid);
/* True when PID exists and still has the given start time. */
int tf_proc_alive(pid_t pid, uint64_t start);
/* Which process ids this process can see: the kernel's boot id and the PID
 * namespace, hashed (never 0). Two processes with the same host id can judge
 * each other's liveness by pid; across hosts a store lease answers. */
uint64_t tf_host_id(void);

/* Bounded, strict number parsing (never atoi/strtoll): decimal digits only —
 * no sign, space or "+", a '-' only when min < 0. TF_EINVAL when s is not
 * such a number, TF_ELIMIT when it is one outside [min, max] (or int64). */
int tf_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out);

/* A set of strings by their 64-bit hash (open addressing, doubled at half
 * load): the loop guard of paging drivers. Zero-initialise; tf_seen_free. */
typedef struct tf_seen {
	uint64_t *slots;
	size_t n, cap;
} tf_seen;
/* 1 when s was added before, 0 when it is new (now remembered), -1 no memory. */
int tf_seen_add(tf_seen *set, const char *s);
void tf_seen_free(tf_seen *set);

/* printf into an error buffer the caller may have left NULL/0. */
void tf_set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Copies at most max bytes of untrusted s into buf for a message, control
 * characters replaced by repl. */
void tf_printable(char *buf, size_t len, const char *s, size_t max, char repl);

/* malloc-or-die helpers are not used: callers handle TF_ENOMEM. */
char *tf_strndup(const char *s, size_t n);

#endif
