/* The stix_bundle feed driver: one STIX 2.x bundle at a URL, stored whole or
 * not at all. */
#ifndef TF_BUNDLE_H
#define TF_BUNDLE_H

#include "run.h"

int tf_bundle_run(tf_run *r);

#endif
