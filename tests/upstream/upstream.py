#!/usr/bin/env python3
"""Fault-injecting upstream feed server for threatfeed's tests, benchmarks and demo.

Python 3 standard library only. Listens on loopback (127.0.0.1) only and serves,
from one port:

  * a TAXII 2.1 server with one readable collection of synthetic STIX 2.1 objects,
  * an AlienVault OTX DirectConnect v1 look-alike (``/api/v1/pulses/subscribed``),
  * a VirusTotal API v3 look-alike (``/api/v3/files|domains|ip_addresses|urls/ID``),
  * STIX bundles (``/bundles/NAME.json``),
  * a control API under ``/_ctl/`` to inject faults, read statistics and reload data.

Usage
-----
  python3 tests/upstream/upstream.py [--host 127.0.0.1] [--port 0] [--port-file PATH]
      [--objects 1000] [--page-size 100] [--max-page-size 1000] [--seed 1]
      [--page-delay-ms 0] [--username U --password P] [--demo] [--lifetime-s 3600]
      [--quiet] [--bundle-dir DIR] [--otx-pulses 50] [--vt-rpm 0] [--vt-dir DIR]

Once listening it writes the port to --port-file (temporary file + rename) and
prints ``listening on http://127.0.0.1:PORT``. It stops on SIGTERM/SIGINT, after
--lifetime-s seconds, when its parent process dies (checked every 0.5 s), or on
``POST /_ctl/shutdown``. ``--demo`` means 5000 objects, pages of 100 and a 400 ms
delay per page (about 20 s for a full run); explicit options still win.
Every request runs in its own daemon thread: a stalled response never blocks others.

TAXII 2.1 (see docs/FEEDS.md "TAXII 2.1")
-----------------------------------------
  GET /taxii2/                          discovery (api_roots ["http://127.0.0.1:PORT/api1/"])
  GET /api1/                            API root
  GET /api1/collections/                collections: 91a7b528-80eb-42ed-a74d-c6fbd5a26116
                                        "Synthetic indicators" (readable) and
                                        472c94ae-3113-4e3e-a4dd-a9f4ac7471d4 (write-only: 403)
  GET /api1/collections/ID/             one collection (unknown ID: 404)
  GET /api1/collections/ID/objects/     objects, in date-added order
      ?limit=      page size (default --page-size, silently capped at --max-page-size)
      ?added_after=  RFC 3339, strictly later
      ?next=       opaque token from the previous page; only valid with the same filters
                   (else 400); ``next`` without ``limit`` answers 500 like the
                   reference server
      ?match[type]= ?match[id]= ?match[version]=(last|first|all|timestamp) ?match[spec_version]=
  Envelope {"more":bool,"next":"...","objects":[...]} (no "next" on the last page),
  headers X-TAXII-Date-Added-First/-Last (%Y-%m-%dT%H:%M:%S.%fZ); an empty result is
  ``200 {}`` without date headers. Every TAXII path needs its trailing slash (else
  308 to the slashed URL), ``Accept: application/taxii+json;version=2.1`` (else 406)
  and, with --username/--password, HTTP Basic (else 401, an HTML page with
  ``WWW-Authenticate: Basic realm="taxii"``). Other errors are TAXII error JSON.

  Data (deterministic from --seed): object i (0-based) is added at
  2024-01-01T00:00:00Z + i s + a few microseconds; i%10==0 is a ``malware``, i%10==1 a
  ``relationship`` (indicator i+1 indicates malware i-1), i%50==25 a custom
  ``x-acme-note``, the rest ``indicator`` objects whose patterns cycle through
  ipv4-addr (10.x.y.z), ipv6-addr (2001:db8::N), domain-name (host-N.example),
  url (http://host-N.example/p), email-addr (user-N@example.org),
  file:hashes.'SHA-256' and file:hashes.MD5. ``created``/``modified`` equal the
  date added (millisecond precision). bump_versions K re-issues the first K objects
  with a newer ``modified`` and a new date added at the end of the collection.

OTX: GET /api/v1/pulses/subscribed?limit=&modified_since=&page=  (header
  X-OTX-API-KEY; missing or "bad" gives 403 {"detail":"Authentication required"}).
  --otx-pulses pulses (default 50) of 5 indicators each, ordered by ``modified``
  ascending (oldest first, so a stopped run's cursor is meaningful); modified_since
  keeps pulses modified strictly later; ``next``/``previous`` are absolute URLs or
  null. GET /api/v1/pulses/ID/indicators?limit=&page= pages one pulse's indicators.

VirusTotal: GET /api/v3/files/H, /domains/D, /ip_addresses/IP, /urls/ID, /analyses/ID
  (header x-apikey; missing or "bad" gives 401 WrongCredentialsError). Recorded real
  responses in --vt-dir (default tests/data/vt) are served for their own ids; other
  ids get a deterministic synthetic report; ids starting with 0000 give 404
  NotFoundError; malformed hashes/IPs give 400 InvalidArgumentError. --vt-rpm N
  (or the vt_rpm fault key) allows N lookups per sliding minute; beyond that 429
  QuotaExceededError with Retry-After.

Bundles: GET /bundles/NAME.json serves --bundle-dir/NAME.json (default
  tests/data/stix); /bundles/generated.json is a bundle of the synthetic objects.

Control API (JSON in and out; never behind auth, never faulted)
--------------------------------------------------------------
  GET  /_ctl/stats        {"requests":{kind:n}, "total_requests", "data_requests",
                           "objects_pages", "objects_served", "objects_requests":[{"page",
                           "added_after","next","limit","match","status","count","faults","t"}],
                           "otx_requests":[...], "vt_requests":[...], "bundle_requests":[...],
                           "bytes_sent", "in_flight", "aborted", "next_page", "faults", "data"}
  GET  /_ctl/faults       the current fault configuration
  POST /_ctl/faults       replace the fault configuration (unknown keys: 400)
  POST /_ctl/reset        faults back to the command-line settings, stats, page counter,
                          fault counters and VT quota window cleared; {"data":true} also
                          regenerates the command-line data set
  POST /_ctl/data         {"objects":N,"seed":S,"otx_pulses":M,"bump_versions":K} regenerate
                          (only the keys given) and/or bump versions
  POST /_ctl/bump_versions {"count":K}
  POST /_ctl/shutdown     stop the server

Faults (POST /_ctl/faults; all optional and combinable)
-------------------------------------------------------
"Data requests" are TAXII objects pages, OTX pages, VT lookups and bundle downloads;
each gets a page number: 0, 1, 2, ... counted since the last reset (shared by all
kinds). Page faults take ``"page"``: an int P (fires on the first data request
numbered >= P, then ``times`` times in a row, default 1), a list of ints (exactly
those pages) or ``"all"`` (the default; every page); ``"times"`` (-1 = unlimited)
bounds how often a fault fires. ``true`` stands for ``{}``. When several faults
replace the response on one page, the first of status, redirect, html, huge, deep,
bad_json, wrong_types wins; transport faults (stall, drip, truncate, chunked,
page_delay_ms) apply to whatever is sent, error responses included.

  page_delay_ms: N          sleep N ms before answering each data request
  chunked: true             send data responses with Transfer-Encoding: chunked
  next_ttl_s: S             TAXII next tokens expire S s after the first page of their
                            chain (then 400), like the reference server's 30 s
  vt_rpm: N                 overrides --vt-rpm
  max_page_size: N          overrides --max-page-size (TAXII limit cap, OTX limit cap)
  bump_versions: K          not stored: bumps the data once, like POST /_ctl/data
  stall {page, after_bytes: B, seconds: S}  send the headers and the first B body bytes,
                            then nothing for S s (the connection stays open; it ends
                            early if the client hangs up), then the rest. B = -1
                            stalls before the headers.
  drip {page, bytes_per_s: R}   send the body at R bytes/s in small chunks
  truncate {page}           Content-Length of the full body, half of it, then close
  bad_json {page}           200 with syntactically invalid JSON
  status {page, code, retry_after, times, html}  answer code (401|403|404|429|500|503 or
                            any other) in the upstream's error style: TAXII error JSON,
                            401 as HTML with WWW-Authenticate, 500 alternating JSON and
                            HTML; OTX {"detail"}; VT {"error":{code,message}};
                            Retry-After when retry_after is given; html:true forces HTML
  html {page}               200 with an HTML login page instead of JSON
  huge {page, bytes: N, chunked}  a valid-looking JSON body of N bytes (streamed)
  deep {page, depth: N}     objects (results, data) nested N arrays deep
  many {page, objects: N}   a page of N objects (pulses) regardless of limit
  loop_next {page}          TAXII: every page reached through a next token points back
                            to the first page (pages 0,1,0,1,... forever); OTX: page 2's
                            next is page 1
  endless_more {page}       always more:true, a new next token and zero objects
                            (OTX: an empty page with a next URL)
  no_next {page}            TAXII: more:true without a next token (the client must go on
                            with added_after = the last X-TAXII-Date-Added-Last)
  invalid_utf8 {page}       200 JSON containing bytes that are not UTF-8
  wrong_types {page, variant: "fields"|"envelope"}  JSON of the right shape with wrong
                            types: ids as numbers, type as a list, pattern as a number,
                            ... ("fields"), or objects as an object, more as a string,
                            next as a number ("envelope")
  redirect {page, location: "ftp://127.0.0.1/x", code: 302}  redirect elsewhere

Run the self-test with ``python3 tests/upstream/test_upstream.py``.
"""

import argparse
import base64
import binascii
import bisect
import calendar
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import re
import select
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# ---------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_BUNDLE_DIR = os.path.join(REPO_ROOT, "tests", "data", "stix")
DEFAULT_VT_DIR = os.path.join(REPO_ROOT, "tests", "data", "vt")

TAXII_MEDIA = "application/taxii+json;version=2.1"
STIX_MEDIA = "application/stix+json;version=2.1"
JSON_MEDIA = "application/json"
HTML_MEDIA = "text/html; charset=utf-8"
COLLECTION_ID = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
WRITE_ONLY_COLLECTION_ID = "472c94ae-3113-4e3e-a4dd-a9f4ac7471d4"
API_ROOT = "api1"

BASE_US = calendar.timegm((2024, 1, 1, 0, 0, 0)) * 1_000_000
OTX_BASE_US = calendar.timegm((2023, 8, 22, 9, 43, 18)) * 1_000_000 + 855_000
STEP_US = 1_000_000

STOP = threading.Event()          # set when the server is shutting down
START = time.monotonic()
MAX_LOG = 100_000                 # per-kind request log entries kept in stats

PAGE_FAULTS = ("stall", "drip", "truncate", "bad_json", "status", "html", "huge", "deep",
               "many", "loop_next", "endless_more", "no_next", "invalid_utf8", "wrong_types",
               "redirect")
GLOBAL_FAULTS = ("page_delay_ms", "chunked", "next_ttl_s", "vt_rpm", "max_page_size")
ACTION_KEYS = ("bump_versions",)

REASONS = {200: "OK", 301: "Moved Permanently", 302: "Found", 303: "See Other",
           307: "Temporary Redirect", 308: "Permanent Redirect", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 406: "Not Acceptable", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
           504: "Gateway Timeout"}


# ---------------------------------------------------------------------------
# Time helpers
# ---------------------------------------------------------------------------

def fmt_us(us):
    """Microsecond timestamp -> 2024-01-01T00:00:00.000000Z (TAXII date added)."""
    sec, micro = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%06dZ" % micro


def fmt_ms(us):
    """Microsecond timestamp -> 2024-01-01T00:00:00.000Z (STIX created/modified)."""
    sec, micro = divmod(us, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + ".%03dZ" % (micro // 1000)


def fmt_otx(us):
    """Microsecond timestamp -> 2023-08-22T09:43:18.855000 (OTX style, UTC, no zone)."""
    return fmt_us(us)[:-1]


RFC3339 = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?"
                     r"(?:([Zz])|([+-])(\d\d):(\d\d))?$")


def parse_ts(text, require_zone=True):
    """RFC 3339 / ISO 8601 timestamp -> microseconds since the epoch (None if invalid).

    Fractions beyond microseconds are truncated, which keeps "strictly later"
    comparisons exact. A missing zone is UTC when require_zone is False (OTX)."""
    m = RFC3339.match(text or "")
    if not m or (require_zone and not (m.group(8) or m.group(9))):
        return None
    year, mon, day, hh, mm, ss = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    try:
        datetime.datetime(year, mon, day, hh, mm, min(ss, 59))
    except ValueError:
        return None
    us = calendar.timegm((year, mon, day, hh, mm, ss)) * 1_000_000
    us += int((m.group(7) or "0").ljust(6, "0")[:6])
    if m.group(9):
        offset = (int(m.group(10)) * 60 + int(m.group(11))) * 60_000_000
        us -= offset if m.group(9) == "+" else -offset
    return us


def stix_added_us(i):
    """Date added of synthetic object i: base + i seconds + distinct microseconds."""
    return BASE_US + i * STEP_US + (i * 7919) % 999_983 + 1


def elapsed():
    return round(time.monotonic() - START, 3)


# ---------------------------------------------------------------------------
# Synthetic STIX data
# ---------------------------------------------------------------------------

def det_uuid(seed, kind, i):
    """A deterministic UUID (version 5 layout) from the seed, a kind and an index."""
    h = hashlib.sha1(b"%d:%s:%d" % (seed, kind.encode(), i)).hexdigest()
    return "%s-%s-5%s-%s%s-%s" % (h[:8], h[8:12], h[13:16], "89ab"[int(h[16], 16) & 3],
                                  h[17:20], h[20:32])


def stix_type(i):
    """Which STIX type synthetic object i has."""
    if i % 10 == 0:
        return "malware"
    if i % 10 == 1:
        return "relationship"
    if i % 50 == 25:
        return "x-acme-note"
    return "indicator"


def stix_id(seed, i):
    kind = stix_type(i)
    return "%s--%s" % (kind, det_uuid(seed, kind, i))


PATTERN_KINDS = ("ipv4", "ipv6", "domain", "url", "email", "sha256", "md5")


def indicator_pattern(seed, i):
    """(kind, pattern) of indicator i; kinds cycle with i % 7."""
    kind = PATTERN_KINDS[i % 7]
    if kind == "ipv4":
        value = "[ipv4-addr:value = '10.%d.%d.%d']" % ((i >> 16) & 255, (i >> 8) & 255, i & 255)
    elif kind == "ipv6":
        addr = ipaddress.IPv6Address((0x20010db8 << 96) + i)
        value = "[ipv6-addr:value = '%s']" % addr.compressed
    elif kind == "domain":
        value = "[domain-name:value = 'host-%d.example']" % i
    elif kind == "url":
        value = "[url:value = 'http://host-%d.example/p']" % i
    elif kind == "email":
        value = "[email-addr:value = 'user-%d@example.org']" % i
    elif kind == "sha256":
        digest = hashlib.sha256(b"file:%d:%d" % (seed, i)).hexdigest()
        value = "[file:hashes.'SHA-256' = '%s']" % digest
    else:
        digest = hashlib.md5(b"file:%d:%d" % (seed, i)).hexdigest()
        value = "[file:hashes.MD5 = '%s']" % digest
    return kind, value


def stix_object(seed, i, modified_us=None):
    """Synthetic STIX 2.1 object i as a dict; modified_us gives a later version."""
    created = fmt_ms(stix_added_us(i))
    modified = fmt_ms(modified_us) if modified_us else created
    kind = stix_type(i)
    obj = {"type": kind, "spec_version": "2.1", "id": stix_id(seed, i),
           "created": created, "modified": modified}
    if kind == "malware":
        obj.update(name="Synthetic malware %d" % i, is_family=False, malware_types=["trojan"])
    elif kind == "relationship":
        obj.update(relationship_type="indicates", source_ref=stix_id(seed, i + 1),
                   target_ref=stix_id(seed, i - 1))
    elif kind == "x-acme-note":
        obj.update(note="Custom object %d: clients must keep unknown types as data" % i,
                   x_acme_severity=i % 5)
    else:
        pkind, pattern = indicator_pattern(seed, i)
        obj.update(name="Synthetic %s indicator %d" % (pkind, i), pattern_type="stix",
                   pattern=pattern, valid_from=created, indicator_types=["malicious-activity"])
    return obj


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode


def dump(obj):
    """Compact JSON bytes."""
    return _ENCODE(obj).encode()


class View:
    """The objects matching one filter, in date-added order (parallel lists)."""

    def __init__(self, keys, added, bodies):
        self.keys = keys        # date added, microseconds
        self.added = added      # date added, formatted
        self.bodies = bodies    # serialized objects


class StixData:
    """An immutable, pre-serialized collection; bumped() returns a new one."""

    def __init__(self, seed, count):
        self.seed, self.count = seed, count
        self.keys, self.added, self.bodies = [], [], []
        self.types, self.ids, self.modified, self.origin, self.version = [], [], [], [], []
        self.superseded = set()      # indices with a later version
        self.latest = {}             # origin index -> index of its latest version
        self._views, self._lock = {}, threading.Lock()
        self._bundle = None
        for i in range(count):
            key = stix_added_us(i)
            self._append(i, 1, key, key, stix_object(seed, i))

    def _append(self, origin, version, key, modified_us, obj):
        idx = len(self.keys)
        self.keys.append(key)
        self.added.append(fmt_us(key))
        self.bodies.append(dump(obj))
        self.types.append(obj["type"])
        self.ids.append(obj["id"])
        self.modified.append(modified_us)
        self.origin.append(origin)
        self.version.append(version)
        prev = self.latest.get(origin)
        if prev is not None:
            self.superseded.add(prev)
        self.latest[origin] = idx

    def bumped(self, count):
        """A copy where the first `count` objects have a new version at the end."""
        new = StixData.__new__(StixData)
        new.seed, new.count = self.seed, self.count
        for name in ("keys", "added", "bodies", "types", "ids", "modified", "origin", "version"):
            setattr(new, name, list(getattr(self, name)))
        new.superseded, new.latest = set(self.superseded), dict(self.latest)
        new._views, new._lock, new._bundle = {}, threading.Lock(), None
        key = new.keys[-1] if new.keys else BASE_US
        for origin in range(min(count, self.count)):
            key += STEP_US
            version = new.version[new.latest[origin]] + 1
            new._append(origin, version, key, key,
                        stix_object(self.seed, origin, modified_us=key))
        return new

    def view(self, versions, types, ids, spec_versions):
        """The (cached) View for a filter; arguments are tuples or None."""
        cache_key = (versions, types, ids, spec_versions)
        with self._lock:
            cached = self._views.get(cache_key)
        if cached is not None:
            return cached
        if versions == ("last",) and not self.superseded and not types and not ids \
                and (not spec_versions or "2.1" in spec_versions):
            result = View(self.keys, self.added, self.bodies)
        else:
            picked = [i for i in range(len(self.keys)) if self._match(i, versions, types, ids,
                                                                       spec_versions)]
            result = View([self.keys[i] for i in picked], [self.added[i] for i in picked],
                          [self.bodies[i] for i in picked])
        with self._lock:
            if len(self._views) > 64:
                self._views.clear()
            self._views[cache_key] = result
        return result

    def _match(self, i, versions, types, ids, spec_versions):
        if spec_versions and "2.1" not in spec_versions:
            return False
        if types and self.types[i] not in types:
            return False
        if ids and self.ids[i] not in ids:
            return False
        for v in versions:
            if v == "all" or (v == "last" and i not in self.superseded) \
                    or (v == "first" and self.version[i] == 1) \
                    or (v not in ("all", "last", "first") and parse_ts(v) == self.modified[i]):
                return True
        return False

    def bundle(self):
        """The latest versions as one STIX bundle (bytes, cached)."""
        if self._bundle is None:
            view = self.view(("last",), None, None, None)
            head = b'{"type":"bundle","id":"bundle--%s","objects":[' % \
                det_uuid(self.seed, "bundle", len(self.keys)).encode()
            self._bundle = head + b",".join(view.bodies) + b"]}"
        return self._bundle

    def summary(self):
        return {"objects": self.count, "seed": self.seed, "entries": len(self.keys),
                "versions_bumped": len(self.keys) - self.count,
                "first_added": self.added[0] if self.added else None,
                "last_added": self.added[-1] if self.added else None}


# ---------------------------------------------------------------------------
# Synthetic OTX data
# ---------------------------------------------------------------------------

OTX_TYPES = ("IPv4", "domain", "hostname", "URL", "FileHash-SHA256",
             "CVE", "FileHash-MD5", "email", "IPv6", "Mutex")
OTX_PER_PULSE = 5


def otx_indicator_value(seed, kind, i, j):
    if kind == "IPv4":
        return "172.%d.%d.%d" % (16 + ((i >> 16) & 15), (i >> 8) & 255, (i & 255) ^ j)
    if kind == "IPv6":
        return ipaddress.IPv6Address((0x20010db8_0001 << 80) + i * 16 + j).compressed
    if kind == "domain":
        return "pulse-%d.example.net" % i
    if kind == "hostname":
        return "www.pulse-%d.example.net" % i
    if kind == "URL":
        return "http://pulse-%d.example.net/payload.bin" % i
    if kind == "FileHash-SHA256":
        return hashlib.sha256(b"otx:%d:%d:%d" % (seed, i, j)).hexdigest()
    if kind == "FileHash-MD5":
        return hashlib.md5(b"otx:%d:%d:%d" % (seed, i, j)).hexdigest()
    if kind == "CVE":
        return "CVE-2023-%d" % (10000 + i)
    if kind == "email":
        return "actor-%d@example.net" % i
    return "Global\\synth-mutex-%d" % i


def otx_pulse(seed, i):
    """Synthetic OTX pulse i as (modified_us, dict)."""
    modified_us = OTX_BASE_US + i * 60 * STEP_US + (i * 104729) % 999_983
    created = fmt_otx(modified_us - 86400 * STEP_US)
    indicators = []
    for j in range(OTX_PER_PULSE):
        kind = OTX_TYPES[(i * OTX_PER_PULSE + j) % len(OTX_TYPES)]
        indicators.append({"id": 3_000_000_000 + i * OTX_PER_PULSE + j,
                           "indicator": otx_indicator_value(seed, kind, i, j), "type": kind,
                           "created": created, "content": "", "title": "", "description": "",
                           "expiration": None, "is_active": 1, "role": None})
    theme = ("phishing", "botnet", "ransomware", "scanner", "c2")[i % 5]
    pulse = {"id": hashlib.sha1(b"pulse:%d:%d" % (seed, i)).hexdigest()[:24],
             "name": "Synthetic %s pulse %d" % (theme, i),
             "description": "Deterministic test pulse %d (seed %d)" % (i, seed),
             "author_name": "threatfeed-synthetic", "created": created,
             "modified": fmt_otx(modified_us), "revision": 1, "tlp": "white", "public": 1,
             "adversary": "", "tags": ["synthetic", theme], "targeted_countries": [],
             "malware_families": [], "attack_ids": [], "references": [], "industries": [],
             "indicators": indicators, "more_indicators": False}
    return modified_us, pulse


class OtxData:
    """Pre-serialized pulses ordered by modified, ascending."""

    def __init__(self, seed, count):
        self.seed, self.count = seed, count
        self.keys, self.bodies, self.by_id = [], [], {}
        for i in range(count):
            key, pulse = otx_pulse(seed, i)
            self.keys.append(key)
            self.bodies.append(dump(pulse))
            self.by_id[pulse["id"]] = [dump(x) for x in pulse["indicators"]]


# ---------------------------------------------------------------------------
# VirusTotal data
# ---------------------------------------------------------------------------

VT_TYPES = {"files": "file", "domains": "domain", "ip_addresses": "ip_address",
            "urls": "url", "analyses": "analysis"}
NOT_FOUND_RE = re.compile(r'"([^"]+)" not found')


def vt_norm(coll, ident):
    """Hashes and domains compare case-insensitively; URL and analysis ids do not."""
    return ident.lower() if coll in ("files", "domains") else ident


def load_vt_recordings(directory):
    """{(collection, id): (status, bytes)} from recorded VT responses, plus the
    recorded wrong-key body under ("", "wrong_key")."""
    recorded = {}
    if not os.path.isdir(directory):
        return recorded
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        with open(os.path.join(directory, name), "rb") as f:
            raw = f.read()
        try:
            doc = json.loads(raw)
        except ValueError:
            continue
        data, error = doc.get("data"), doc.get("error")
        if isinstance(data, dict) and data.get("type") and data.get("id"):
            coll = {v: k for k, v in VT_TYPES.items()}.get(data["type"])
            if coll:
                recorded[(coll, vt_norm(coll, str(data["id"])))] = (200, raw)
        elif isinstance(error, dict) and error.get("code") == "NotFoundError":
            m = NOT_FOUND_RE.search(error.get("message", ""))
            if m:
                recorded[("files", vt_norm("files", m.group(1)))] = (404, raw)
        elif isinstance(error, dict) and error.get("code") == "WrongCredentialsError":
            recorded[("", "wrong_key")] = (401, raw)
    return recorded


def vt_validate(coll, ident):
    """An InvalidArgumentError message, or None when the id is well-formed."""
    if coll == "files" and not re.fullmatch(r"[0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64}", ident):
        return "%s is not a valid file hash" % ident
    if coll == "ip_addresses":
        try:
            ipaddress.ip_address(ident)
        except ValueError:
            return "%s is not a valid IP address" % ident
    if coll == "domains" and not re.fullmatch(r"[a-z0-9_.-]+\.[a-z0-9-]+", ident):
        return "%s is not a valid domain" % ident
    return None


def vt_report(base, coll, ident):
    """A deterministic synthetic VT v3 report for (collection, id)."""
    h = hashlib.sha256(("%s/%s" % (coll, ident)).encode()).digest()
    malicious = h[0] % 12 if h[1] % 3 == 0 else 0
    stats = {"harmless": 10 + h[4] % 60, "malicious": malicious, "suspicious": h[2] % 3,
             "undetected": 20 + h[3] % 40, "timeout": h[5] % 2}
    attrs = {"last_analysis_stats": stats,
             "reputation": -(h[6] % 100) if malicious else h[6] % 50,
             "last_analysis_date": 1_700_000_000 + int.from_bytes(h[8:12], "big") % 20_000_000,
             "tags": ["synthetic"]}
    if coll == "files":
        stats.update({"type-unsupported": h[7] % 10, "confirmed-timeout": 0, "failure": 0})
        attrs.update(meaningful_name="sample-%s.exe" % ident[:8], size=1024 + h[9] * 97,
                     type_description="Win32 EXE")
    elif coll == "domains":
        attrs.update(tld=ident.rsplit(".", 1)[-1], registrar="Synthetic Registrar, Inc.")
    elif coll == "ip_addresses":
        attrs.update(country="ZZ", as_owner="SYNTHETIC-AS", asn=64496 + h[10] % 16)
    elif coll == "urls":
        try:
            url = base64.urlsafe_b64decode(ident + "=" * (-len(ident) % 4)).decode()
        except (binascii.Error, UnicodeDecodeError):
            url = None
        attrs.update(url=url, title="Synthetic page")
    return {"data": {"type": VT_TYPES[coll], "id": ident,
                     "links": {"self": "%s/api/v3/%s/%s" % (base, coll, ident)},
                     "attributes": attrs}}


class RateWindow:
    """Requests-per-minute budget over a sliding 60 s window."""

    def __init__(self):
        self.times, self.lock = [], threading.Lock()

    def take(self, rpm):
        """None when the request fits the budget, else seconds to wait."""
        if rpm <= 0:
            return None
        now = time.monotonic()
        with self.lock:
            self.times = [t for t in self.times if now - t < 60]
            if len(self.times) >= rpm:
                return max(1, int(60 - (now - self.times[0])) + 1)
            self.times.append(now)
            return None

    def clear(self):
        with self.lock:
            self.times = []


# ---------------------------------------------------------------------------
# Faults and statistics
# ---------------------------------------------------------------------------

class FaultError(ValueError):
    pass


def validate_faults(cfg):
    """Check a fault configuration; raise FaultError with a helpful message."""
    if not isinstance(cfg, dict):
        raise FaultError("the fault configuration must be a JSON object")
    known = PAGE_FAULTS + GLOBAL_FAULTS + ACTION_KEYS
    for key, value in cfg.items():
        if key not in known:
            raise FaultError("unknown fault %r; known: %s" % (key, ", ".join(known)))
        if key in PAGE_FAULTS and value not in (None, False, True) and not isinstance(value, dict):
            raise FaultError("fault %r takes an object (or true)" % key)
        if isinstance(value, dict):
            page = value.get("page", "all")
            if not (page == "all" or isinstance(page, int) or
                    (isinstance(page, list) and all(isinstance(p, int) for p in page))):
                raise FaultError("%s.page must be an int, a list of ints or \"all\"" % key)
    status = cfg.get("status")
    if isinstance(status, dict) and not isinstance(status.get("code"), int):
        raise FaultError("status.code must be an integer HTTP status")


class FaultPlan:
    """A fault configuration plus how often each page fault has fired."""

    def __init__(self, cfg):
        self.cfg = dict(cfg)
        self.fired = {}

    def get(self, key, default=None):
        return self.cfg.get(key, default)

    def firing(self, page_no):
        """{fault name: spec} of the page faults that fire for data request page_no.
        Called under the state lock."""
        result = {}
        for name in PAGE_FAULTS:
            spec = self.cfg.get(name)
            if spec is None or spec is False:
                continue
            spec = {} if spec is True else spec
            page = spec.get("page", "all")
            if page == "all":
                match, times = True, spec.get("times", -1)
            elif isinstance(page, list):
                match, times = page_no in page, spec.get("times", -1)
            else:
                match, times = page_no >= page, spec.get("times", 1)
            count = self.fired.get(name, 0)
            if match and (times < 0 or count < times):
                self.fired[name] = count + 1
                result[name] = dict(spec, _n=count + 1)
        return result


class Stats:
    """Request counters and logs, reset by POST /_ctl/reset."""

    KINDS = ("discovery", "root", "collections", "collection", "objects", "otx",
             "otx_indicators", "vt", "bundle", "redirect", "other")

    def __init__(self):
        self.requests = {k: 0 for k in self.KINDS}
        self.total = 0
        self.data_requests = 0
        self.objects_pages = 0
        self.objects_served = 0
        self.logs = {"objects": [], "otx": [], "vt": [], "bundle": []}
        self.bytes_sent = 0
        self.in_flight = 0
        self.aborted = 0

    def log(self, kind, entry):
        logs = self.logs.get({"otx_indicators": "otx"}.get(kind, kind))
        if logs is not None and len(logs) < MAX_LOG:
            logs.append(entry)

    def as_json(self):
        return {"requests": dict(self.requests), "total_requests": self.total,
                "data_requests": self.data_requests, "objects_pages": self.objects_pages,
                "objects_served": self.objects_served,
                "objects_requests": list(self.logs["objects"]),
                "otx_requests": list(self.logs["otx"]), "vt_requests": list(self.logs["vt"]),
                "bundle_requests": list(self.logs["bundle"]), "bytes_sent": self.bytes_sent,
                "in_flight": self.in_flight, "aborted": self.aborted}


class State:
    """Everything the handlers share; mutated under self.lock."""

    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        self.port = 0
        self.scheme = "https" if getattr(args, "tls_cert", None) else "http"
        self.stix = StixData(args.seed, args.objects)
        self.otx = OtxData(args.seed, args.otx_pulses)
        self.vt_recorded = load_vt_recordings(args.vt_dir)
        self.vt_window = RateWindow()
        self.base_faults = {"page_delay_ms": args.page_delay_ms} if args.page_delay_ms else {}
        self.faults = FaultPlan(self.base_faults)
        self.stats = Stats()
        self.next_page = 0
        self.token_nonce = 0
        self.bundle_cache = {}
        self.sessions = {}     # --session-next: token -> where its chain stands

    @property
    def base_url(self):
        return "%s://127.0.0.1:%d" % (self.scheme, self.port)

    def reset(self, data=False):
        with self.lock:
            self.faults = FaultPlan(self.base_faults)
            self.stats = Stats()
            self.next_page = 0
        self.vt_window.clear()
        if data:
            self.load_data({"objects": self.args.objects, "seed": self.args.seed,
                            "otx_pulses": self.args.otx_pulses})

    def set_faults(self, cfg):
        validate_faults(cfg)
        cfg = dict(cfg)
        bump = cfg.pop("bump_versions", None)
        if bump is not None:
            self.load_data({"bump_versions": bump})
        with self.lock:
            self.faults = FaultPlan(cfg)

    def load_data(self, req):
        """Regenerate and/or bump data as POST /_ctl/data describes."""
        if not isinstance(req, dict):
            raise FaultError("the data request must be a JSON object")
        seed = req.get("seed", self.stix.seed)
        if "objects" in req or "seed" in req:
            self.stix = StixData(int(seed), int(req.get("objects", self.stix.count)))
        if "otx_pulses" in req or "seed" in req:
            self.otx = OtxData(int(seed), int(req.get("otx_pulses", self.otx.count)))
        bump = req.get("bump_versions")
        if isinstance(bump, dict):
            bump = bump.get("count", 0)
        if bump:
            with self.lock:
                self.stix = self.stix.bumped(int(bump))
        return self.data_summary()

    def data_summary(self):
        return dict(self.stix.summary(), otx_pulses=self.otx.count,
                    vt_recorded=sorted("%s/%s" % k for k in self.vt_recorded if k[0]))

    def start_data_request(self):
        """Number the next data request and pick its faults."""
        with self.lock:
            page_no = self.next_page
            self.next_page += 1
            self.stats.data_requests += 1
            return page_no, self.faults.firing(page_no), self.faults

    def count(self, kind):
        with self.lock:
            self.stats.requests[kind] = self.stats.requests.get(kind, 0) + 1
            self.stats.total += 1

    def add_bytes(self, n):
        with self.lock:
            self.stats.bytes_sent += n

    def new_nonce(self):
        with self.lock:
            self.token_nonce += 1
            return self.token_nonce


# ---------------------------------------------------------------------------
# Response bodies
# ---------------------------------------------------------------------------

class Stream:
    """A body produced in pieces: total length plus a generator of chunks."""

    def __init__(self, length, chunks):
        self.length, self.chunks = length, chunks


def repeat_chunks(head, filler, count, tail, chunk=65536):
    """head + filler * count + tail, yielded in chunks of about `chunk` bytes."""
    yield head
    per = max(1, chunk // len(filler))
    block = filler * per
    while count >= per:
        yield block
        count -= per
    if count:
        yield filler * count
    yield tail


# What a list of items looks like, per upstream kind: (prefix, suffix).
LIST_FRAME = {
    "objects": (b'{"more":false,"objects":[', b"]}"),
    "otx": (b'{"count":1,"next":null,"previous":null,"results":[', b"]}"),
    "otx_indicators": (b'{"count":1,"next":null,"previous":null,"results":[', b"]}"),
    "vt": (b'{"data":{"type":"file","id":"x","attributes":{"names":[', b"]}}}"),
    "bundle": (b'{"type":"bundle","id":"bundle--3f0e5a55-7f3e-4f4c-9d5d-4a8d3d7c2b10","objects":[',
               b"]}"),
}


def huge_body(kind, size, chunked=False):
    """A syntactically valid JSON body of about `size` bytes: one huge string."""
    head, tail = LIST_FRAME[kind]
    head += b'{"type":"x-acme-note","id":"x-acme-note--0b6a2f7e-9a52-4c1e-8f0e-5d1c2b3a4f50",' \
            b'"spec_version":"2.1","note":"'
    tail = b'"}' + tail
    fill = max(0, size - len(head) - len(tail))
    return Stream(None if chunked else len(head) + fill + len(tail),
                  repeat_chunks(head, b"A", fill, tail))


def deep_body(kind, depth):
    """A JSON body whose item list holds arrays nested `depth` deep."""
    head, tail = LIST_FRAME[kind]

    def chunks():
        yield head
        yield from repeat_chunks(b"", b"[", depth, b"")
        yield from repeat_chunks(b"", b"]", depth, b"")
        yield tail
    return Stream(len(head) + 2 * depth + len(tail), chunks())


BAD_JSON = {"objects": b'{"more": false, "objects": [{"type": "indicator", "id": }]}',
            "otx": b'{"count": 1, "results": [{"id": "5f0c", "indicators": [}]}',
            "vt": b'{"data": {"type": "file", "id": , "attributes": {}}',
            "bundle": b'{"type": "bundle", "objects": [{"type": "indicator" "id": "x"}]}'}


def bad_json_body(kind):
    return BAD_JSON.get(kind, BAD_JSON["otx"] if kind.startswith("otx") else BAD_JSON["objects"])


def invalid_utf8(body):
    """Insert bytes that are not UTF-8 into the first string value of a JSON body."""
    bad = b"\xff\xfe\xc3\x28 broken"
    for marker in (b'"name":"', b'"id":"', b'":"'):
        pos = body.find(marker)
        if pos >= 0:
            pos += len(marker)
            return body[:pos] + bad + body[pos:]
    return b'{"x_bad":"' + bad + b'"}'


WRONG_OBJECTS = [
    {"type": ["indicator"], "id": 12345, "spec_version": 2.1, "created": True,
     "modified": None, "pattern": ["[ipv4-addr:value = '10.0.0.1']"], "pattern_type": {},
     "valid_from": 0},
    {"type": "indicator", "id": "indicator--6b5c7a1e-8d2f-4e3a-9b1c-0d4e5f6a7b8c",
     "spec_version": "2.1", "created": "2024-01-01T00:00:00.000Z",
     "modified": "2024-01-01T00:00:00.000Z", "pattern": 42, "pattern_type": "stix",
     "valid_from": "2024-01-01T00:00:00.000Z"},
    {"type": "malware", "id": {"nested": "object"}, "spec_version": "2.1", "name": 7},
    42, "a string", None, [1, 2, 3], True,
]

WRONG = {
    ("objects", "fields"): {"more": False, "objects": WRONG_OBJECTS},
    ("objects", "envelope"): {"more": "yes", "next": 17,
                              "objects": {"0": {"type": "indicator", "id": "indicator--x"}}},
    ("otx", "fields"): {"count": "many", "next": None, "previous": None, "results": [
        {"id": 123, "name": ["pulse"], "modified": 5, "indicators": "none"},
        {"id": "64e47c8a1f3b2a5d6c7e8f90", "name": "p", "modified": "2023-08-22T09:43:18.855000",
         "indicators": [{"id": "not-an-int", "indicator": 7, "type": ["IPv4"]}, None, 3]},
        "a string", None]},
    ("otx", "envelope"): {"count": {}, "next": 5, "previous": [], "results": {"a": 1}},
    ("vt", "fields"): {"data": {"type": 5, "id": [1], "links": "x", "attributes": {
        "last_analysis_stats": {"malicious": "many", "harmless": None},
        "reputation": "high", "last_analysis_date": "yesterday"}}},
    ("vt", "envelope"): {"data": [1, 2, 3]},
    ("bundle", "fields"): {"type": "bundle", "id": 5, "objects": WRONG_OBJECTS},
    ("bundle", "envelope"): {"type": ["bundle"], "objects": {"a": 1}},
}


def wrong_types_body(kind, variant):
    kind = "otx" if kind.startswith("otx") else kind
    variant = variant if variant in ("fields", "envelope") else "fields"
    return dump(WRONG[(kind, variant)])


HTML_LOGIN = (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>"
              b"<h1>Please sign in</h1><form method=\"post\" action=\"/login\">"
              b"<input name=\"user\"><input name=\"password\" type=\"password\"></form>"
              b"</body></html>\n")


def html_error(status, text):
    reason = REASONS.get(status, "Error")
    return ("<!DOCTYPE html>\n<html><head><title>%d %s</title></head><body><h1>%s</h1>"
            "<p>%s</p></body></html>\n" % (status, reason, reason, text)).encode()


def taxii_error(status, title, description=""):
    return dump({"title": title, "description": description, "error_id": str(uuid.uuid4()),
                 "error_code": REASONS.get(status, "error").lower().replace(" ", "_"),
                 "http_status": str(status),
                 "external_details": "https://docs.oasis-open.org/cti/taxii/v2.1/",
                 "details": {}})


VT_CODES = {400: "BadRequestError", 401: "WrongCredentialsError", 403: "ForbiddenError",
            404: "NotFoundError", 429: "QuotaExceededError", 500: "InternalError",
            503: "TransientError"}


def vt_error(status, message, code=None):
    return dump({"error": {"code": code or VT_CODES.get(status, "BadRequestError"),
                           "message": message}})


# ---------------------------------------------------------------------------
# TAXII next tokens
# ---------------------------------------------------------------------------

def filter_hash(query):
    """Hash of every filter parameter (all but limit and next)."""
    items = sorted((k, v) for k, v in query.items() if k not in ("limit", "next"))
    return hashlib.sha1(repr(items).encode()).hexdigest()[:12]


def make_token(after, fhash, chain_start, nonce=0):
    raw = json.dumps([after, fhash, round(chain_start, 3), nonce], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read_token(token):
    """(after, fhash, chain_start) or None when the token is not one of ours."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after, fhash, chain_start, _ = json.loads(raw)
        return int(after), str(fhash), float(chain_start)
    except (ValueError, TypeError, binascii.Error):
        return None


# ---------------------------------------------------------------------------
# HTTP handler
# ---------------------------------------------------------------------------

class ClientGone(Exception):
    """The client closed the connection while we were sending."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "threatfeed-upstream/1.0"
    sys_version = ""
    timeout = 300

    # --- plumbing -------------------------------------------------------

    @property
    def state(self):
        return self.server.state

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        if not self.state.args.quiet:
            sys.stderr.write("upstream: %s %s\n" % (self.address_string(), fmt % args))

    def do_GET(self):
        self._dispatch("GET", b"")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        self._dispatch("POST", body)

    def do_PUT(self):
        self.do_POST()

    do_DELETE = do_PATCH = do_PUT

    def do_HEAD(self):
        self._begin()
        self.send_plain(405, b"", JSON_MEDIA, [("Allow", "GET")])

    def _begin(self):
        # Stats of this request's epoch: a /_ctl/reset during a slow response
        # must not let that response count into the fresh stats.
        self.req_stats = self.state.stats
        self.transport = {}
        self.kind = None
        self.log_entry = None
        self.sent_status = None
        self.page_counted = False

    def _dispatch(self, method, body):
        self._begin()
        split = urllib.parse.urlsplit(self.path)
        self.url_path = split.path
        self.query = {k: v[0] for k, v in
                      urllib.parse.parse_qs(split.query, keep_blank_values=True).items()}
        self.raw_query = split.query
        try:
            if self.url_path.startswith("/_ctl/"):
                self.control(method, self.url_path[len("/_ctl/"):].strip("/"), body)
            elif method != "GET":
                self.state.count("other")
                self.send_plain(405, dump({"error": "method not allowed"}), JSON_MEDIA,
                                [("Allow", "GET")])
            else:
                self.route_get()
        except ClientGone:
            with self.state.lock:
                self.req_stats.aborted += 1
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            with self.state.lock:
                self.req_stats.aborted += 1
            self.close_connection = True
        finally:
            self._finish_log()

    def _finish_log(self):
        entry = self.log_entry
        if entry is not None:
            with self.state.lock:
                entry["status"] = self.sent_status
                # Counted once the status line is on its way (_header_bytes):
                # a client that reads /_ctl/stats right after its response
                # must find that response counted.
                if self.kind == "objects" and self.sent_status == 200 and not self.page_counted:
                    self.page_counted = True
                    self.req_stats.objects_pages += 1
                    self.req_stats.objects_served += entry.get("count") or 0

    # --- low-level sending ---------------------------------------------

    def _write(self, data):
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError, socket.timeout) as exc:
            raise ClientGone() from exc
        self.state.add_bytes(len(data))

    def _header_bytes(self, status, ctype, headers, length, chunked):
        self.sent_status = status
        self._finish_log()
        self.log_request(status)
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status")),
                 "Server: %s" % self.server_version, "Date: %s" % self.date_time_string()]
        if ctype:
            lines.append("Content-Type: %s" % ctype)
        lines.extend("%s: %s" % kv for kv in headers)
        if chunked:
            lines.append("Transfer-Encoding: chunked")
        else:
            lines.append("Content-Length: %d" % length)
        if self.close_connection:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def send_plain(self, status, body, ctype, headers=()):
        """Send a complete response; data responses go through their transport faults."""
        if isinstance(body, Stream):
            length, chunks = body.length, body.chunks
        else:
            length, chunks = len(body), iter((body,))
        tr = self.transport
        chunked = bool(tr.get("chunked")) or length is None
        stall = tr.get("stall")
        if stall and int(stall.get("after_bytes", 0)) < 0:
            self._stall(float(stall.get("seconds", 3600)))
            stall = None
        if not stall and not tr.get("drip") and not tr.get("truncate") and not chunked \
                and isinstance(body, bytes):
            self._write(self._header_bytes(status, ctype, headers, length, False) + body)
            return
        self._write(self._header_bytes(status, ctype, headers, length or 0, chunked))
        self._write_body(chunks, length, chunked, stall, tr.get("drip"), tr.get("truncate"))

    def _write_body(self, chunks, length, chunked, stall, drip, truncate):
        """Send the body, honouring stall, drip and truncate faults."""
        limit = (length or 0) // 2 if truncate else None
        stall_at = None
        if stall:
            stall_at = max(0, int(stall.get("after_bytes", 0)))
            if length is not None:
                stall_at = min(stall_at, max(0, length - 1))
        rate = float(drip.get("bytes_per_s", 1000)) if drip else 0
        piece = max(1, int(rate // 20)) if rate else 0
        sent = 0
        if stall_at == 0:
            self._stall(float(stall.get("seconds", 3600)))
            stall_at = None
        for chunk in chunks:
            view = memoryview(chunk)
            while len(view):
                n = len(view)
                if limit is not None:
                    n = min(n, limit - sent)
                    if n <= 0:
                        return self._truncated()
                if stall_at is not None:
                    n = min(n, stall_at - sent)
                if piece:
                    n = min(n, piece)
                self._emit(view[:n], chunked)
                sent += n
                view = view[n:]
                if stall_at is not None and sent == stall_at:
                    self._stall(float(stall.get("seconds", 3600)))
                    stall_at = None
                if piece:
                    self._pause(n / rate)
        if limit is not None:
            return self._truncated()
        if chunked:
            self._write(b"0\r\n\r\n")

    def _emit(self, data, chunked):
        if chunked:
            self._write(b"%x\r\n" % len(data) + bytes(data) + b"\r\n")
        else:
            self._write(bytes(data))

    def _truncated(self):
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _pause(self, seconds):
        if STOP.wait(seconds):
            raise ClientGone()

    def _stall(self, seconds):
        """Send nothing for `seconds`; end early when the client hangs up."""
        deadline = time.monotonic() + seconds
        watch = True
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if STOP.is_set():
                raise ClientGone()
            if not watch:
                STOP.wait(min(left, 0.2))
                continue
            try:
                ready, _, _ = select.select([self.connection], [], [], min(left, 0.2))
                if ready:
                    if self.connection.recv(1, socket.MSG_PEEK) == b"":
                        raise ClientGone()
                    watch = False   # a pipelined request; stop watching
            except (OSError, ValueError) as exc:
                raise ClientGone() from exc

    # --- control API ----------------------------------------------------

    def send_json(self, status, obj, headers=()):
        self.send_plain(status, dump(obj), JSON_MEDIA, headers)

    def control(self, method, name, body):
        state = self.state
        try:
            req = json.loads(body) if body.strip() else {}
        except ValueError:
            return self.send_json(400, {"error": "malformed JSON"})
        try:
            if method == "GET" and name == "stats":
                with state.lock:
                    out = state.stats.as_json()
                    out.update(next_page=state.next_page, faults=state.faults.cfg)
                out["data"] = state.data_summary()
                return self.send_json(200, out)
            if method == "GET" and name == "faults":
                return self.send_json(200, state.faults.cfg)
            if method != "POST":
                return self.send_json(404, {"error": "unknown control endpoint"})
            if name == "faults":
                state.set_faults(req)
                return self.send_json(200, {"ok": True, "faults": state.faults.cfg})
            if name == "reset":
                state.reset(data=bool(isinstance(req, dict) and req.get("data")))
                return self.send_json(200, {"ok": True})
            if name == "data":
                return self.send_json(200, {"ok": True, "data": state.load_data(req)})
            if name == "bump_versions":
                count = req.get("count", 0) if isinstance(req, dict) else req
                return self.send_json(200, {"ok": True,
                                            "data": state.load_data({"bump_versions": count})})
            if name == "shutdown":
                self.close_connection = True
                self.send_json(200, {"ok": True})
                STOP.set()
                return None
        except (FaultError, TypeError, ValueError) as exc:
            return self.send_json(400, {"error": str(exc)})
        return self.send_json(404, {"error": "unknown control endpoint"})

    # --- routing --------------------------------------------------------

    # --api-roots multi|missing: roots beside api1 that do not have the collection
    OTHER_ROOTS = re.compile(r"^/(api0|api403|api404)/(collections/)?$")
    TAXII_ROUTES = [
        (re.compile(r"^/taxii2/$"), "discovery"),
        (re.compile(r"^/%s/$" % API_ROOT), "root"),
        (re.compile(r"^/%s/collections/$" % API_ROOT), "collections"),
        (re.compile(r"^/%s/collections/([^/]+)/$" % API_ROOT), "collection"),
        (re.compile(r"^/%s/collections/([^/]+)/objects/$" % API_ROOT), "objects"),
    ]
    OTX_PULSES = re.compile(r"^/api/v1/pulses/subscribed/?$")
    OTX_INDICATORS = re.compile(r"^/api/v1/pulses/([0-9a-f]+)/indicators/?$")
    VT_LOOKUP = re.compile(r"^/api/v3/(files|domains|ip_addresses|urls|analyses)/([^/]+)$")
    BUNDLE = re.compile(r"^/bundles/([A-Za-z0-9][A-Za-z0-9._-]*)\.json$")

    def other_root(self, name, collections):
        """The extra API roots of --api-roots: api0 holds another collection,
        api403 refuses its collections, api404 has none."""
        self.state.count("other_root")
        if not collections:
            return self.taxii_json({"title": "Root %s" % name, "versions": [TAXII_MEDIA]})
        if name == "api403":
            return self.taxii_fail(403, "Forbidden", "Not for these credentials")
        if name == "api404":
            return self.taxii_fail(404, "Not Found", "No collections here")
        return self.taxii_json({"collections": [{
            "id": "0b5b8c1e-2f0a-4a8e-9d43-3f7c0d2f0a11", "title": "Community sharing",
            "can_read": True, "can_write": False, "media_types": [STIX_MEDIA]}]})

    def route_get(self):
        path = self.url_path
        m = self.OTHER_ROOTS.match(path)
        if m and self.state.args.api_roots != "one":
            return self.other_root(m.group(1), bool(m.group(2)))
        for pattern, kind in self.TAXII_ROUTES:
            m = pattern.match(path) or pattern.match(path + "/")
            if m:
                if not path.endswith("/"):
                    return self.slash_redirect()
                return self.taxii(kind, m.groups())
        m = self.OTX_PULSES.match(path)
        if m:
            return self.data_request("otx", self.otx_pulses)
        m = self.OTX_INDICATORS.match(path)
        if m:
            return self.data_request("otx_indicators", lambda f: self.otx_indicators(f, m.group(1)))
        m = self.VT_LOOKUP.match(path)
        if m:
            coll, ident = m.group(1), urllib.parse.unquote(m.group(2))
            return self.data_request("vt", lambda f: self.vt_lookup(f, coll, ident))
        m = self.BUNDLE.match(path)
        if m:
            return self.data_request("bundle", lambda f: self.bundle(f, m.group(1)))
        self.state.count("other")
        return self.send_json(404, {"error": "not found", "path": path})

    def slash_redirect(self):
        self.state.count("redirect")
        location = self.state.base_url + self.url_path + "/"
        if self.raw_query:
            location += "?" + self.raw_query
        body = html_error(308, 'Redirecting to <a href="%s">%s</a>.' % (location, location))
        self.send_plain(308, body, HTML_MEDIA, [("Location", location)])

    # --- fault-aware data requests --------------------------------------

    def data_request(self, kind, build):
        """Count, log and answer one data request, applying the faults that fire.

        `build(faults)` answers normally; it may look at envelope faults."""
        state = self.state
        state.count(kind)
        page_no, faults, plan = state.start_data_request()
        self.kind = kind
        entry = {"page": page_no, "t": elapsed(), "faults": sorted(faults)}
        entry.update(self.log_fields(kind))
        self.log_entry = entry
        with state.lock:
            # A reset may swap in new stats while this response still runs:
            # count down on the object that was counted up.
            stats = state.stats
            stats.log(kind, entry)
            stats.in_flight += 1
        try:
            self.transport = {"chunked": plan.get("chunked"), "stall": faults.get("stall"),
                              "drip": faults.get("drip"), "truncate": faults.get("truncate")}
            delay = plan.get("page_delay_ms") or 0
            if delay:
                self._pause(float(delay) / 1000)
            if not self.fault_response(kind, faults):
                build(faults)
        finally:
            with state.lock:
                stats.in_flight -= 1

    def log_fields(self, kind):
        q = self.query
        if kind == "objects":
            return {"added_after": q.get("added_after"), "next": q.get("next"),
                    "limit": q.get("limit"),
                    "match": {k: v for k, v in q.items() if k.startswith("match[")}}
        if kind in ("otx", "otx_indicators"):
            return {"path": self.url_path, "modified_since": q.get("modified_since"),
                    "page_param": q.get("page"), "limit": q.get("limit")}
        return {"path": self.url_path}

    def fault_response(self, kind, faults):
        """Answer with a status/redirect/body fault; False when none applies.
        One replacement per response, first of: status, redirect, html, huge, deep,
        bad_json, wrong_types."""
        if "status" in faults:
            self.status_fault(kind, faults["status"])
        elif "redirect" in faults:
            spec = faults["redirect"]
            code = int(spec.get("code", 302))
            location = spec.get("location", "ftp://127.0.0.1/x")
            self.send_plain(code, html_error(code, "Moved"), HTML_MEDIA, [("Location", location)])
        elif "html" in faults:
            self.send_plain(200, HTML_LOGIN, HTML_MEDIA)
        elif "huge" in faults:
            spec = faults["huge"]
            self.send_plain(200, huge_body(self.frame_kind(kind), int(spec.get("bytes", 64 << 20)),
                                           bool(spec.get("chunked"))), self.media(kind))
        elif "deep" in faults:
            self.send_plain(200, deep_body(self.frame_kind(kind),
                                           int(faults["deep"].get("depth", 100000))),
                            self.media(kind))
        elif "bad_json" in faults:
            self.send_plain(200, bad_json_body(kind), self.media(kind))
        elif "wrong_types" in faults:
            self.send_plain(200, wrong_types_body(self.frame_kind(kind),
                                                  faults["wrong_types"].get("variant")),
                            self.media(kind))
        else:
            return False
        return True

    @staticmethod
    def frame_kind(kind):
        return "otx" if kind == "otx_indicators" else kind

    @staticmethod
    def media(kind):
        return TAXII_MEDIA if kind == "objects" else JSON_MEDIA

    def status_fault(self, kind, spec):
        code = int(spec.get("code", 503))
        headers = []
        if spec.get("retry_after") is not None:
            headers.append(("Retry-After", str(spec["retry_after"])))
        as_html = bool(spec.get("html")) or (code == 500 and spec.get("_n", 1) % 2 == 0)
        if kind == "objects" and code == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="taxii"'))
            as_html = True
        if kind == "bundle":
            as_html = True
        if as_html:
            return self.send_plain(code, html_error(code, "Injected fault"), HTML_MEDIA, headers)
        if kind == "objects":
            body = taxii_error(code, REASONS.get(code, "Error"), "Injected fault")
            return self.send_plain(code, body, TAXII_MEDIA, headers)
        if kind == "vt":
            return self.send_plain(code, vt_error(code, "Injected fault"), JSON_MEDIA, headers)
        detail = {401: "Authentication required", 403: "Authentication required",
                  404: "Not found.", 429: "Request was throttled."}.get(code, "Injected fault")
        return self.send_plain(code, dump({"detail": detail}), JSON_MEDIA, headers)

    # --- TAXII ----------------------------------------------------------

    def taxii(self, kind, groups):
        if kind == "objects":
            return self.data_request("objects", lambda f: self.taxii_guarded(kind, groups, f))
        self.state.count(kind)
        return self.taxii_guarded(kind, groups, {})

    def taxii_guarded(self, kind, groups, faults):
        """Auth and Accept checks, then the TAXII endpoint."""
        args = self.state.args
        if args.username is not None and not self.basic_ok(args.username, args.password or ""):
            body = html_error(401, "This server could not verify that you are authorized.")
            return self.send_plain(401, body, HTML_MEDIA,
                                   [("WWW-Authenticate", 'Basic realm="taxii"')])
        if not self.accept_ok():
            return self.taxii_fail(406, "Not Acceptable",
                                   "Send Accept: %s" % TAXII_MEDIA)
        base = self.state.base_url
        if kind == "discovery":
            roots, default = ["%s/%s/" % (base, API_ROOT)], "%s/%s/" % (base, API_ROOT)
            if args.api_roots != "one":
                # the collection's root listed last, after a root with another
                # collection (the default), one refusing, one empty and one
                # that nothing answers (port 9 on loopback)
                default = "%s/api0/" % base
                roots = [default, "%s/api403/" % base, "%s/api404/" % base,
                         "http://127.0.0.1:9/dead/"]
                if args.api_roots == "multi":
                    roots.append("%s/%s/" % (base, API_ROOT))
            return self.taxii_json({"title": "threatfeed synthetic TAXII 2.1 server",
                                    "description": "Loopback test upstream",
                                    "contact": "threatfeed tests",
                                    "default": default, "api_roots": roots})
        if kind == "root":
            return self.taxii_json({"title": "Synthetic API root",
                                    "description": "Synthetic STIX 2.1 data",
                                    "versions": [TAXII_MEDIA],
                                    "max_content_length": 104857600})
        if kind == "collections":
            return self.taxii_json({"collections": [self.collection_info(COLLECTION_ID),
                                                    self.collection_info(WRITE_ONLY_COLLECTION_ID)]})
        info = self.collection_info(groups[0])
        if info is None:
            return self.taxii_fail(404, "Collection not found",
                                   "No collection with id %s" % groups[0])
        if kind == "collection":
            return self.taxii_json(info)
        if not info["can_read"]:
            return self.taxii_fail(403, "Forbidden", "This collection is not readable")
        return self.taxii_objects(faults)

    @staticmethod
    def collection_info(cid):
        if cid == COLLECTION_ID:
            return {"id": COLLECTION_ID, "title": "Synthetic indicators",
                    "description": "Deterministic synthetic STIX 2.1 objects",
                    "can_read": True, "can_write": False, "media_types": [STIX_MEDIA]}
        if cid == WRITE_ONLY_COLLECTION_ID:
            return {"id": WRITE_ONLY_COLLECTION_ID, "title": "Write-only drop box",
                    "description": "Not readable", "can_read": False, "can_write": True,
                    "media_types": [STIX_MEDIA]}
        return None

    def basic_ok(self, user, password):
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(given, ("%s:%s" % (user, password)).encode())

    def accept_ok(self):
        for part in self.headers.get("Accept", "").split(","):
            if part.replace(" ", "").lower() == TAXII_MEDIA:
                return True
        return False

    def taxii_json(self, obj, headers=()):
        self.send_plain(200, dump(obj), TAXII_MEDIA, headers)

    def taxii_fail(self, status, title, description):
        self.send_plain(status, taxii_error(status, title, description), TAXII_MEDIA)

    def taxii_objects(self, faults):
        """The objects endpoint: filters, paging and envelope faults."""
        q, state = self.query, self.state
        args = state.args
        if "next" in q and "limit" not in q:
            return self.taxii_fail(500, "Internal Server Error",
                                   "'limit' is required together with 'next'")
        try:
            limit = int(q.get("limit", args.page_size))
            if limit <= 0:
                raise ValueError
        except ValueError:
            return self.taxii_fail(400, "Bad limit", "limit must be a positive integer")
        limit = min(limit, int(state.faults.get("max_page_size") or args.max_page_size))
        after = -1
        if q.get("added_after"):
            after = parse_ts(q["added_after"])
            if after is None:
                return self.taxii_fail(400, "Bad added_after",
                                       "added_after must be an RFC 3339 timestamp")
        data = state.stix
        view = data.view(self.csv("match[version]") or ("last",), self.csv("match[type]"),
                         self.csv("match[id]"), self.csv("match[spec_version]"))
        fhash = filter_hash(q)
        chain_start, first_after = time.time(), after
        session = None
        if args.session_next and "next" in q:
            # the reference server: one token for the whole paging session,
            # the server remembering where the session stands
            with state.lock:
                session = q["next"] if q["next"] in state.sessions else None
            if session is None:
                return self.taxii_fail(400, "Bad next", "unknown paging session")
            with state.lock:
                after = state.sessions[session]
        elif "next" in q:
            token = read_token(q["next"])
            if token is None or token[1] != fhash:
                return self.taxii_fail(400, "Bad next", "'next' is not valid for this query")
            ttl = state.faults.get("next_ttl_s")
            if ttl is not None and time.time() - token[2] > float(ttl):
                return self.taxii_fail(400, "Bad next", "'next' has expired")
            after, chain_start = token[0], token[2]
        if "endless_more" in faults:
            token = make_token(after, fhash, chain_start, state.new_nonce())
            return self.taxii_json({"more": True, "next": token, "objects": []})
        start = bisect.bisect_right(view.keys, after)
        many = "many" in faults
        count = int(faults["many"].get("objects", 10000)) if many else limit
        bodies, added = self.page_slice(data, view, start, count, pad=many)
        end = min(start + count, len(view.keys))
        more = end < len(view.keys)
        next_after = view.keys[end - 1] if end > start else after
        if "loop_next" in faults and "next" in q and after != first_after:
            more, next_after = True, first_after   # back to the chain's first page
        self.log_entry["count"] = len(bodies)
        if not bodies:
            return self.send_plain(200, b"{}", TAXII_MEDIA)
        head = b'{"more":false,"objects":['
        if more and "no_next" in faults:
            head = b'{"more":true,"objects":['
        elif more and args.session_next:
            if session is None:
                session = "session-%d" % state.new_nonce()
            with state.lock:
                if not ("loop_next" in faults and q.get("next")):   # a stuck session loops
                    state.sessions[session] = next_after
                else:
                    state.sessions[session] = after
            head = b'{"more":true,"next":"%s","objects":[' % session.encode()
        elif more:
            head = b'{"more":true,"next":"%s","objects":[' % \
                make_token(next_after, fhash, chain_start).encode()
        body = head + b",".join(bodies) + b"]}"
        if "invalid_utf8" in faults:
            body = invalid_utf8(body)
        self.send_plain(200, body, TAXII_MEDIA, [("X-TAXII-Date-Added-First", added[0]),
                                                 ("X-TAXII-Date-Added-Last", added[-1])])

    @staticmethod
    def page_slice(data, view, start, count, pad=False):
        """(bodies, dates added) of up to count objects from start; with pad (a `many`
        page) objects past the end of the view are made up, with fresh ids."""
        bodies = view.bodies[start:start + count]
        added = view.added[start:start + count]
        key = view.keys[start + len(bodies) - 1] if bodies else BASE_US
        for k in range(count - len(bodies) if pad else 0):
            key += STEP_US
            bodies.append(dump(stix_object(data.seed, data.count + 1_000_000 + k)))
            added.append(fmt_us(key))
        return bodies, added

    def csv(self, name):
        value = self.query.get(name)
        if not value:
            return None
        return tuple(sorted(v.strip() for v in value.split(",") if v.strip())) or None

    # --- OTX ------------------------------------------------------------

    def otx_key_ok(self):
        key = self.headers.get("X-OTX-API-KEY", "")
        if not key.strip() or key == "bad":
            self.send_plain(403, dump({"detail": "Authentication required"}), JSON_MEDIA)
            return False
        return True

    def otx_page_params(self):
        """(limit, page) or None after answering 400."""
        try:
            cap = int(self.state.faults.get("max_page_size") or self.state.args.max_page_size)
            limit = min(int(self.query.get("limit") or 50), cap)
            page = int(self.query.get("page") or 1)
            if limit <= 0 or page <= 0:
                raise ValueError
        except ValueError:
            self.send_plain(400, dump({"detail": "Invalid page or limit."}), JSON_MEDIA)
            return None
        return limit, page

    def otx_url(self, page):
        q = dict(self.query, page=str(page))
        return "%s%s?%s" % (self.state.base_url, self.url_path, urllib.parse.urlencode(q))

    def otx_envelope(self, count, page, has_next, items, faults):
        next_url = self.otx_url(page + 1) if has_next else None
        if "loop_next" in faults and page >= 2:
            next_url = self.otx_url(1)
        if "endless_more" in faults:
            items, next_url = [], self.otx_url(page + 1)
        prev_url = self.otx_url(page - 1) if page > 1 else None
        self.log_entry["count"] = len(items)
        body = b'{"count":%d,"next":%s,"previous":%s,"results":[' % (
            count, dump(next_url), dump(prev_url)) + b",".join(items) + b"]}"
        if "invalid_utf8" in faults:
            body = invalid_utf8(body)
        self.send_plain(200, body, JSON_MEDIA)

    def otx_pulses(self, faults):
        if not self.otx_key_ok():
            return
        params = self.otx_page_params()
        if params is None:
            return
        limit, page = params
        data = self.state.otx
        start = 0
        since = self.query.get("modified_since")
        if since:
            since_us = parse_ts(since.replace(" ", "+"), require_zone=False)
            if since_us is None:
                return self.send_plain(400, dump({"detail": "Invalid modified_since."}),
                                       JSON_MEDIA)
            start = bisect.bisect_right(data.keys, since_us)
        total = len(data.keys) - start
        first = start + (page - 1) * limit
        count = int(faults["many"].get("objects", 10000)) if "many" in faults else limit
        items = data.bodies[first:first + count]
        for k in range(count - len(items) if "many" in faults else 0):
            items.append(dump(otx_pulse(data.seed, data.count + 1_000_000 + k)[1]))
        self.otx_envelope(total, page, first + limit < len(data.keys), items, faults)

    def otx_indicators(self, faults, pulse_id):
        if not self.otx_key_ok():
            return
        params = self.otx_page_params()
        if params is None:
            return
        limit, page = params
        items = self.state.otx.by_id.get(pulse_id)
        if items is None:
            return self.send_plain(404, dump({"detail": "Not found."}), JSON_MEDIA)
        first = (page - 1) * limit
        self.otx_envelope(len(items), page, first + limit < len(items),
                          items[first:first + limit], faults)

    # --- VirusTotal -----------------------------------------------------

    def vt_lookup(self, faults, coll, ident):
        state = self.state
        key = self.headers.get("x-apikey", "")
        if not key.strip():
            return self.send_plain(401, vt_error(401, "X-Apikey header is missing",
                                                 "AuthenticationRequiredError"), JSON_MEDIA)
        if key == "bad":
            recorded = state.vt_recorded.get(("", "wrong_key"))
            body = recorded[1] if recorded else vt_error(401, "Wrong API key")
            return self.send_plain(401, body, JSON_MEDIA)
        rpm = state.faults.get("vt_rpm", state.args.vt_rpm)
        wait = state.vt_window.take(int(rpm or 0))
        if wait is not None:
            return self.send_plain(429, vt_error(429, "Quota exceeded: %s requests per minute"
                                                 % rpm), JSON_MEDIA, [("Retry-After", str(wait))])
        norm = vt_norm(coll, ident)
        recorded = state.vt_recorded.get((coll, norm))
        if recorded:
            return self.send_plain(recorded[0], self.maybe_utf8(recorded[1], faults), JSON_MEDIA)
        if norm.startswith("0000"):
            return self.send_plain(404, vt_error(404, '%s "%s" not found' % (
                VT_TYPES[coll].replace("_", " ").capitalize(), ident)), JSON_MEDIA)
        problem = vt_validate(coll, norm)
        if problem:
            return self.send_plain(400, vt_error(400, problem, "InvalidArgumentError"), JSON_MEDIA)
        report = dump(vt_report(state.base_url, coll, norm))
        self.send_plain(200, self.maybe_utf8(report, faults), JSON_MEDIA)

    @staticmethod
    def maybe_utf8(body, faults):
        return invalid_utf8(body) if "invalid_utf8" in faults else body

    # --- bundles --------------------------------------------------------

    def bundle(self, faults, name):
        state = self.state
        if name == "generated":
            body = state.stix.bundle()
            if "many" in faults:
                count = int(faults["many"].get("objects", 10000))
                view = state.stix.view(("last",), None, None, None)
                bodies, _ = self.page_slice(state.stix, view, 0, count, pad=True)
                body = LIST_FRAME["bundle"][0] + b",".join(bodies) + LIST_FRAME["bundle"][1]
        else:
            body = self.bundle_file(name)
            if body is None:
                return self.send_plain(404, html_error(404, "No such bundle"), HTML_MEDIA)
        self.send_plain(200, self.maybe_utf8(body, faults), JSON_MEDIA)

    def bundle_file(self, name):
        path = os.path.join(self.state.args.bundle_dir, name + ".json")
        try:
            stat = os.stat(path)
        except OSError:
            return None
        cache = self.state.bundle_cache
        cached = cache.get(path)
        if cached and cached[0] == (stat.st_mtime_ns, stat.st_size):
            return cached[1]
        with open(path, "rb") as f:
            body = f.read()
        cache[path] = ((stat.st_mtime_ns, stat.st_size), body)
        return body


# ---------------------------------------------------------------------------
# Server lifecycle
# ---------------------------------------------------------------------------

class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    tls = None   # an ssl.SSLContext with --tls-cert: every connection is TLS

    def finish_request(self, request, client_address):
        # The handshake runs in the request's own thread, so a client that
        # never completes it stalls only itself.
        if self.tls is None:
            return super().finish_request(request, client_address)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return   # refused (no or a wrong client certificate): the client sees why
        try:
            super().finish_request(conn, client_address)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, socket.timeout, ClientGone)):
            return
        super().handle_error(request, client_address)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Fault-injecting upstream feed server "
                                "(TAXII 2.1, OTX, VirusTotal, STIX bundles) on loopback.",
                                epilog="See the module docstring for endpoints and faults.")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--port-file", help="write the port here once listening")
    p.add_argument("--objects", type=int, help="synthetic STIX objects (default 1000)")
    p.add_argument("--page-size", type=int, help="default TAXII limit (default 100)")
    p.add_argument("--max-page-size", type=int, default=1000, help="cap on limit")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--page-delay-ms", type=int, help="delay before each data page")
    p.add_argument("--username", help="require HTTP Basic on TAXII endpoints")
    p.add_argument("--api-roots", choices=("one", "multi", "missing"), default="one",
                   help="multi: discovery lists other roots first and the collection's "
                        "root last; missing: the same without the collection's root")
    p.add_argument("--session-next", action="store_true",
                   help="one next token per paging session, repeated on every page "
                        "(the OASIS reference server's way)")
    p.add_argument("--password")
    p.add_argument("--demo", action="store_true",
                   help="5000 objects, pages of 100, 400 ms per page (~20 s run)")
    p.add_argument("--lifetime-s", type=float, default=3600)
    p.add_argument("--quiet", action="store_true", help="no request log")
    p.add_argument("--bundle-dir", default=DEFAULT_BUNDLE_DIR)
    p.add_argument("--otx-pulses", type=int, default=50)
    p.add_argument("--vt-rpm", type=int, default=0, help="VT lookups per minute (0: unlimited)")
    p.add_argument("--vt-dir", default=DEFAULT_VT_DIR, help="recorded VT responses")
    p.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate (chain)")
    p.add_argument("--tls-key", help="the PEM key of --tls-cert")
    p.add_argument("--tls-client-ca", help="demand a client certificate issued by this PEM CA")
    args = p.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if args.tls_client_ca and not args.tls_cert:
        p.error("--tls-client-ca needs --tls-cert")
    demo = args.demo
    if args.objects is None:
        args.objects = 5000 if demo else 1000
    if args.page_size is None:
        args.page_size = 100
    if args.page_delay_ms is None:
        args.page_delay_ms = 400 if demo else 0
    if args.host not in ("127.0.0.1", "localhost"):
        p.error("--host must be 127.0.0.1: this server never listens beyond loopback")
    args.host = "127.0.0.1"
    if (args.username is None) != (args.password is None):
        p.error("--username and --password go together")
    return args


def write_port_file(path, port):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write("%d\n" % port)
    os.replace(tmp, path)


def remove_port_file(path, port):
    try:
        with open(path) as f:
            if f.read().strip() == str(port):
                os.unlink(path)
    except OSError:
        pass


def wait_for_stop(parent, lifetime_s):
    """Block until a signal, the lifetime, the parent's death or /_ctl/shutdown."""
    deadline = time.monotonic() + lifetime_s
    while not STOP.wait(0.5):
        if os.getppid() != parent or time.monotonic() >= deadline:
            break
    STOP.set()


def main(argv=None):
    parent = os.getppid()          # before the (possibly slow) data generation
    args = parse_args(argv)
    state = State(args)
    server = Server((args.host, args.port), Handler)
    server.state = state
    if args.tls_cert:
        server.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.tls.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            server.tls.verify_mode = ssl.CERT_REQUIRED
            server.tls.load_verify_locations(args.tls_client_ca)
    state.port = server.server_address[1]
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: STOP.set())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    if args.port_file:
        write_port_file(args.port_file, state.port)
    print("listening on %s" % state.base_url, flush=True)
    try:
        wait_for_stop(parent, args.lifetime_s)
    finally:
        server.shutdown()
        server.server_close()
        if args.port_file:
            remove_port_file(args.port_file, state.port)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)   # skip freeing a large data set and joining stalled daemon threads
