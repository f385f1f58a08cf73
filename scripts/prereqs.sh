#!/usr/bin/env bash
# Installs what building shredstore needs beyond Rust: a C++ compiler and
# libclang (RocksDB's C++ and its bindgen bindings). Uses apt-get when it is
# available and we are root (or have sudo); otherwise prints the exact line.
set -euo pipefail

missing=()
command -v c++ >/dev/null 2>&1 || missing+=(g++)
have_libclang() {
  [ -n "${LIBCLANG_PATH:-}" ] && ls "$LIBCLANG_PATH"/libclang*.so* >/dev/null 2>&1 && return 0
  ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' && return 0
  ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* \
     /usr/lib/aarch64-linux-gnu/libclang*.so* >/dev/null 2>&1
}
have_libclang || missing+=(libclang-dev)

[ ${#missing[@]} -eq 0 ] && exit 0

line="apt-get update && apt-get install -y ${missing[*]}"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"
  else
    echo "shredstore needs: ${missing[*]}. Install them with:" >&2
    echo "  sudo sh -c '$line'" >&2
    exit 1
  fi
  echo "==> installing build prerequisites: ${missing[*]}" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "shredstore needs a C++ compiler and libclang (missing: ${missing[*]})." >&2
  echo "On Debian/Ubuntu:  sudo sh -c '$line'" >&2
  echo "On Fedora:         sudo dnf install -y gcc-c++ clang-devel" >&2
  echo "On macOS:          xcode-select --install" >&2
  exit 1
fi
