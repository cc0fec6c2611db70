/* SHA-256 (FIPS 180-4), for comparing API tokens against hashes kept in the
 * config (README "Roles"): small enough to carry rather than link a crypto
 * library into the handler for one digest. */
#ifndef TF_SHA256_H
#define TF_SHA256_H

#include <stddef.h>

#define TF_SHA256_LEN 32

void tf_sha256(const void *data, size_t len, unsigned char out[TF_SHA256_LEN]);

#endif
