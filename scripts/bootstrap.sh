#!/usr/bin/env bash
# Everything a fresh machine needs, idempotent: system packages (apt, when
# root), then a virtual environment in .venv with the project and its test
# tools.  torch is pinned first to the CPU wheel this workplace provides; the
# project itself only asks for torch>=2.4.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Xvfb and the xcb libraries Qt needs for napari's GUI tests on a virtual display
  need=()
  # (and PostgreSQL, whose throwaway server the database tests start on a Unix socket)
  for pkg in postgresql xvfb libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
             libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-cursor0 libxkbcommon-x11-0 libgl1 libegl1 \
             libfontconfig1 libdbus-1-3; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[gui,testing,postgres]"
