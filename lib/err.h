/* One error vocabulary for every module: functions return TF_OK or one of
 * the TF_E* codes below (as a plain int), and exactly one place (the CLI's
 * main, the HTTP error writer) turns it into words or a status code.
 *
 * The type is tf_rc ("return code"), not tf_err: tf_err(...) is the error
 * logging macro of log.h. */
#ifndef TF_ERR_H
#define TF_ERR_H

typedef enum tf_rc {
	TF_OK = 0,
	TF_ENOMEM,      /* allocation failed */
	TF_EINVAL,      /* bad argument or malformed input */
	TF_ENOTFOUND,   /* no such feed / task / record */
	TF_EEXIST,      /* already exists */
	TF_ECONFLICT,   /* state forbids it (a run is active, task finished, …) */
	TF_ESTATE,      /* illegal task state transition */
	TF_ESTORE,      /* the store failed (I/O, corrupt, unwritable) */
	TF_EFULL,       /* store map full: grow and retry (handled in store.c) */
	TF_EPERM,       /* permission denied */
	TF_ELIMIT,      /* an input exceeded a named limit (tf_limits.h) */
	TF_ECANCELLED,  /* the run was told to stop */
	TF_EUPSTREAM,   /* the upstream feed answered an error */
	TF_ENETWORK,    /* connect/transfer failure, timeout */
	TF_EPARSE,      /* upstream content could not be parsed */
	TF_ESYS,        /* a system call failed (errno kept by the caller) */
	TF_ENOSPACE,    /* the store's disk (or quota) is full */
	TF_ERR__COUNT
} tf_rc;

/* Static English text for an error code; never NULL. */
const char *tf_strerror(int err);

#endif
