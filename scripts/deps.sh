#!/usr/bin/env bash
# Installs everything the sensor, its tests and its benchmarks need on Debian 12 with a
# Rust toolchain already present. Idempotent: a second run installs nothing.
set -euo pipefail

APT_PKGS=(clang llvm libelf-dev zlib1g-dev pkg-config m4 libpcap-dev make
          tshark tcpdump softflowd zstd iproute2 ethtool tcpreplay linux-perf
          python3-venv bpftool jq
          lintian logrotate man-db strace
          nfdump prometheus nats-server)  # fleet sinks: tests/fleet.rs runs the real collectors
VENV=${STREAMML_VENV:-/opt/streamml-venv}
PY_PKGS=(nfstream==6.6.0 river==0.26.1 numpy)

need_apt=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if ((${#need_apt[@]})); then
  echo "deps: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ "${STREAMML_SKIP_VENV:-0}" != 1 ]; then
  if ! "$VENV/bin/python" -c "import nfstream, river" 2>/dev/null; then
    echo "deps: creating $VENV with ${PY_PKGS[*]}" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "${PY_PKGS[@]}"
  fi
fi

# rustfmt and clippy for the test script's checks (components of the one toolchain).
for c in rustfmt clippy; do
  if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
    echo "deps: adding the $c component" >&2
    rustup component add "$c"
  fi
done
