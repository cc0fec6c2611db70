/* worker/feeds/upstream.c: the words a run's error gets for an answer that is
 * not what a driver asked for — the error bodies of TAXII, OTX and
 * VirusTotal, an HTML page — what each status means for a run, and the
 * JSON check of a 2xx answer. The retry
 * policy needs a run: test_runs.py and test_feeds_otx_vt.py drive it. */
#include "testutil.h"

#include "upstream.h"

static void test_http_error_text(void **state)
{
	static const char taxii[] = "{\"title\":\"Collection not found\",\"description\":"
	                            "\"No collection with id x\\n\",\"http_status\":\"404\"}";
	static const char html[] = "<!DOCTYPE html><html><body>401</body></html>";
	static const char otx[] = "{\"detail\":\"Authentication credentials were not provided.\"}";
	static const char vt[] = "{\"error\":{\"code\":\"WrongCredentialsError\","
	                         "\"message\":\"Wrong API key\"}}";
	tf_fetch_resp resp = {0};
	char buf[300];
	(void)state;

	resp.status = 404;
	resp.body = (char *)taxii;
	resp.len = sizeof taxii - 1;
	tf_upstream_error(&resp, buf, sizeof buf);
	assert_string_equal(buf, "HTTP 404: Collection not found (No collection with id x )");
	resp.status = 401;
	resp.body = (char *)html;
	resp.len = sizeof html - 1;
	tf_upstream_error(&resp, buf, sizeof buf);
	assert_string_equal(buf, "HTTP 401");
	/* OTX's {"detail"} and VirusTotal's {"error":{"message"}} */
	resp.status = 403;
	resp.body = (char *)otx;
	resp.len = sizeof otx - 1;
	tf_upstream_error(&resp, buf, sizeof buf);
	assert_string_equal(buf, "HTTP 403: Authentication credentials were not provided.");
	resp.status = 401;
	resp.body = (char *)vt;
	resp.len = sizeof vt - 1;
	tf_upstream_error(&resp, buf, sizeof buf);
	assert_string_equal(buf, "HTTP 401: Wrong API key");
	/* a buffer too small for more than the status */
	resp.status = 500;
	tf_upstream_error(&resp, buf, 9);
	assert_string_equal(buf, "HTTP 500");

	resp.content_type = (char *)"text/html; charset=utf-8";
	assert_false(tf_upstream_is_json(&resp, buf, sizeof buf));
	assert_string_equal(buf, "text/html");
	resp.content_type = (char *)"application/taxii+json;version=2.1";
	assert_true(tf_upstream_is_json(&resp, buf, sizeof buf));
	resp.content_type = NULL;
	resp.body = (char *)" {\"a\":1}";
	assert_true(tf_upstream_is_json(&resp, buf, sizeof buf));
	resp.body = (char *)"<html>";
	assert_false(tf_upstream_is_json(&resp, buf, sizeof buf));
	assert_string_equal(buf, "no Content-Type");
}

/* The one status → failure mapping every driver starts from. */
static void test_status_classes(void **state)
{
	static const struct {
		long status;
		int rc;
	} cases[] = {
		{200, TF_OK},         {204, TF_OK},          {299, TF_OK},
		{401, TF_EPERM},      {403, TF_EPERM},       {404, TF_ENOTFOUND},
		{400, TF_EUPSTREAM},  {302, TF_EUPSTREAM},   {410, TF_EUPSTREAM},
		{500, TF_EUPSTREAM},  {199, TF_EUPSTREAM},   {300, TF_EUPSTREAM},
	};
	static const char taxii[] = "{\"title\":\"Unauthorized\"}";
	tf_fetch_resp resp = {0};
	char buf[300], want[32];
	(void)state;

	resp.body = (char *)taxii;
	resp.len = sizeof taxii - 1;
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		resp.status = cases[i].status;
		strcpy(buf, "untouched");
		assert_int_equal(tf_upstream_failure(&resp, buf, sizeof buf), cases[i].rc);
		if (cases[i].rc == TF_OK) {
			assert_string_equal(buf, "untouched");
			continue;
		}
		snprintf(want, sizeof want, "HTTP %ld: Unauthorized", cases[i].status);
		assert_string_equal(buf, want);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http_error_text),
		cmocka_unit_test(test_status_classes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
