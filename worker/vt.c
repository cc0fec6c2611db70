/* VirusTotal feeds (SPEC §4) are not implemented yet: a run of such a feed fails at
 * once with a clear error instead of pretending to work (see README, "Not
 * done yet"). */
#include "run.h"
#include "err.h"

int tf_vt_run(tf_run *r)
{
	tf_run_fail(r, "vt feeds are not implemented in this version of threatfeed");
	return TF_EINVAL;
}
