#!/usr/bin/env bash
# Sets up l7scope on this Debian/Ubuntu machine (idempotent), then runs what you ask:
#   deploy/setup.sh run [l7scope run options]   live table of this machine's traffic (with a demo workload)
#   deploy/setup.sh test [pytest options]       everything the tests need, then the whole test suite in
#                                               two lanes: the fast one (ruff, mypy, import contracts,
#                                               unit tests: `-m unit`) fails early, then the rest
#                                               (`-m "not unit"`: kernel, Kafka, root); the options go
#                                               to both. L7SCOPE_LANE=fast (or full) runs one lane only.
#   deploy/setup.sh                             set up only
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
mode=${1:-setup}
[ $# -gt 0 ] && shift
cache=${L7SCOPE_CACHE:-/var/cache/l7scope}
venv=$here/.venv

fail() { echo "setup: $*" >&2; exit 1; }
say() { echo "setup: $*" >&2; }

[ "$(id -u)" = 0 ] || fail "run as root (sudo $0 $mode): loading eBPF programs needs it"
command -v apt-get >/dev/null || fail "this script needs a Debian or Ubuntu machine (apt-get)"
case "$mode" in setup | run | test) ;; *) fail "unknown mode '$mode': use run, test, or nothing" ;; esac

# -- system packages ---------------------------------------------------------------------------
runtime=(python3 python3-venv python3-bpfcc ca-certificates iproute2 graphviz)
testing=(curl nginx mariadb-server postgresql redis-server redis-tools tshark tcpdump wrk openjdk-17-jdk-headless
         nodejs maven
         prometheus prometheus-alertmanager librsvg2-bin tmux procps util-linux)
want=("${runtime[@]}")
[ "$mode" = test ] && want+=("${testing[@]}")
# Go builds the crypto/tls test peers (tests/probes/go_tls_peer); any Go >= 1.17 will do, a newer one
# installed outside Debian (/usr/local/go) is used as it is.
if [ "$mode" = test ] && ! command -v go >/dev/null && [ ! -x /usr/local/go/bin/go ]; then
  want+=(golang-go)
fi
command -v bpftool >/dev/null || want+=(bpftool)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    # Ubuntu ships bpftool in linux-tools; try it before giving up.
    apt-get install -y -qq --no-install-recommends "${missing[@]/bpftool/linux-tools-common}" >/dev/null \
      || fail "apt-get could not install: ${missing[*]}"
  fi
fi
command -v bpftool >/dev/null || fail "bpftool is missing: install the bpftool (or linux-tools) package"

# -- kernel prerequisites ------------------------------------------------------------------------
if [ ! -d /sys/kernel/tracing/events ] && ! mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null; then
  [ -d /sys/kernel/debug/tracing/events ] || fail "tracefs is not mounted and cannot be: mount -t tracefs nodev /sys/kernel/tracing"
fi
[ -d /sys/kernel/tracing/events/sock/sock_send_length ] || [ -d /sys/kernel/debug/tracing/events/sock/sock_send_length ] \
  || fail "kernel $(uname -r) has no sock:sock_send_length tracepoint, which capture runs in: use Linux 6.3 or later"
if [ ! -r /sys/kernel/btf/vmlinux ] && [ ! -d "/lib/modules/$(uname -r)/build" ]; then
  fail "this kernel has neither BTF (/sys/kernel/btf/vmlinux) nor headers (/lib/modules/$(uname -r)/build): install linux-headers-$(uname -r)"
fi

# -- Python environment --------------------------------------------------------------------------
py=/usr/bin/python3
"$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "l7scope needs Python >= 3.11 as /usr/bin/python3"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
bcc_dir=$("$py" -c 'import bcc, os; print(os.path.dirname(bcc.__file__))' 2>/dev/null) \
  || fail "python3-bpfcc is installed but 'import bcc' fails for $py"
ln -sfn "$bcc_dir" "$site/bcc"  # bcc is not on PyPI: the distribution's pure-Python module over libbcc
extra=""
[ "$mode" = test ] && extra="[test]"
stamp="$venv/.installed$extra"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  say "installing the Python packages into $venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here$extra"
  touch "$stamp"
fi

# -- test: the protobuf tests on the lowest protobuf the pin admits -------------------------------------
# .venv gets the newest protobuf the pin admits and runs the whole suite; this lane runs the tests that
# encode and decode protobuf on 5.29.*, in a venv of its own under the cache with the generator of
# proto/*_pb2.py (it needs protobuf < 6, see pyproject.toml). The checkout's code runs (PYTHONPATH).
protobuf_versions() {
  "$1" -c 'from importlib.metadata import version as v; from google.protobuf.internal import api_implementation as a
print("protobuf %s (%s), opentelemetry-proto %s" % (v("protobuf"), a.Type(), v("opentelemetry-proto")))'
}
protobuf_min_venv() {
  local lane=$cache/venv-protobuf-min reqs
  reqs=$("$py" -c '
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
name = lambda r: re.match(r"[A-Za-z0-9._-]+", r).group(0).lower()
runner = [r for r in extras["test"] if name(r) in ("pytest", "pytest-timeout", "grpcio")]
print("protobuf==5.29.*", *project["dependencies"], *extras["protoc"], *runner, sep="\n")
' "$here/pyproject.toml")
  mkdir -p "$cache"
  (
    flock 9
    [ -x "$lane/bin/python" ] || "$py" -m venv "$lane"
    if [ "$(cat "$lane/.installed" 2>/dev/null)" != "$reqs" ]; then
      say "installing the lowest-protobuf test lane into $lane"
      printf '%s\n' "$reqs" >"$lane/requirements.txt"
      "$lane/bin/pip" install -q --disable-pip-version-check -r "$lane/requirements.txt"
      printf '%s\n' "$reqs" >"$lane/.installed"
    fi
  ) 9>"$cache/venv-protobuf-min.lock"
}
protobuf_min_lane() {
  local lane=$cache/venv-protobuf-min versions
  versions=$(protobuf_versions "$lane/bin/python")
  case "$versions" in "protobuf 5.29."*) ;; *) fail "the lowest-protobuf lane has $versions, not 5.29.*" ;; esac
  say "protobuf lane 1/2, lowest: $versions: the protobuf tests"
  (cd "$here" && L7SCOPE_CACHE="$cache" L7SCOPE_STRICT=1 PYTHONPATH="$here" "$lane/bin/python" -m pytest -p no:cacheprovider -q \
    -m "not kernel and not kafka" tests/proto tests/pipeline/test_records_sink.py tests/pipeline/test_otlp_spans.py \
    tests/pipeline/test_alerts.py tests/pipeline/test_red_metrics.py tests/support/test_otlp_receiver.py) \
    || fail "the protobuf tests failed on $versions (the lowest the pin admits)"
}

# -- test: the fast lane, first: static checks and the unit tests (under a minute) -------------------
# Unit tests are the tests/conftest.py `unit` marker: the unit folders less kernel, kafka, root and slow.
lane=${L7SCOPE_LANE:-}
case "$lane" in "" | fast | full) ;; *) fail "L7SCOPE_LANE=$lane: use fast, full or leave it unset" ;; esac
fast_lane() {
  local started=$SECONDS rc=0
  say "fast lane: ruff, mypy, import contracts, unit tests"
  "$venv/bin/ruff" check -q . || fail "fast lane: ruff check found problems (ruff check --fix may fix them)"
  "$venv/bin/ruff" format --check -q . || fail "fast lane: files need formatting: ruff format"
  "$venv/bin/mypy" || fail "fast lane: mypy found type errors"
  PYTHONPATH="$here" "$venv/bin/lint-imports" --no-logo --no-cache >/dev/null \
    || { PYTHONPATH="$here" "$venv/bin/lint-imports" --no-logo --no-cache; fail "fast lane: an import contract is broken (pyproject.toml)"; }
  L7SCOPE_CACHE="$cache" L7SCOPE_STRICT=1 PYTHONPATH="$here" "$venv/bin/python" -m pytest -p no:cacheprovider \
    -m unit "$@" || rc=$?
  [ $rc = 0 ] || [ $rc = 5 ] || fail "fast lane: unit tests failed"
  say "fast lane passed in $((SECONDS - started)) s"
}
if [ "$mode" = test ]; then
  protobuf_min_venv  # tests/proto checks the generated modules with its generator
  cd "$here"
  [ "$lane" = full ] || fast_lane "$@"
  [ "$lane" = fast ] && exit 0
  protobuf_min_lane
fi

# -- kernel headers for bcc (real ones when present, else generated from BTF) ----------------------
mkdir -p "$cache"
"$venv/bin/python" -c "
import sys
from pathlib import Path
from probes.errors import CaptureUnavailable
from probes.kernel_headers import prepare_headers
try:
    print('setup: kernel headers for bcc:', prepare_headers(Path('$cache/headers')), file=sys.stderr)
except CaptureUnavailable as e:
    sys.exit(f'setup: {e}')
"

cd "$here"
case "$mode" in
  run) exec "$venv/bin/l7scope" run --demo "$@" ;;
  test)
    say "protobuf lane 2/2, newest: $(protobuf_versions "$venv/bin/python"): the rest of the test run"
    export L7SCOPE_CACHE="$cache" L7SCOPE_STRICT=1
    rc=0
    "$venv/bin/python" -m pytest -p no:cacheprovider -m "not unit" "$@" || rc=$?
    [ $rc = 5 ] && [ "$lane" != full ] && rc=0  # every test selected was a unit test, run in the fast lane
    exit $rc ;;
  setup) say "ready: $venv/bin/l7scope --help" ;;
esac
