/* GET /api/audit/?limit=&cursor= (README "Audit"; admins only, by the route
 * table): the trail lib/audit.c keeps, newest first. */
#include "audit.h"
#include "err.h"
#include "handlers.h"
#include "tf_limits.h"

int tf_h_audit(tf_app *app, tf_req *req, tf_resp *resp)
{
	const tf_qparam *limit = tf_req_query(req, "limit");
	const tf_qparam *cursor = tf_req_query(req, "cursor");
	char *json = NULL;
	size_t len = 0;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	rc = tf_audit_list(app->st, limit ? (int)limit->num : TF_DEFAULT_LIST_LIMIT,
	                   cursor ? cursor->value : NULL, &json, &len);
	if (rc == TF_EINVAL)
		return tf_resp_error(resp, 400, "invalid_parameter", "cursor: not a valid cursor");
	return tf_h_answer(resp, rc, 200, json, len);
}
