#!/usr/bin/env bash
# Builds target/debian/streamml-sensor_<version>_<arch>.deb with dpkg-deb: the binary, the
# systemd unit, the default config (/etc/streamml/sensor.toml, a conffile), the README,
# and the pktgen scripts for sizing a box.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
VERSION=$(awk -F'"' '/^version/ {print $2; exit}' Cargo.toml)
ARCH=$(dpkg --print-architecture)
ROOT=$(mktemp -d)
chmod 0755 "$ROOT"
trap 'rm -rf "$ROOT"' EXIT
install -D -m 0755 target/release/streamml-sensor "$ROOT/usr/bin/streamml-sensor"
install -D -m 0644 packaging/systemd/streamml-sensor.service "$ROOT/lib/systemd/system/streamml-sensor.service"
install -D -m 0644 config/sensor.toml "$ROOT/etc/streamml/sensor.toml"
install -D -m 0644 packaging/debian/default "$ROOT/etc/default/streamml-sensor"
install -D -m 0644 README.md "$ROOT/usr/share/doc/streamml-sensor/README.md"
if [ -d packaging/pktgen ]; then
  mkdir -p "$ROOT/usr/share/streamml-sensor/pktgen"
  cp -r packaging/pktgen/. "$ROOT/usr/share/streamml-sensor/pktgen/"
fi
mkdir -p "$ROOT/DEBIAN"
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" packaging/debian/control.in > "$ROOT/DEBIAN/control"
printf '/etc/streamml/sensor.toml\n/etc/default/streamml-sensor\n' > "$ROOT/DEBIAN/conffiles"
install -m 0755 packaging/debian/postinst "$ROOT/DEBIAN/postinst"
install -m 0755 packaging/debian/prerm "$ROOT/DEBIAN/prerm"
mkdir -p target/debian
OUT="target/debian/streamml-sensor_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$ROOT" "$OUT" >/dev/null
echo "$OUT"
