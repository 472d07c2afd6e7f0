"""Saving the annotator's strokes: masks written to the database in the background, in stroke order."""

from __future__ import annotations

import numpy as np

from ..app.annotation import AnnotationSession


class MaskWriter:
    """Writes masks to the database in one background thread, in the order the strokes were made.

    One thread keeps the order: a later stroke's mask never loses to an earlier one's.  ``done(what,
    error)`` runs on the GUI thread after each write.
    """

    def __init__(self, done) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from superqt.utils import ensure_main_thread

        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="labelreg-save")
        self.pending: list = []
        self._done = ensure_main_thread(done)

    def submit(self, session: AnnotationSession, side: str, mask: np.ndarray, label_pair_id: int, what: str) -> None:
        def write():
            try:
                session.save_mask(side, mask, label_pair_id)
            except Exception as exc:  # noqa: BLE001 - reported on the GUI thread
                self._done(what, exc)
                return
            self._done(what, None)

        self.pending = [f for f in self.pending if not f.done()] + [self.pool.submit(write)]

    def wait(self) -> None:
        from concurrent.futures import wait

        wait(self.pending)
        self.pending = []

    @property
    def busy(self) -> bool:
        return any(not f.done() for f in self.pending)
