/* GET /api/audit/?limit=&cursor= (README "Audit"; admins only, by the route
 * table): the trail lib/audit.c keeps, newest first. */
#include "audit.h"
#include "err.h"
#include "handlers.h"

int tf_h_audit(tf_app *app, tf_req *req, tf_resp *resp)
{
	tf_req_paging pg = tf_req_page(req);
	char *json = NULL;
	size_t len = 0;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	rc = tf_audit_list(app->st, pg.limit, pg.cursor, &json, &len);
	if (rc == TF_EINVAL)
		return tf_h_bad_cursor(resp);
	return tf_h_answer(resp, rc, 200, json, len);
}
