"""Small helpers shared by the widgets."""

from __future__ import annotations

import functools

from napari.utils.notifications import show_error


def reports_errors(method):
    """Turn an exception in a widget action into a napari notification (no bare traceback)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user
            show_error(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
            return None

    return wrapper
