/* Every limit on untrusted input, named once. Checked while reading, not
 * after: a body over TF_MAX_BODY is refused before it is buffered. */
#ifndef TF_LIMITS_H
#define TF_LIMITS_H

/* API requests (fcgi/). The routes, fields and values of docs/SPEC.md §2
 * fit in these many times over; anything larger is refused with a 400/413
 * before it costs memory or a store read. */
#define TF_MAX_BODY            (64 * 1024)  /* request body bytes (docs/SPEC.md §2: 413 above) */
#define TF_MAX_PATH            1024         /* path bytes after the mount prefix: ids are short */
#define TF_MAX_QUERY           2048         /* query string bytes: a cursor and a few filters */
#define TF_MAX_QUERY_PARAMS    16           /* no route takes more than a handful */
#define TF_MAX_JSON_DEPTH      16           /* API bodies are flat objects; deeper is an attack */
/* ?limit= on list endpoints: one page must stay one quick answer in memory
 * (docs/SPEC.md §2 "As implemented": 1–1000, default 100). */
#define TF_MAX_LIST_LIMIT      1000
#define TF_DEFAULT_LIST_LIMIT  100
/* TAXII 2.1 server (fcgi/h_taxii.c): objects per page. A page's objects are
 * streamed, but its entries (up to 600 bytes each) are gathered first to
 * know the page's date-added headers, and on PostgreSQL its records are
 * read in one round trip; 1000 is what our own consumer asks for. A larger
 * ?limit= is capped silently (TAXII 2.1 §3.4 lets a server return fewer). */
#define TF_MAX_TAXII_LIMIT     1000
/* Values in one match[...] filter (comma-separated): a query is at most
 * TF_MAX_QUERY bytes anyway; more values than this is no real client. */
#define TF_MAX_TAXII_MATCH     64

/* Feeds and tasks: fields a client sets and text a run writes into a task.
 * A task is one stored value read by every status poll, so its texts are
 * bounded; a feed's fields are bounded so they fit in fixed buffers (the
 * feed id in store keys, a secret in an HTTP header). */
#define TF_MAX_FEED_ID         64           /* part of every store key of the feed */
#define TF_MAX_NAME            200          /* a display name (also who asked a cancel) */
#define TF_MAX_URL             2048         /* the common browser/server URL limit */
#define TF_MAX_FIELD           1024         /* collection, username, secret (sent in a header) */
#define TF_MAX_TARGETS         10000        /* virustotal targets: kept in the feed's JSON */
#define TF_MAX_WARNINGS        100          /* task warnings kept (docs/SPEC.md §2) */
#define TF_MAX_WARNING_LEN     300          /* one warning line, upstream text shortened */
#define TF_MAX_MESSAGE_LEN     300          /* the task's one-line progress message */
#define TF_MAX_ERROR_LEN       1000         /* the task's error: room for a TAXII root listing */

/* Enterprise networks (lib/feed.c, worker/fetch.c; README "Proxies, private
 * CAs and client certificates"). PEM text is stored in the feed and sent in
 * one API body (TF_MAX_BODY): a private CA chain is a few certificates of
 * ~2 KiB, a client certificate one, an RSA-4096 key ~3.3 KiB. Room for a
 * dozen CAs; a whole public CA store (~200 KiB) is not what this is for. */
#define TF_MAX_CA_PEM          (32 * 1024)  /* feed ca_pem */
#define TF_MAX_CERT_PEM        (8 * 1024)   /* feed client_cert_pem */
#define TF_MAX_KEY_PEM         (8 * 1024)   /* feed client_key_pem */
/* no_proxy (config and feed): a list of hosts/domains, like the variable. */
#define TF_MAX_NO_PROXY        1000
/* upstream_deny / upstream_allow (lib/config.c, README "Which addresses
 * feeds may reach"): ranges an operator writes by hand, a few dozen at
 * most; each list is scanned on every connect. The built-in deny list
 * (lib/config.c) comes on top of the configured ranges. */
#define TF_MAX_UPSTREAM_RULES  64
#define TF_MAX_CIDR_TEXT       49   /* "ffff:…:255.255.255.255/128" with room */

/* Upstream content (worker/): nothing an upstream sends may hold a run, its
 * memory or the store without end (docs/SPEC.md §4, "Untrusted content"). */
#define TF_MAX_PAGE_BYTES      (32L * 1024 * 1024)  /* one response body, buffered whole */
#define TF_MAX_FEED_JSON_DEPTH 64                   /* STIX objects nest a few levels */
#define TF_MAX_PAGE_OBJECTS    10000                /* objects in one page: 10x the TAXII page we ask */
#define TF_MAX_OBJECT_BYTES    (1024 * 1024)        /* one stored record */
#define TF_MAX_PAGES           100000               /* pages in one run */
#define TF_MAX_EMPTY_PAGES     20                   /* more:true with nothing new: a loop */
#define TF_MAX_REDIRECTS       3                    /* a moved server, not a chain */
#define TF_CONNECT_TIMEOUT_S   10
#define TF_LOW_SPEED_BYTES     1                    /* below this many bytes/s … */
#define TF_LOW_SPEED_TIME_S    60                   /* … for this long: timeout */
#define TF_REQUEST_TIMEOUT_S   300                  /* one whole request */
#define TF_MAX_RUN_S           (6 * 3600)           /* one whole run: a slot is not held forever */
#define TF_MAX_RETRIES         5                    /* transient failures, then the run fails */
#define TF_MAX_BACKOFF_S       300                  /* also caps an upstream's Retry-After */

/* Cancellation */
#define TF_SIGNAL_TTL_S        300   /* per-feed cancel signal expiry (docs/SPEC.md §3) */
#define TF_DEFAULT_GRACE_S     5     /* supervisor's grace period (docs/SPEC.md §3) */
#define TF_PROGRESS_INTERVAL_MS 100  /* at most one progress write per interval */
/* A run's pages waiting for its store writer (worker/writer.h): the driver
 * fetches on while they wait, and stops when either bound is reached. */
#define TF_WRITER_MAX_QUEUED       2
#define TF_WRITER_MAX_QUEUED_BYTES (16L * 1024 * 1024)
#define TF_WRITER_MAX_WARNINGS     32
#define TF_DEFAULT_MAX_RUNS    4     /* max_concurrent_runs (docs/SPEC.md §3) */
#define TF_DEFAULT_HISTORY_KEEP 50   /* finished tasks kept per feed by gc */

/* Run-end webhooks (worker/webhook.c). A sender outlives its run, so every
 * bound here is also a bound on how long a process lingers per ended run:
 * at most attempts * (timeout + backoff) ≈ 5 * 10 s + 1+2+4+8 s = 65 s with
 * the defaults. A receiver that wants the event answers within a second. */
#define TF_WEBHOOK_DEFAULT_ATTEMPTS  5   /* webhook_attempts: deliveries tried */
#define TF_WEBHOOK_MAX_ATTEMPTS      10  /* … at most: ~10 min of lingering worst case */
#define TF_WEBHOOK_DEFAULT_TIMEOUT_S 10  /* webhook_timeout_s: one whole POST */
#define TF_WEBHOOK_MAX_TIMEOUT_S     60
#define TF_WEBHOOK_CONNECT_TIMEOUT_S 5   /* within the POST's timeout */
#define TF_WEBHOOK_BACKOFF_S         1   /* first wait after a failure, doubled … */
#define TF_WEBHOOK_MAX_BACKOFF_S     30  /* … up to this */
#define TF_WEBHOOK_MAX_RESPONSE      4096 /* response body bytes read (then ignored) */
/* The config file's lines are read into 1024 bytes; a longer URL or secret
 * could not be set there, and the per-feed ones get the same bound. */
#define TF_WEBHOOK_MAX_URL           1000
#define TF_WEBHOOK_MAX_SECRET        256

/* TAXII discovery: API roots searched for a feed's collection (a discovery
 * document may list any number), and what the error that names them keeps:
 * its length and the readable collections it lists per root. */
#define TF_MAX_API_ROOTS             16
#define TF_MAX_ROOT_NOTES            900 /* within TF_MAX_ERROR_LEN */
#define TF_MAX_ROOT_NOTE_COLLECTIONS 5

/* Untrusted input that the request router reads (fcgi/). */
/* Opaque paging cursors are ours (records.c, and the index's: the hex of a
 * value's key, at most 2 * (TF_OBS_KEY_VALUE + 2) = 604 characters);
 * anything longer is not one. */
#define TF_MAX_CURSOR 640
/* Deeper than any route (the deepest has 4 segments after "api"): a longer
 * path cannot match and is answered 404 without looking further. */
#define TF_MAX_SEGMENTS 8

/* STIX content (worker/feeds/stix.c). */
/* Nesting of ( and [ in one pattern; deeper patterns are malformed. */
#define TF_STIX_MAX_PATTERN_DEPTH 32
/* Objects in one stix_bundle document (the body is also capped at
 * TF_MAX_PAGE_BYTES). */
#define TF_STIX_MAX_BUNDLE_OBJECTS 200000
/* Detailed warnings for skipped objects per run; beyond it only the total. */
#define TF_STIX_MAX_SKIP_WARNINGS 20
/* Distinct observables kept per object (a pattern is bounded by
 * TF_MAX_OBJECT_BYTES, but a megabyte of ORs is not worth indexing whole). */
#define TF_STIX_MAX_OBSERVABLES 1000
/* Longest STIX `type` accepted (the spec allows 250 characters). */
#define TF_STIX_MAX_TYPE_LEN 250

/* Feed options (lib/feed.c; the API and the CLI validate against these). */
/* options.requests_per_minute: VirusTotal's premium tiers allow a few hundred
 * a minute; more than 1000 is a typo, not a budget. */
#define TF_MAX_REQUESTS_PER_MINUTE 1000
/* options.grace_period_s (and the config's grace_period_s): a cancelled run
 * may keep its slot this long before it is killed; an hour is already more
 * than any run needs to stop. */
#define TF_MAX_GRACE_S             3600
/* map_size_mb: LMDB's map is address space reserved up front (the file is
 * sparse); 1 TiB is far past any store here and within 64-bit reach. */
#define TF_MAX_MAP_MB              (1024 * 1024)
/* interval_s: at most a (leap) year between scheduled runs. */
#define TF_MAX_INTERVAL_S          (366L * 86400)

/* Records (lib/records.c): bytes of a record's source key (its STIX id,
 * "otx:…"); stored after the feed id, so it bounds every store key. A
 * longer key is refused (TF_ELIMIT); no real id is near this. */
#define TF_MAX_RECORD_KEY          511

/* JSON (lib/json.c): depth of our own recursive walks over parsed JSON.
 * json-c already capped nesting when parsing (TF_MAX_JSON_DEPTH,
 * TF_MAX_FEED_JSON_DEPTH); this keeps the recursion bounded regardless. */
#define TF_JSON_WALK_MAX           1024

/* test_connection (fcgi/h_feeds.c, worker/probe.c): the whole check must
 * end well before a web server's FastCGI timeout and the dashboard's 20 s
 * (www/app.js TEST_CONNECTION_TIMEOUT_MS); the probe's requests together
 * (a TAXII feed's discovery and API roots, each asked once) give up first,
 * so the handler gets its answer rather than a timeout. */
#define TF_TEST_CONNECTION_TIMEOUT_S 10
#define TF_PROBE_TIMEOUT_S           8     /* below TF_TEST_CONNECTION_TIMEOUT_S */
/* Bytes of the probe's output the handler reads: one JSON line with a
 * detail of at most TF_MAX_ERROR_LEN and an API root URL (under
 * TF_MAX_URL), each at most doubled by JSON escapes (URLs and the notes
 * carry no control characters); anything longer is not an answer. */
#define TF_TEST_CONNECTION_OUTPUT    8192

/* Upstream responses (worker/fetch.c): a captured response header value
 * (Retry-After, X-TAXII-Date-Added-Last, Location) longer than this is
 * dropped — no real value is near it, and it is kept in memory per page. */
#define TF_FETCH_MAX_HEADER_VALUE 2048

/* TAXII (worker/feeds/taxii_find.c): body of a discovery, API root or
 * collections document — small documents; a megabyte is not one of them. */
#define TF_TAXII_MAX_META_BYTES (1024 * 1024)

/* OTX (worker/feeds/otx.c, otx.h). */
#define TF_OTX_MAX_ID    64   /* bytes of a pulse id (OTX: 24 hex digits) */
#define TF_OTX_MAX_TYPE  64   /* bytes of an indicator type name */
/* /pulses/{id}/indicators pages of one pulse (more_indicators): a pulse that
 * pages on beyond this is a loop or an abuse, not data. */
#define TF_OTX_MAX_INDICATOR_PAGES 1000

/* VirusTotal (worker/feeds/vt.c, vt.h). */
/* Longest domain name target (RFC 1035 §2.3.4, without the trailing dot). */
#define TF_VT_MAX_DOMAIN 253
/* Detailed warnings for skipped targets per run; beyond it only the total. */
#define TF_VT_MAX_SKIP_WARNINGS 20

/* Many hosts (PostgreSQL store, lib/store/pg.c, lib/runctl.c). */
/* Channels one store handle listens on: a supervisor listens on its run's
 * cancel channel, an agent on the queue's. */
#define TF_MAX_CHANNELS 4
/* Leases one store handle holds (a supervisor or worker holds its run's). */
#define TF_MAX_LEASES 4
/* TCP keepalives on every connection to a PostgreSQL store, both ends: a
 * silent peer is declared dead after IDLE + INTERVAL * COUNT seconds, so a
 * run whose host lost power or network loses its lease in about
 * TF_LEASE_DEAD_S and any handler, agent or `tick` ends it "worker lost". */
#define TF_PG_KEEPALIVE_IDLE_S     4
#define TF_PG_KEEPALIVE_INTERVAL_S 2
#define TF_PG_KEEPALIVE_COUNT      3
#define TF_LEASE_DEAD_S \
	(TF_PG_KEEPALIVE_IDLE_S + TF_PG_KEEPALIVE_INTERVAL_S * TF_PG_KEEPALIVE_COUNT)
/* An agent sweeps (ends lost runs, starts queued ones) at least this often
 * even without a notification: a notification sent while it was
 * reconnecting is not lost for longer. */
#define TF_AGENT_SWEEP_MS 2000

/* The observable index (lib/index.c) and its API (fcgi/h_indicators.c,
 * fcgi/h_export.c). */
/* Bytes of one observable value: the longest feed URL we accept; a longer
 * value is not indexed (it is still kept in its record). */
#define TF_MAX_OBS_VALUE           TF_MAX_URL
/* Bytes of a value that go into an index key as they are; a longer value is
 * keyed by this many bytes and a digest of the rest, so every key stays
 * below LMDB's 511-byte key limit with a 64-byte feed id. */
#define TF_OBS_KEY_VALUE           300
/* Values in one bulk lookup (POST /api/indicators/lookup): a SIEM's
 * enrichment batch; more is refused with 413, not cut. */
#define TF_MAX_LOOKUP_VALUES       1000
/* Body of a bulk lookup: 1000 values of up to TF_MAX_OBS_VALUE bytes each,
 * quoted, with room for the JSON around them (the 64 KiB of other writes
 * would not hold 1000 SHA-256 hashes). */
#define TF_MAX_LOOKUP_BODY         (TF_MAX_LOOKUP_VALUES * (TF_MAX_OBS_VALUE + 8) + 4096)
/* Sources (feed records) listed per hit: one value in a thousand records of
 * one feed is not worth listing whole; "sources_total" says how many. */
#define TF_MAX_HIT_SOURCES         100
/* ?limit= of an export: lines (or objects). Firewalls cap their lists at
 * some 10^5 to 10^6 entries; the bound only rejects typos. */
#define TF_MAX_EXPORT_LIMIT        100000000
/* options.ttl_days of a feed: at most ten years. */
#define TF_MAX_TTL_DAYS            3650
/* Bytes of the export token (config export_token), like api_token. */
#define TF_MAX_TOKEN               255
/* Named tokens (config token.NAME) and REMOTE_USER role mappings
 * (remote_user.NAME): a team's people and scripts, not a user directory —
 * each request walks them all (constant time over the list). */
#define TF_MAX_TOKENS              32
#define TF_MAX_ROLE_USERS          64
/* Bytes of a token's or mapped user's name; it is who the audit and
 * cancel.requested_by name. */
#define TF_MAX_PRINCIPAL           64
/* Audit entries kept (README "Audit"): each write appends one and drops the
 * one this many before it, so the trail is bounded (entries are < 1 KiB:
 * about 10 MiB at most) yet covers weeks of a team's writes. */
#define TF_AUDIT_KEEP              10000
/* Records per transaction of `threatfeed index rebuild`: one LMDB write
 * transaction blocks every other writer (a cancel from the API included),
 * so a rebuild of a million records must hand the lock back often; a
 * thousand records with their index entries commit in well under a second. */
#define TF_REINDEX_BATCH           1000

/* The signal store (store.h "signals"): keys are a prefix byte and a task
 * id or an outbox sequence; values a cancel request (mode, time, who: under
 * TF_MAX_NAME) or one audit entry (< 1 KiB). */
#define TF_SIGNAL_MAX_KEY          64
#define TF_SIGNAL_MAX_VAL          2048
/* LMDB map of <store>/signals: only pending requests live there (a cancel
 * until its run ends, an audit entry until the next audited write moves it),
 * so a few hundred KiB; the map is a sparse reservation, not disk. */
#define TF_SIGNAL_MAP_BYTES        ((size_t)32 << 20)
/* Audit entries waiting in the signal store moved by one audited write. */
#define TF_AUDIT_OUTBOX_BATCH      64

#endif
