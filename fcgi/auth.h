/* Who may call the API and from where (docs/SPEC.md §2 auth). Decisions only read the
 * request's CGI parameters and the config, so they are unit-testable. The
 * token is never logged, echoed or copied into a response. */
#ifndef TF_AUTH_H
#define TF_AUTH_H

#include <stddef.h>

#include "config.h"
#include "request.h"
#include "respond.h"

/* The configured mode, as /api/health reports it: "token" when api_token is
 * set, else "remote_user" when trust_remote_user is on, else "none". */
const char *tf_auth_mode(const tf_config *cfg);

/* Authentication. Required when api_token is set or trust_remote_user is on
 * (an admin who turned on web-server auth wants it enforced):
 *   Authorization: Bearer <api_token>   (constant-time compare), or
 *   a non-empty REMOTE_USER when trust_remote_user = 1, or
 *   for GET/HEAD /api/metrics only: Bearer <metrics_token> (a scrape
 *   credential that reads counters and nothing else).
 * On the export routes, the export token (config export_token), as a Bearer
 * token or ?token=, also passes (auth "export_token").
 * Named tokens (config token.NAME) pass as Bearer tokens too.
 * Sets req->auth, req->role and req->requested_by (a named token's name;
 * else REMOTE_USER, else "api-token" for api_token, else "anonymous"). 0, or -1 with a 401 + WWW-Authenticate in resp. */
int tf_auth_check(const tf_config *cfg, tf_req *req, tf_resp *resp);

/* CSRF defence for writes: Sec-Fetch-Site: cross-site is refused, and an
 * Origin, when present, must name the request's Host. 0, or -1 with a 403
 * "csrf" in resp. Requests without Origin (curl, scripts, the CLI) pass:
 * browsers always send Origin on cross-origin writes. */
int tf_auth_csrf(const tf_req *req, tf_resp *resp);

/* Does Origin ("scheme://host[:port]") name the same host[:port] as the Host
 * header? Scheme-less (a TLS-terminating proxy changes it), case-insensitive
 * host, default ports (80 for http, 443 for https) optional on either side. */
int tf_auth_origin_matches(const char *origin, const char *host);

/* Roles (README "Roles"): api_token and no auth at all are admin (as before
 * roles: everything); a named token has its configured role; a REMOTE_USER
 * has its remote_user.NAME role, else remote_user_role (default admin); the
 * metrics and export tokens are viewers of their own routes. The named token
 * given (every one compared, in constant time each), or NULL. */
const tf_token *tf_auth_named_token(const tf_config *cfg, const char *given, size_t given_len);
/* The role of web-server user user. */
int tf_auth_user_role(const tf_config *cfg, const char *user);
/* 0 when req's role is at least need, else -1 with a 403 "forbidden_role"
 * naming both roles in resp. */
int tf_auth_role_check(const tf_req *req, int need, tf_resp *resp);
/* Does SHA-256(given) equal digest? Time independent of the input's bytes. */
int tf_auth_digest_equal(const unsigned char *digest, const char *given, size_t given_len);

/* The password of an "Authorization: Basic" header value h (RFC 7617),
 * decoded into buf (size bytes, NUL-terminated), its length in *len. 0, or
 * -1 when h is no such header, malformed, too long, or the password empty. */
int tf_auth_basic_password(const char *h, char *buf, size_t size, size_t *len);

/* Compares secret (the configured value) with given in time that depends on
 * the secret's length only. */
int tf_auth_ct_equal(const char *secret, const char *given, size_t given_len);

#endif
