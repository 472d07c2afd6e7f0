"""``annotate``: napari with the annotation widgets (the one command that needs Qt, imported lazily)."""

from __future__ import annotations


def cmd_annotate(args) -> None:
    import napari
    from qtpy.QtCore import QTimer

    from .._widgets.annotate import launch

    viewer = napari.Viewer(title="napari-labelreg: annotate")
    launch(viewer, args.db, args.pair, args.annotator)
    if args.quit_after is not None:
        QTimer.singleShot(int(1000 * args.quit_after), viewer.close)
    napari.run()
