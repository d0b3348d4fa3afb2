#!/usr/bin/env bash
# Side-by-side drain: the daemon and baseline.py (official Python SDK + cedarpy) on the
# same seed, latency and concurrency. Makes a venv with requirements.txt (reused while the
# file is unchanged), then runs the drain bench with --python; extra arguments go to the
# bench (for example --pending 2000 --latency 20ms --in-flight 16).
#
#   benches/python/run.sh [--large 0] [...]
#
# Environment: PYTHON (interpreter for the venv, default python3), BASELINE_VENV (venv
# directory, default ${TMPDIR:-/tmp}/vpcep-baseline-venv-<hash of requirements.txt>).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
req=$here/requirements.txt
hash=$(cat "$req" "$here/../../tests/sdk/requirements.txt" | sha256sum | cut -c1-12)
venv=${BASELINE_VENV:-${TMPDIR:-/tmp}/vpcep-baseline-venv-$hash}
if [ ! -f "$venv/.installed-$hash" ]; then
    "${PYTHON:-python3}" -m venv --clear "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
    touch "$venv/.installed-$hash"
fi
cd "$here/../.."
exec cargo bench --bench drain -- --python "$venv/bin/python" "$@"
