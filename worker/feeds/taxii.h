/* The TAXII 2.1 feed driver (docs/FEEDS.md "TAXII 2.1"): discovery → API
 * root → collection → objects/, paged, incremental through added_after. */
#ifndef TF_TAXII_H
#define TF_TAXII_H

#include <json-c/json.h>
#include <stddef.h>

#include "run.h"

int tf_taxii_run(tf_run *r);

/* An objects page's envelope (docs/FEEDS.md "TAXII 2.1"): every member is
 * optional, an empty result may be {}. */
typedef struct tf_taxii_page {
	json_object *objects;   /* the array, borrowed from the page; NULL: none */
	size_t n;               /* objects in it */
	int more;
	const char *next;       /* the next token; NULL when absent or empty */
} tf_taxii_page;
/* Reads the envelope of the parsed page doc into pg. TF_OK; TF_EPARSE
 * (objects not an array, more not a boolean, next not a string) or
 * TF_ELIMIT (more than TF_MAX_PAGE_OBJECTS objects, a next token over
 * TF_MAX_URL bytes), with why set to the words after "page N" of the run's
 * error. */
int tf_taxii_page_read(json_object *doc, tf_taxii_page *pg, char *why, size_t whylen);

#endif
