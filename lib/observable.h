/* Observable values as the index compares them (docs/SPEC.md §8 lookup and
 * exports): the kinds the index knows, the normal form of each, and the kinds
 * a value looked up without a type may be.
 *
 * Normal forms: IPv4 and IPv6 in canonical text (inet_ntop: "10.0.0.1",
 * "2001:db8::1"); a network keeps its prefix with the host bits cleared
 * ("10.0.0.0/24"; /32 and /128 are plain addresses); domain names lower-cased
 * (ASCII) without one trailing dot; URLs exactly as given; e-mail addresses
 * with the domain part lower-cased; hashes lower-case hex of the kind's
 * length. A value with a control character is never indexed: it could not be
 * one line of a plain-text export. */
#ifndef TF_OBSERVABLE_H
#define TF_OBSERVABLE_H

#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"

/* In export order ("by type"): the enum value is the kind's byte in index
 * keys, so it must never be renumbered. */
typedef enum tf_obs_kind {
	TF_OBS_IPV4 = 1,
	TF_OBS_IPV6,
	TF_OBS_DOMAIN,
	TF_OBS_URL,
	TF_OBS_EMAIL,
	TF_OBS_MD5,
	TF_OBS_SHA1,
	TF_OBS_SHA256,
	TF_OBS_SHA512,
	TF_OBS__END
} tf_obs_kind;

/* The STIX name of a kind ("ipv4-addr", "file:hashes.SHA-256"); NULL when
 * not a kind. */
const char *tf_obs_name(int kind);
/* The kind of a STIX observable type name, 0 when the index does not know it. */
int tf_obs_kind_of(const char *type);

/* Normal form of value as kind into out (TF_MAX_OBS_VALUE + 1 bytes).
 * *prefix is the network's prefix length for an IP network, -1 otherwise.
 * TF_OK, TF_EINVAL when value is not one of that kind (not indexed),
 * TF_ELIMIT when it is longer than TF_MAX_OBS_VALUE. */
int tf_obs_normalize(int kind, const char *value, char *out, int *prefix);

/* The kinds a value given without a type may be, with its normal form as
 * each: an address or network is only that; "scheme://…" only a URL; hex of
 * a hash length only that hash; "a@b" an e-mail address; anything else a
 * domain name and also a URL as given (OTX URLs may lack a scheme). */
typedef struct tf_obs_cand {
	int kind;
	int prefix;
	char value[TF_MAX_OBS_VALUE + 1];
} tf_obs_cand;
#define TF_OBS_MAX_CANDIDATES 2
/* Number of candidates (0: the value cannot be an indexed observable). */
int tf_obs_candidates(const char *value, tf_obs_cand *out);

/* The network of the normal-form address addr (IPv4 or IPv6) with the given
 * prefix length, in normal form, into out (TF_MAX_OBS_VALUE + 1). TF_OK or
 * TF_EINVAL. */
int tf_obs_network(int kind, const char *addr, int prefix, char *out);

/* Bits of an address of kind (32 or 128), 0 for other kinds. */
int tf_obs_addr_bits(int kind);

#endif
