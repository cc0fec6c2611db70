/* The TAXII 2.1 feed driver (docs/FEEDS.md "TAXII 2.1"): discovery → API
 * root → collection → objects/, paged, incremental through added_after. */
#ifndef TF_TAXII_H
#define TF_TAXII_H

#include "run.h"

int tf_taxii_run(tf_run *r);

#endif
