"""User settings remembered between sessions (e.g. the annotator's name).

A small JSON file in the user's config folder (``$XDG_CONFIG_HOME`` or
``~/.config``)/napari-labelreg/settings.json, written atomically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..core.io import atomic_write


def settings_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "napari-labelreg" / "settings.json"


def load_settings() -> dict:
    try:
        return json.loads(settings_path().read_text())
    except (OSError, ValueError):
        return {}


def save_setting(key: str, value) -> None:
    data = load_settings()
    data[key] = value
    atomic_write(settings_path(), lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1)))


def user_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "napari-labelreg"
