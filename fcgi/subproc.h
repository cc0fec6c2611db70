/* Running a short helper program and capturing what it prints, with a hard
 * deadline — for POST …/test_connection, which must not pull the worker's
 * libcurl loop into the handler. No shell is involved. */
#ifndef TF_SUBPROC_H
#define TF_SUBPROC_H

#include <stddef.h>

/* Runs argv[0] (a path, not searched in PATH) with argv, stdin from /dev/null,
 * stdout captured into out (at most cap - 1 bytes are kept, NUL-terminated;
 * the rest is read and dropped), stderr inherited (the web server's log), every
 * other fd closed, in a process group of its own. After timeout_ms the whole
 * group is killed (SIGKILL) and *timed_out set. *status gets the waitpid()
 * status. TF_OK, or TF_ESYS when it could not be started. Never leaves a
 * zombie. */
int tf_subproc_capture(char *const argv[], int timeout_ms, char *out, size_t cap, int *status,
                       int *timed_out);

#endif
