#!/usr/bin/env bash
# Installs every build, test and tool dependency of camserve from Debian 12
# packages (and npm for browser-test tooling, once the UI lands).
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libdnnl-dev                                  # CPU kernels (oneDNN)
  ocl-icd-opencl-dev                           # only a Recommends of libdnnl-dev, but its dnnl-config.cmake fails without OpenCL
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev   # ONNX parsing
  libcmocka-dev                                # unit tests
  libturbojpeg0-dev libjpeg62-turbo-dev libspng-dev libdeflate-dev libwebp-dev  # image codecs (libdeflate: PNG output)
  zlib1g-dev                                   # PNG output split over threads (all parts but the last)
  libjansson-dev libssl-dev libxxhash-dev      # JSON, SHA-256, prepared-model checksums
  libmicrohttpd-dev libcurl4-openssl-dev       # HTTP server, model downloads
  liblmdb-dev libhiredis-dev                   # result caches: disk, replicas
  redis-server nginx-light                     # the scale-out test's Redis and load balancer
  clang libclang-rt-14-dev                     # libFuzzer + sanitizers
  valgrind
  curl jq                                      # the server's integration tests
  chromium                                     # the web UI's browser test (tests/e2e)
)
# Only tools/ and bench/ use these (golden data, the PyTorch peer), never
# the binary. CAMSERVE_NO_PYTHON=1 skips them on a build-only machine.
if [ "${CAMSERVE_NO_PYTHON:-0}" != 1 ]; then
  PKGS+=(python3-torch python3-torchvision python3-onnx python3-numpy python3-pil darknet)
  # tools/train_default_model.py: emoji objects (CBDT colour font) and
  # wallpaper backgrounds; tests/cli/pull.sh serves files with python3
  PKGS+=(fonts-noto-color-emoji desktop-base python3)
fi

root=$(cd "$(dirname "$0")/.." && pwd)
# npm: the browser-test driver (playwright-core, using Debian's chromium),
# installed into tests/e2e/node_modules.  Not a failure when offline: the
# UI test then skips with a message.
npm_deps() {
  if [ -f "$root/tests/e2e/package.json" ] && [ ! -d "$root/tests/e2e/node_modules/playwright-core" ] &&
     command -v npm >/dev/null 2>&1; then
    echo "install-deps: npm install --prefix tests/e2e" >&2
    npm install --prefix "$root/tests/e2e" --no-audit --no-fund --silent >&2 ||
      echo "install-deps: npm install failed; the UI test will skip" >&2
  fi
}

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  npm_deps
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_deps
