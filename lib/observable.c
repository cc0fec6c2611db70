#include "observable.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "util.h"

static const char *const names[TF_OBS__END] = {
	[TF_OBS_IPV4] = "ipv4-addr",
	[TF_OBS_IPV6] = "ipv6-addr",
	[TF_OBS_DOMAIN] = "domain-name",
	[TF_OBS_URL] = "url",
	[TF_OBS_EMAIL] = "email-addr",
	[TF_OBS_MD5] = "file:hashes.MD5",
	[TF_OBS_SHA1] = "file:hashes.SHA-1",
	[TF_OBS_SHA256] = "file:hashes.SHA-256",
	[TF_OBS_SHA512] = "file:hashes.SHA-512",
};

const char *tf_obs_name(int kind)
{
	return kind > 0 && kind < TF_OBS__END ? names[kind] : NULL;
}

int tf_obs_kind_of(const char *type)
{
	for (int k = 1; type && k < TF_OBS__END; k++)
		if (!strcmp(type, names[k]))
			return k;
	return 0;
}

int tf_obs_addr_bits(int kind)
{
	return kind == TF_OBS_IPV4 ? 32 : kind == TF_OBS_IPV6 ? 128 : 0;
}

static size_t hash_len(int kind)
{
	switch (kind) {
	case TF_OBS_MD5: return 32;
	case TF_OBS_SHA1: return 40;
	case TF_OBS_SHA256: return 64;
	case TF_OBS_SHA512: return 128;
	default: return 0;
	}
}

/* Clears the host bits below prefix in the address bytes. */
static void mask_bits(unsigned char *a, int bytes, int prefix)
{
	for (int i = 0; i < bytes; i++) {
		int keep = prefix - 8 * i;
		if (keep <= 0)
			a[i] = 0;
		else if (keep < 8)
			a[i] &= (unsigned char)(0xff << (8 - keep));
	}
}

/* "addr" or "addr/len": canonical text, host bits cleared, /max dropped. */
static int norm_ip(int kind, const char *v, char *out, int *prefix)
{
	int af = kind == TF_OBS_IPV4 ? AF_INET : AF_INET6, bits = tf_obs_addr_bits(kind);
	unsigned char a[16];
	char addr[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(v, '/');
	size_t alen = slash ? (size_t)(slash - v) : strlen(v);
	int64_t len = bits;

	if (alen >= sizeof addr)
		return TF_EINVAL;
	memcpy(addr, v, alen);
	addr[alen] = '\0';
	if (inet_pton(af, addr, a) != 1)
		return TF_EINVAL;
	if (slash && (tf_parse_i64(slash + 1, 0, bits, &len)))
		return TF_EINVAL;
	mask_bits(a, bits / 8, (int)len);
	if (!inet_ntop(af, a, addr, sizeof addr))
		return TF_EINVAL;
	*prefix = len == bits ? -1 : (int)len;
	if (*prefix < 0)
		snprintf(out, TF_MAX_OBS_VALUE + 1, "%s", addr);
	else
		snprintf(out, TF_MAX_OBS_VALUE + 1, "%s/%d", addr, *prefix);
	return TF_OK;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

int tf_obs_normalize(int kind, const char *value, char *out, int *prefix)
{
	size_t n = strlen(value);

	*prefix = -1;
	out[0] = '\0';
	if (n > TF_MAX_OBS_VALUE)
		return TF_ELIMIT;
	if (!n || !tf_obs_name(kind))
		return TF_EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)value[i] < 0x20 || value[i] == 0x7f)
			return TF_EINVAL;
	switch (kind) {
	case TF_OBS_IPV4:
	case TF_OBS_IPV6:
		return norm_ip(kind, value, out, prefix);
	case TF_OBS_DOMAIN:
		memcpy(out, value, n + 1);
		if (out[n - 1] == '.')
			out[--n] = '\0';
		if (!n || strchr(out, ' ') || strchr(out, '/'))
			return TF_EINVAL;
		lower(out);
		return TF_OK;
	case TF_OBS_EMAIL: {
		char *at;
		memcpy(out, value, n + 1);
		if (!(at = strrchr(out, '@')) || at == out || !at[1])
			return TF_EINVAL;
		lower(at + 1); /* the local part may be case-sensitive (RFC 5321 §2.4) */
		return TF_OK;
	}
	case TF_OBS_URL:
		memcpy(out, value, n + 1);
		return strchr(out, ' ') ? TF_EINVAL : TF_OK;
	default:
		if (n != hash_len(kind))
			return TF_EINVAL;
		for (size_t i = 0; i < n; i++) {
			if (!isxdigit((unsigned char)value[i]))
				return TF_EINVAL;
			out[i] = (char)tolower((unsigned char)value[i]);
		}
		out[n] = '\0';
		return TF_OK;
	}
}

static int add_cand(tf_obs_cand *out, int n, int kind, const char *value)
{
	if (n < TF_OBS_MAX_CANDIDATES &&
	    tf_obs_normalize(kind, value, out[n].value, &out[n].prefix) == TF_OK) {
		out[n].kind = kind;
		return n + 1;
	}
	return n;
}

static int all_hex(const char *s)
{
	for (; *s; s++)
		if (!isxdigit((unsigned char)*s))
			return 0;
	return 1;
}

int tf_obs_candidates(const char *value, tf_obs_cand *out)
{
	size_t n = strlen(value);
	int c = 0;

	if ((c = add_cand(out, 0, TF_OBS_IPV4, value)) || (c = add_cand(out, 0, TF_OBS_IPV6, value)))
		return c;
	if (strstr(value, "://"))
		return add_cand(out, 0, TF_OBS_URL, value);
	if (all_hex(value))
		for (int k = TF_OBS_MD5; k <= TF_OBS_SHA512; k++)
			if (n == hash_len(k))
				return add_cand(out, 0, k, value);
	if (strchr(value, '@') && !strchr(value, '/'))
		return add_cand(out, 0, TF_OBS_EMAIL, value);
	c = add_cand(out, 0, TF_OBS_DOMAIN, value);
	return add_cand(out, c, TF_OBS_URL, value);
}

int tf_obs_network(int kind, const char *addr, int prefix, char *out)
{
	char v[INET6_ADDRSTRLEN + 16];
	int p;

	if (!tf_obs_addr_bits(kind) || prefix < 0 || prefix > tf_obs_addr_bits(kind) ||
	    strchr(addr, '/') || strlen(addr) > INET6_ADDRSTRLEN)
		return TF_EINVAL;
	snprintf(v, sizeof v, "%.*s/%d", INET6_ADDRSTRLEN, addr, prefix & 0xff);
	return norm_ip(kind, v, out, &p);
}
