/* The bench's floor: the least a FastCGI responder serving a task status can
 * do — one store read of the task, its bytes written back. `make bench`
 * compares the real handler with this on the same lighttpd (docs/SPEC.md §7). Built
 * only by the bench. Usage: floor [TASK_ID] (THREATFEED_DB names the store,
 * FLOOR_TASK the task when no argument is given). */
#include "err.h"
#include "store.h"
#include "util.h"

#include <fcgiapp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct read_ctx {
	const char *id;
	FCGX_Stream *out;
};

static int answer(tf_txn *txn, void *vctx)
{
	struct read_ctx *c = vctx;
	const void *v;
	size_t vl;
	char head[160];
	int rc = tf_txn_get(txn, TF_TBL_TASKS, c->id, strlen(c->id), &v, &vl);

	if (rc)
		return rc;
	snprintf(head, sizeof head,
	         "Status: 200 OK\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n", vl);
	FCGX_PutS(head, c->out);
	FCGX_PutStr(v, (int)vl, c->out);
	return TF_OK;
}

int main(int argc, char **argv)
{
	tf_store *st;
	FCGX_Request req;
	const char *db = getenv("THREATFEED_DB");
	const char *task = argc == 2 ? argv[1] : getenv("FLOOR_TASK");
	char err[256];

	if (!task || !db || tf_store_open(&st, db, 0, err, sizeof err)) {
		fprintf(stderr, "usage: THREATFEED_DB=DIR floor TASK_ID\n");
		return 2;
	}
	FCGX_Init();
	FCGX_InitRequest(&req, 0, 0);
	while (FCGX_Accept_r(&req) >= 0) {
		struct read_ctx c = {task, req.out};
		if (tf_store_view(st, answer, &c))
			FCGX_PutS("Status: 404 Not Found\r\n\r\n", req.out);
		FCGX_Finish_r(&req);
	}
	tf_store_close(st);
	return 0;
}
