"""Model-assisted annotation in the workspace: a trained run proposes masks, the annotator accepts them (then
corrects) or rejects them.  A proposal is shown in each side's proposal layer and saved only when accepted.

- *Propose TRUS*: the selected MR mask warped onto the TRUS by the run's registration.
- *Propose gland* (key ``G``): the gland on both sides, as the run's gland segmenters find it; for a label pair
  of type gland, so that the annotator corrects the gland instead of painting it from scratch.
"""

from __future__ import annotations

import numpy as np

from .workspace import SIDES, TITLES


class Proposals:
    """The proposal actions of :class:`~.annotate.AnnotateWidget` (which provides the session, the workspace,
    the Model field, the status line and its worker)."""

    def propose_from_run(self) -> None:
        """Warp the selected MR mask onto the TRUS with the trained model in the Model field (in a worker)."""
        run = self._model_run()

        def propose():
            from ..pipeline.registrator import Registrator

            return {"fixed": self.session.propose_fixed(Registrator.from_run(run))}

        self.propose(propose)

    def propose_glands(self) -> None:
        """Segment the gland on both images with the Model field's run, into the selected gland label pair."""
        run = self._model_run()
        selected = next((lp for lp in self.session.label_pairs() if lp.id == self.session.selected), None)
        if selected is None or selected.type != "gland":
            raise ValueError("select the gland label pair first (or add one of type gland): the proposal goes there")

        def propose():
            from ..pipeline.registrator import Registrator

            return self.session.propose_glands(Registrator.from_run(run))

        self.propose(propose)

    def _model_run(self) -> str:
        run = self.model_dir.text().strip()
        if not run:
            raise ValueError("give the run folder of a trained model first")
        return run

    def propose(self, compute) -> None:
        """Run ``compute()`` (returning ``{side: mask}``) in a worker; show each mask in its side's proposal layer."""
        self._ready()
        self.flush()
        wanted = (self.session.pair.id, self.session.selected)
        if wanted[1] is None:
            raise ValueError("select or add a label pair first")

        def show(masks):
            if (self.session.pair.id, self.session.selected) != wanted or self.loading is not None:
                self.status.setText("proposal discarded: another label pair is selected now")
                return
            for side, mask in masks.items():
                layer = self.workspace.layers[side, "proposal"]
                label = self.workspace.layers[side, "selected"].selected_label
                layer.data = np.asarray(mask, bool).astype(np.uint16) * label
                layer.visible = True
            counts = ", ".join(f"{TITLES[side]} {int(np.count_nonzero(mask))}" for side, mask in masks.items())
            shown = self._show_proposal(masks)
            self.status.setText(f"proposal: {counts} voxels{shown}; Accept, then correct, or Reject")

        self._start(compute, done=show, what="the proposal")

    def _show_proposal(self, masks: dict) -> str:
        """Bring the proposal into sight: the slice through its centroid (the TRUS side's where there is one)."""
        for side in ("fixed", "moving"):
            mask = masks.get(side)
            if mask is not None and np.any(mask):
                mask = np.asarray(mask, bool)
                voxel = np.argwhere(mask).mean(0)
                for axis in (a for a in range(3) if a not in self.viewer.dims.displayed[-2:]):
                    # the slice holding most of it (the centroid's can miss a curved mask); display axes are
                    # the arrays' (the panels are placed by scale and translation)
                    voxel[axis] = np.argmax(mask.sum(tuple(b for b in range(3) if b != axis)))
                self.go_to_point(side, self.workspace.to_display(side, voxel))
                return f", shown on its {TITLES[side]} slice"
        return " (empty: nothing to show)"

    def _proposed(self) -> list[str]:
        return [side for side in SIDES if (layer := self.workspace.layers.get((side, "proposal"))) is not None
                and layer.visible]

    def accept_proposal(self) -> None:
        sides = self._proposed()
        if not sides:
            raise ValueError("no proposal to accept")
        for side in sides:
            target = self.workspace.layers[side, "selected"]
            where = np.nonzero(np.asarray(self.workspace.layers[side, "proposal"].data) > 0)
            target.data_setitem(where, target.selected_label)  # undoable like a stroke
        self._drop_proposal()
        for side in sides:
            self.save_side(side)
        self.status.setText(f"proposal accepted into {self._called(self.session.selected)} and saved "
                            f"({', '.join(TITLES[side] for side in sides)}): correct it with the brush")

    def reject_proposal(self) -> None:
        if self._drop_proposal():
            self.status.setText("proposal rejected: nothing was saved")

    def _drop_proposal(self) -> list[str]:
        sides = self._proposed()
        for side in sides:
            layer = self.workspace.layers[side, "proposal"]
            layer.visible = False
            layer.data = np.zeros_like(layer.data)
        return sides
