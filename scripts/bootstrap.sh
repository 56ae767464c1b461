#!/usr/bin/env bash
# Install what Ballast needs to run and test: uv, then the locked Python workspace in .venv.
# Idempotent and quick when nothing changed (a stamp records the lock file it installed).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || die "Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"

if ! command -v uv >/dev/null 2>&1; then
  say "installing uv (the Python package manager) from PyPI..."
  "$PYTHON" -m pip install --quiet --disable-pip-version-check "uv>=0.5" \
    || die "could not install uv with pip; check access to PyPI"
  command -v uv >/dev/null 2>&1 || die "uv was installed but is not on PATH ($("$PYTHON" -m site --user-base)/bin?)"
fi

stamp=.venv/.ballast-installed
wanted="$(sha256sum uv.lock | cut -d' ' -f1) $($PYTHON --version 2>&1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ] && [ -x .venv/bin/python ]; then
  exit 0
fi
say "installing the Python workspace into .venv (first run takes a minute)..."
UV_PYTHON_DOWNLOADS=never uv sync --frozen --python "$PYTHON" \
  || die "uv sync failed; see the messages above"
echo "$wanted" > "$stamp"
say "done"
