/* lib/util time stamps: our own civil-calendar arithmetic must agree with
 * libc's timegm/gmtime_r everywhere a feed can put a date. */
#include "testutil.h"

#include <time.h>

static void agrees_with_libc(void **state)
{
	tu_rng r = {tu_seed()};
	char ours[40], libc[40], base[24];
	(void)state;

	for (int i = 0; i < 200000; i++) {
		/* 1900-01-01 .. 2199-12-31, plus the odd microsecond */
		int64_t sec = (int64_t)tu_below(&r, 9467280000ULL) - 2208988800LL;
		int64_t us = sec * 1000000 + (int64_t)tu_below(&r, 1000000), back = 0;
		time_t t = (time_t)sec;
		struct tm tm;

		gmtime_r(&t, &tm);
		strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
		snprintf(libc, sizeof libc, "%s.%06dZ", base, (int)(us - sec * 1000000));
		tf_time_format(us, ours, sizeof ours);
		if (strcmp(ours, libc))
			fail_msg("%lld µs: ours %s, libc %s", (long long)us, ours, libc);
		assert_int_equal(tf_time_parse(ours, &back), TF_OK);
		assert_int_equal(back, us);
	}
}

static void parses_what_timegm_did(void **state)
{
	struct {
		const char *text;
		int y, mo, d, h, mi, s, us;
	} cases[] = {
		{"2024-02-29T23:59:59Z", 2024, 2, 29, 23, 59, 59, 0},
		{"2000-02-29T00:00:00.5Z", 2000, 2, 29, 0, 0, 0, 500000},
		{"1970-01-01T00:00:00Z", 1970, 1, 1, 0, 0, 0, 0},
		{"1969-12-31T23:59:59.999999Z", 1969, 12, 31, 23, 59, 59, 999999},
		{"2023-02-30T00:00:00Z", 2023, 2, 30, 0, 0, 0, 0}, /* normalised: March 2nd */
		{"2016-12-31T23:59:60Z", 2016, 12, 31, 23, 59, 60, 0}, /* leap second */
		{"2100-03-01t12:00:00+00:00", 2100, 3, 1, 12, 0, 0, 0},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		struct tm tm = {.tm_year = cases[i].y - 1900, .tm_mon = cases[i].mo - 1,
		                .tm_mday = cases[i].d, .tm_hour = cases[i].h,
		                .tm_min = cases[i].mi, .tm_sec = cases[i].s};
		int64_t us = 0, want = (int64_t)timegm(&tm) * 1000000 + cases[i].us;
		assert_int_equal(tf_time_parse(cases[i].text, &us), TF_OK);
		if (us != want)
			fail_msg("%s: %lld, timegm says %lld", cases[i].text, (long long)us,
			         (long long)want);
	}
	{
		int64_t us;
		assert_int_equal(tf_time_parse("2024-13-01T00:00:00Z", &us), TF_EINVAL);
		assert_int_equal(tf_time_parse("2024-01-01T24:00:00Z", &us), TF_EINVAL);
		assert_int_equal(tf_time_parse("2024-01-01T00:00:00+01:00", &us), TF_EINVAL);
		assert_int_equal(tf_time_parse("2024-01-01", &us), TF_EINVAL);
	}
}

/* Numbers from requests, configs and headers: digits only, bounded. */
static void parse_i64_is_strict(void **state)
{
	int64_t v = -7;
	static const char *const malformed[] = {"", "+5", " 5", "5 ", "-1", "0x10", "1e3",
	                                        "5\n", "--5", "1_000", "12a"};
	(void)state;

	for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
		if (tf_parse_i64(malformed[i], 0, 100, &v) != TF_EINVAL)
			fail_msg("'%s' was accepted", malformed[i]);
	}
	assert_int_equal(tf_parse_i64(NULL, 0, 100, &v), TF_EINVAL);
	assert_int_equal(v, -7); /* untouched on failure */
	assert_int_equal(tf_parse_i64("0", 0, 100, &v), TF_OK);
	assert_int_equal(v, 0);
	assert_int_equal(tf_parse_i64("007", 0, 100, &v), TF_OK);
	assert_int_equal(v, 7);
	assert_int_equal(tf_parse_i64("100", 0, 100, &v), TF_OK);
	assert_int_equal(tf_parse_i64("101", 0, 100, &v), TF_ELIMIT);
	assert_int_equal(tf_parse_i64("0", 1, 100, &v), TF_ELIMIT);
	assert_int_equal(tf_parse_i64("9223372036854775807", 0, INT64_MAX, &v), TF_OK);
	assert_true(v == INT64_MAX);
	assert_int_equal(tf_parse_i64("9223372036854775808", 0, INT64_MAX, &v), TF_ELIMIT);
	assert_int_equal(tf_parse_i64("99999999999999999999999", 0, INT64_MAX, &v), TF_ELIMIT);
	assert_int_equal(tf_parse_i64("99999999999999999999x", 0, INT64_MAX, &v), TF_EINVAL);
	/* a sign only where negative numbers are allowed */
	assert_int_equal(tf_parse_i64("-5", -10, 10, &v), TF_OK);
	assert_int_equal(v, -5);
	assert_int_equal(tf_parse_i64("-", -10, 10, &v), TF_EINVAL);
	assert_int_equal(tf_parse_i64("-9223372036854775808", INT64_MIN, 0, &v), TF_OK);
	assert_true(v == INT64_MIN);
	assert_int_equal(tf_parse_i64("-11", -10, 10, &v), TF_ELIMIT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(agrees_with_libc),
		cmocka_unit_test(parses_what_timegm_did),
		cmocka_unit_test(parse_i64_is_strict),
	};
	tu_init("util");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
