#!/usr/bin/env bash
# Installs every build, test and tool dependency of camserve from Debian 12
# packages (and npm for browser-test tooling, once the UI lands).
# Idempotent: when everything is present it only runs dpkg-query and exits.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git
  libdnnl-dev                                  # CPU kernels (oneDNN)
  libprotobuf-c-dev protobuf-c-compiler libonnx-dev   # ONNX parsing
  libcmocka-dev                                # unit tests
  libturbojpeg0-dev libjpeg62-turbo-dev libspng-dev libwebp-dev  # image codecs
  libjansson-dev libssl-dev                    # JSON, SHA-256
  libmicrohttpd-dev libcurl4-openssl-dev       # HTTP server, model downloads
  clang libclang-rt-14-dev                     # libFuzzer + sanitizers
  valgrind
)
# Only tools/ and bench/ use these (golden data, the PyTorch peer), never
# the binary. CAMSERVE_NO_PYTHON=1 skips them on a build-only machine.
if [ "${CAMSERVE_NO_PYTHON:-0}" != 1 ]; then
  PKGS+=(python3-torch python3-torchvision python3-onnx python3-numpy python3-pil darknet)
fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
