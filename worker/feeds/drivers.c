#include <string.h>

#include "drivers.h"
#include "bundle.h"
#include "otx.h"
#include "taxii.h"
#include "vt.h"

static const tf_driver drivers[] = {
	{"taxii21", tf_taxii_run},
	{"stix_bundle", tf_bundle_run},
	{"otx", tf_otx_run},
	{"virustotal", tf_vt_run},
};

const tf_driver *tf_driver_find(const char *type)
{
	for (size_t i = 0; type && i < sizeof drivers / sizeof drivers[0]; i++)
		if (!strcmp(drivers[i].type, type))
			return &drivers[i];
	return NULL;
}
