#!/usr/bin/env bash
# The README's screenshots, taken by the GUI test that replays a short labelling session
# (tests/test_gui_annotate.py::test_screenshots_of_a_labelling_session) on the phantom
# database, in a 1366x768 window under Xvfb (pytest-xvfb starts it).  Needs the set-up of
# scripts/bootstrap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/images
LABELREG_SCREENSHOTS=docs/images .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/test_gui_annotate.py -k test_screenshots_of_a_labelling_session
ls -l docs/images
