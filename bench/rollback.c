/* rollback_100k_ms (docs/SPEC.md §7): a run that wrote 100,000 records (created and
 * updated, with their undo entries, committed in pages of 1000) is rolled back
 * with the store's own code; prints the time that took. Usage: rollback DIR */
#include "err.h"
#include "records.h"
#include "store.h"
#include "task.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PAGES 100
#define PER_PAGE 1000

struct page {
	tf_batch *b;
	const char *task;
	tf_progress p;
};

static int apply(tf_txn *txn, void *vctx)
{
	struct page *pg = vctx;
	tf_progress p = pg->p;
	return tf_batch_apply(txn, "bench", pg->task, pg->b, &p);
}

static int fill(tf_store *st, const char *task, int64_t modified, int pages)
{
	struct page pg = {.task = task};
	char key[80], obj[256];
	int rc = tf_batch_new(&pg.b);

	for (int page = 0; !rc && page < pages; page++) {
		tf_batch_clear(pg.b);
		for (int i = 0; !rc && i < PER_PAGE; i++) {
			int n = snprintf(key, sizeof key, "indicator--%08d-0000-4000-8000-000000000000",
			                 page * PER_PAGE + i);
			int ol = snprintf(obj, sizeof obj,
			                  "{\"type\":\"indicator\",\"id\":\"%.*s\",\"pattern\":\"[ipv4-addr:"
			                  "value = '10.0.%d.%d']\"}", n, key, page, i % 250);
			rc = tf_batch_add(pg.b, key, "indicator", "10.0.0.1", NULL, modified, obj, (size_t)ol);
		}
		if (!rc)
			rc = tf_store_update(st, apply, &pg);
	}
	tf_batch_free(pg.b);
	return rc;
}

int main(int argc, char **argv)
{
	tf_store *st;
	char err[256], seed[TF_UUID_LEN + 1], run[TF_UUID_LEN + 1];
	uint64_t restored = 0;
	int64_t t0, t1;

	if (argc != 2 || tf_store_open(&st, argv[1], 0, err, sizeof err)) {
		fprintf(stderr, "usage: rollback EMPTY_DIR\n");
		return 2;
	}
	tf_uuid_v4(seed, sizeof seed);
	tf_uuid_v4(run, sizeof run);
	/* Half the keys exist before the run (updates), half are new (creates). */
	if (fill(st, seed, 1, PAGES / 2) || tf_store_undo_drop(st, seed) || fill(st, run, 2, PAGES)) {
		fprintf(stderr, "rollback: cannot prepare the store\n");
		return 1;
	}
	t0 = tf_mono_us();
	if (tf_store_rollback(st, run, &restored)) {
		fprintf(stderr, "rollback: failed\n");
		return 1;
	}
	t1 = tf_mono_us();
	printf("%llu %.1f\n", (unsigned long long)restored, (double)(t1 - t0) / 1000.0);
	tf_store_close(st);
	return 0;
}
