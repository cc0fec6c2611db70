#include "util.h"
#include "err.h"
#include "tf_limits.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

int64_t tf_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t tf_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date and back (H. Hinnant's
 * civil-calendar algorithms): exact, and without the time-zone and locale
 * work of timegm/strftime, which cost more than storing a record. */
static int64_t days_from_civil(int64_t y, int64_t m, int64_t d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b < 0);
}

void tf_time_format(int64_t us, char *buf, size_t len)
{
	int64_t sec = floor_div(us, 1000000), days = floor_div(sec, 86400), y;
	int64_t in_day = sec - days * 86400;
	int m, d;

	civil_from_days(days, &y, &m, &d);
	snprintf(buf, len, "%04lld-%02d-%02dT%02d:%02d:%02d.%06dZ", (long long)y, m, d,
	         (int)(in_day / 3600), (int)(in_day / 60 % 60), (int)(in_day % 60),
	         (int)(us - sec * 1000000));
}

static int digits(const char **p, int n, int *out)
{
	int v = 0;
	for (int i = 0; i < n; i++, (*p)++) {
		if (!isdigit((unsigned char)**p))
			return -1;
		v = v * 10 + (**p - '0');
	}
	*out = v;
	return 0;
}

int tf_time_parse(const char *s, int64_t *us)
{
	int y, mo, d, h, mi, se, frac = 0, scale = 1000000;
	const char *p = s;

	if (!s || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
	    digits(&p, 2, &d) || (*p != 'T' && *p != 't' && *p != ' '))
		return TF_EINVAL;
	p++;
	if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi) || *p++ != ':' ||
	    digits(&p, 2, &se))
		return TF_EINVAL;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return TF_EINVAL;
		for (; isdigit((unsigned char)*p); p++)
			if (scale > 1) {
				scale /= 10;
				frac += (*p - '0') * scale;
			}
	}
	if (*p == 'Z' || *p == 'z')
		p++;
	else if (!strcmp(p, "+00:00"))
		p += 6;
	if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60)
		return TF_EINVAL;
	/* Linear in the day, like timegm: "02-30" is March 2nd. */
	*us = ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * (int64_t)60000000 +
	      (int64_t)se * 1000000 + frac;
	return TF_OK;
}

int tf_uuid_v4(char *buf, size_t len)
{
	unsigned char b[16];
	size_t got = 0;

	while (got < sizeof b) {
		ssize_t n = getrandom(b + got, sizeof b - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return TF_ESYS;
		}
		got += (size_t)n;
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(buf, len,
	         "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11],
	         b[12], b[13], b[14], b[15]);
	return TF_OK;
}

int tf_valid_uuid(const char *s)
{
	if (!s || strlen(s) != TF_UUID_LEN)
		return 0;
	for (int i = 0; i < TF_UUID_LEN; i++) {
		int dash = (i == 8 || i == 13 || i == 18 || i == 23);
		if (dash ? s[i] != '-' : !(isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	}
	return 1;
}

int tf_valid_webhook_url(const char *s)
{
	size_t n = strlen(s), scheme;

	if (!strncasecmp(s, "http://", 7))
		scheme = 7;
	else if (!strncasecmp(s, "https://", 8))
		scheme = 8;
	else
		return 0;
	if (n > TF_WEBHOOK_MAX_URL || n == scheme || s[scheme] == '/')
		return 0;
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
			return 0;
	return 1;
}

int tf_valid_feed_id(const char *s)
{
	static const char *const reserved[] = {"tasks", "task-status", "cancel-task",
	                                       TF_TAXII_ALL_COLLECTION};
	size_t n;

	if (!s || !((*s >= 'a' && *s <= 'z') || isdigit((unsigned char)*s)))
		return 0;
	n = strlen(s);
	if (n > TF_MAX_FEED_ID)
		return 0;
	for (size_t i = 1; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || isdigit((unsigned char)s[i]) || s[i] == '_' ||
		      s[i] == '-'))
			return 0;
	for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
		if (!strcmp(s, reserved[i]))
			return 0;
	return 1;
}

uint64_t tf_hash64_more(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* The ETag seed is not FNV's offset basis (a digit short); ETags only need
 * to be stable, and changing it would change every ETag clients hold. */
uint64_t tf_hash64(const void *data, size_t len)
{
	return tf_hash64_more(1469598103934665603ULL, data, len);
}

void tf_url_enc_append(char *dst, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	dst += strlen(dst);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
			*dst++ = (char)c;
		} else {
			*dst++ = '%';
			*dst++ = hex[c >> 4];
			*dst++ = hex[c & 15];
		}
	}
	*dst = '\0';
}

uint64_t tf_host_id(void)
{
	static uint64_t id;
	char boot[64] = "", ns[64] = "";
	FILE *f;
	ssize_t n;

	if (id)
		return id;
	if ((f = fopen("/proc/sys/kernel/random/boot_id", "r"))) {
		if (!fgets(boot, sizeof boot, f))
			boot[0] = '\0';
		fclose(f);
	}
	if ((n = readlink("/proc/self/ns/pid", ns, sizeof ns - 1)) > 0)
		ns[n] = '\0';
	id = tf_hash64_more(tf_hash64(boot, strlen(boot)), ns, strlen(ns));
	return id ? id : 1;
}

uint64_t tf_proc_start(pid_t pid)
{
	char path[64], buf[1024];
	FILE *f;
	size_t n;
	char *p;
	unsigned long long start = 0;

	if (pid <= 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return 0;
	n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* comm may contain spaces and ')': fields start after the last ')'. */
	if (!(p = strrchr(buf, ')')))
		return 0;
	/* field 3 is state; start time is field 22. A zombie counts as gone. */
	if (p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
		return 0;
	p += 2;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	if (!p || sscanf(p, "%llu", &start) != 1)
		return 0;
	return start ? start : 1;
}

int tf_proc_alive(pid_t pid, uint64_t start)
{
	uint64_t now = tf_proc_start(pid);
	return now != 0 && now == start;
}

int tf_parse_i64(const char *s, int64_t min, int64_t max, int64_t *out)
{
	uint64_t v = 0, limit;
	int neg = 0, over = 0;

	if (!s)
		return TF_EINVAL;
	if (*s == '-' && min < 0)
		neg = 1, s++;
	if (!*s)
		return TF_EINVAL;
	limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return TF_EINVAL;
		if (v > (limit - (uint64_t)(*s - '0')) / 10)
			over = 1; /* keep reading: "1e9999…" is malformed, not too big */
		else
			v = v * 10 + (uint64_t)(*s - '0');
	}
	if (over)
		return TF_ELIMIT;
	if (neg) {
		int64_t x = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
		if (x < min || x > max)
			return TF_ELIMIT;
		*out = x;
		return TF_OK;
	}
	if ((int64_t)v < min || (int64_t)v > max)
		return TF_ELIMIT;
	*out = (int64_t)v;
	return TF_OK;
}

char *tf_strndup(const char *s, size_t n)
{
	char *d = malloc(n + 1);
	if (!d)
		return NULL;
	memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

void tf_set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void tf_printable(char *buf, size_t len, const char *s, size_t max, char repl)
{
	size_t i = 0;

	if (!len)
		return;
	for (; s && *s && i + 1 < len && i < max; s++)
		buf[i++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? repl : *s;
	buf[i] = '\0';
}

int tf_seen_add(tf_seen *set, const char *s)
{
	uint64_t h = tf_hash64(s, strlen(s));
	size_t i;

	if (!h)
		h = 1; /* 0 marks an empty slot */
	if (2 * (set->n + 1) > set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 256;
		uint64_t *slots = calloc(cap, sizeof *slots);
		if (!slots)
			return -1;
		for (size_t k = 0; k < set->cap; k++)
			if (set->slots[k]) {
				for (i = set->slots[k] & (cap - 1); slots[i]; i = (i + 1) & (cap - 1))
					;
				slots[i] = set->slots[k];
			}
		free(set->slots);
		set->slots = slots;
		set->cap = cap;
	}
	for (i = h & (set->cap - 1); set->slots[i]; i = (i + 1) & (set->cap - 1))
		if (set->slots[i] == h)
			return 1;
	set->slots[i] = h;
	set->n++;
	return 0;
}

void tf_seen_free(tf_seen *set)
{
	free(set->slots);
	set->slots = NULL;
	set->n = set->cap = 0;
}
