/* The audit trail (README "Audit", issue 15 §2): who changed what, when, from
 * where, and how it ended, for every write through the API or the CLI and
 * every failed authentication. Entries live in the store (TF_TBL_AUDIT),
 * keyed by a sequence number, newest last; the last TF_AUDIT_KEEP are kept.
 * An entry holds names, ids, an address and an outcome: never a request
 * body, a query string or a credential, so no secret can reach it. */
#ifndef TF_AUDIT_H
#define TF_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

typedef struct tf_audit_entry {
	const char *via;      /* "api" or "cli" */
	const char *who;      /* token name, remote user, "api-token", "cli:USER", "anonymous" */
	const char *role;     /* tf_role_name() of the caller */
	const char *address;  /* REMOTE_ADDR, "local" for the CLI; NULL: unknown */
	const char *action;   /* route name ("feed_create", "task_cancel", "auth") */
	const char *method;   /* HTTP method; NULL from the CLI */
	const char *feed_id;  /* the feed acted on, or NULL */
	const char *task_id;  /* the task acted on or started, or NULL */
	const char *mode;     /* cancel mode, or NULL */
	int status;           /* HTTP status; the CLI maps its result to one too */
	const char *outcome;  /* "ok" or the error code ("forbidden_role", ...) */
} tf_audit_entry;

/* Appends e (stamped with the time now) and drops the entry TF_AUDIT_KEEP
 * before it, inside txn: one put and one delete. */
int tf_audit_append_txn(tf_txn *txn, const tf_audit_entry *e);
/* The same in its own write transaction, which first moves entries
 * deferred by tf_audit_defer (up to TF_AUDIT_OUTBOX_BATCH) into the trail. */
int tf_audit_append(tf_store *st, const tf_audit_entry *e);
/* Records e in the store's signals (store.h), never waiting for the writer
 * lock: for a cancel, answered while a worker may hold it (docs/SPEC.md
 * §3). It joins the trail, with its own time and a later id, at the next
 * tf_audit_append or tf_audit_flush. */
int tf_audit_defer(tf_store *st, const tf_audit_entry *e);
/* Moves deferred entries into the trail (a run's end calls it). */
int tf_audit_flush(tf_store *st);

/* Moves deferred entries into the trail first (a write, only when some
 * wait). Newest first: {"entries":[...],"next_cursor":"ID"|null}; cursor (from
 * next_cursor, NULL for the first page) continues below that entry.
 * TF_EINVAL for a cursor that is not one. *json is the caller's. */
int tf_audit_list(tf_store *st, int limit, const char *cursor, char **json, size_t *len);

#endif
