#!/usr/bin/env bash
# Builds $BUILD/threatfeed_$VERSION_$ARCH.deb from the release binaries in
# $BUILD/ (`make all`), www/, deploy/, man/ and packaging/debian/, with
# dpkg-deb from a staging directory; then runs lintian on it.
# Usage (through `make deb`): BUILD=build VERSION=x.y.z [LINTIAN=0] scripts/mkdeb.sh
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
VERSION=${VERSION:-$(cat VERSION)}
ARCH=$(dpkg --print-architecture)
PKG=threatfeed
OUT="$BUILD/${PKG}_${VERSION}_${ARCH}.deb"
# dpkg-shlibdeps wants the layout of a source package: debian/control and
# the package's files under debian/<package>/.
WORK="$BUILD/deb"
ROOT="$WORK/debian/$PKG"
# Same input, same package: every file's time is the last commit's.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || stat -c %Y VERSION)}
export SOURCE_DATE_EPOCH

for b in threatfeed threatfeed-worker threatfeed.fcgi; do
  [ -x "$BUILD/$b" ] || { echo "mkdeb: $BUILD/$b is missing (make all)" >&2; exit 1; }
done

rm -rf "$WORK"
mkdir -p "$ROOT/DEBIAN"

# ---- files ---------------------------------------------------------------
inst() { # mode src dst
  install -D -m "$1" "$2" "$ROOT/$3"
}
strip_bin() { # what dh_strip does to an executable (no -dbgsym package here)
  strip --remove-section=.comment --remove-section=.note "$1"
}

inst 0755 "$BUILD/threatfeed" usr/bin/threatfeed
inst 0755 "$BUILD/threatfeed-worker" usr/bin/threatfeed-worker
inst 0755 "$BUILD/threatfeed.fcgi" usr/lib/threatfeed/threatfeed.fcgi
strip_bin "$ROOT/usr/bin/threatfeed"
strip_bin "$ROOT/usr/bin/threatfeed-worker"
strip_bin "$ROOT/usr/lib/threatfeed/threatfeed.fcgi"

for f in www/*; do inst 0644 "$f" "usr/share/threatfeed/$f"; done

for m in man/*.[0-9]; do
  sec=${m##*.}
  inst 0644 "$m" "usr/share/man/man$sec/$(basename "$m")"
  gzip -9n "$ROOT/usr/share/man/man$sec/$(basename "$m")"
done

# The deploy examples, as `make install` ships them (they name /usr/local;
# the package's own units below name /usr). Documentation is not executable.
DOC=usr/share/doc/$PKG
while IFS= read -r -d '' f; do inst 0644 "$f" "$DOC/$f"; done < <(find deploy -type f -print0)
inst 0644 README.md "$DOC/README.md"
{ cat packaging/debian/copyright.in
  sed -n '/^Permission/,$p' LICENSE | sed 's/^$/./; s/^/ /'
} >"$WORK/copyright"
inst 0644 "$WORK/copyright" "$DOC/copyright"
# A native package's changelog: this version, built from this commit.
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
{ echo "$PKG ($VERSION) unstable; urgency=medium"
  echo
  echo "  * Built from commit $commit; see README.md for what this version does."
  echo
  echo " -- The threatfeed authors <threatfeed@example.org>  $(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} >"$WORK/changelog"
inst 0644 "$WORK/changelog" "$DOC/changelog"
gzip -9n "$ROOT/$DOC/changelog"

# The config (a conffile: dpkg keeps the administrator's edits).
inst 0644 packaging/debian/threatfeed.conf etc/threatfeed/threatfeed.conf

# The systemd units: deploy/systemd/ turned into the package's layout —
# binaries under /usr, the `threatfeed` user (the socket stays connectable
# by the web server's group www-data), and the package's config file.
for u in deploy/systemd/*.service deploy/systemd/*.socket deploy/systemd/*.timer; do
  inst 0644 "$u" "lib/systemd/system/$(basename "$u")"
  sed -i -e 's|/usr/local/|/usr/|g' \
         -e 's|^User=www-data$|User=threatfeed|' \
         -e 's|^Group=www-data$|Group=threatfeed|' \
         -e 's|^SocketUser=www-data$|SocketUser=threatfeed|' \
         -e 's|(group www-data)|(group threatfeed)|' \
         -e 's|^# Environment=THREATFEED_CONF=|Environment=THREATFEED_CONF=|' \
         "$ROOT/lib/systemd/system/$(basename "$u")"
done
if grep -l 'www-data' "$ROOT"/lib/systemd/system/*.service; then
  echo "mkdeb: a packaged service still runs as www-data" >&2; exit 1
fi

# ---- control ---------------------------------------------------------------
for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$ROOT/DEBIAN/$s"; done
echo /etc/threatfeed/threatfeed.conf >"$ROOT/DEBIAN/conffiles"
chmod 0644 "$ROOT/DEBIAN/conffiles"

printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$WORK/debian/control"
depends=$(cd "$WORK" && dpkg-shlibdeps -O \
            -e"debian/$PKG/usr/bin/threatfeed" -e"debian/$PKG/usr/bin/threatfeed-worker" \
            -e"debian/$PKG/usr/lib/threatfeed/threatfeed.fcgi" | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "mkdeb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
   xargs -0 md5sum) >"$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s|@VERSION@|$VERSION|" -e "s|@ARCH@|$ARCH|" -e "s|@SIZE@|$size|" \
    -e "s|@DEPENDS@|$depends|" packaging/debian/control.in >"$ROOT/DEBIAN/control"

find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
rm -f "$OUT"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$OUT" >/dev/null
echo "mkdeb: $OUT"

# lintian as the last word: errors fail the build, warnings are shown.
# LINTIAN=0 skips it (tests/integration/test_deb.py runs it itself).
if [ "${LINTIAN:-1}" = 0 ]; then
  :
elif command -v lintian >/dev/null; then
  report=$(lintian "$OUT" 2>&1 | grep -v "running with root privileges") || true
  [ -z "$report" ] || echo "$report"
  if grep -q '^E:' <<<"$report"; then echo "mkdeb: lintian reports errors" >&2; exit 1; fi
else
  echo "mkdeb: lintian is not installed (scripts/deps.sh deb); not checked" >&2
fi
