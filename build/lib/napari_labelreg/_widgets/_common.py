"""Small helpers shared by the widgets."""

from __future__ import annotations

import functools

from napari.utils.notifications import show_error


def reports_errors(method, status=None):
    """Turn an exception in a widget action into one napari notification (no bare traceback).

    The message also goes to ``status`` (a QLabel), or to the widget's own ``status`` label when
    ``method`` is a method of a widget that has one, so it stays after the notification fades.
    """

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure must reach the user
            message = f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc)
            show_error(message)
            label = status if status is not None else getattr(args[0], "status", None) if args else None
            if hasattr(label, "setText"):
                label.setText(message)
            return None

    return wrapper


def start_worker(func, *args, done, what: str, status=None, failed=None):
    """A (not yet started) thread worker running ``func(*args)``; ``done(result)`` runs on the GUI thread.

    An error ends in exactly one notification and, when ``status`` (a QLabel) is
    given, a status line saying what failed; never a traceback printing arrays.
    superqt's worker is used rather than napari's, which would add a second
    notification with the traceback.
    """
    from superqt.utils import thread_worker

    def errored(exc: Exception) -> None:
        message = f"{what} failed: {exc}"
        show_error(message)
        if status is not None:
            status.setText(message)
        if failed is not None:
            failed()

    return thread_worker(func, start_thread=False, connect={"returned": reports_errors(done), "errored": errored})(*args)
