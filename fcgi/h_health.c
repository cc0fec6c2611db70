/* GET /api/health: answers even when the store cannot be opened (that is
 * exactly when an operator asks), without touching anything but counters. */
#include <json-c/json.h>
#include <string.h>

#include "auth.h"
#include "err.h"
#include "handlers.h"
#include "json.h"
#include "runctl.h"

int tf_h_health(tf_app *app, tf_req *req, tf_resp *resp)
{
	json_object *o;
	const char *text;
	size_t len;
	int active = 0, queued = 0, rc;

	if (tf_app_store(app, resp))
		return -1;   /* 503 store_unavailable, already written */
	if ((rc = tf_runctl_counts(app->st, &active, &queued)))
		return tf_resp_error(resp, 503, "store_unavailable", "store unavailable");
	if (!(o = json_object_new_object()))
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	json_object_object_add(o, "status", json_object_new_string("ok"));
	json_object_object_add(o, "store", json_object_new_string("ok"));
	json_object_object_add(o, "active_workers", json_object_new_int(active));
	json_object_object_add(o, "queued", json_object_new_int(queued));
	json_object_object_add(o, "auth", json_object_new_string(tf_auth_mode(&app->cfg)));
	/* The caller's own name and role (README "Roles"): what the dashboard
	 * offers (the audit view is for admins). */
	json_object_object_add(o, "role", json_object_new_string(tf_role_name(req->role)));
	json_object_object_add(o, "who", json_object_new_string(req->requested_by));
	json_object_object_add(o, "version", json_object_new_string(TF_VERSION));
	text = tf_json_text(o, &len);
	rc = text ? tf_resp_json_copy(resp, 200, text, len) : tf_resp_fail(resp, TF_ENOMEM, NULL);
	json_object_put(o);
	return rc;
}
