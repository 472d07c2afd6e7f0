"""The annotation workspace: MR and TRUS side by side in corresponding, titled grid cells.

Each side has five layers, created once and then updated in place (napari does
not survive removing a Labels layer that is being painted):

* ``image``: the volume, placed so the pair's initial correspondence is the
  identity: one display position shows corresponding anatomy in both cells;
* ``all``: every label pair of the image pair but the selected one, each in
  its own colour, the same colour on both sides (the value is the label
  pair's position + 1);
* ``selected``: the selected label pair, the layer that is painted;
* ``proposal``: a model's proposal for this side, hidden when there is none;
* ``landmarks``: one marker per label pair at its centroid, drawn on every
  slice (a ring when the centroid lies on another slice, with the number of
  slices to it), so a partner is always findable;
* ``cursor``: the correspondence cursor, a cross-hair at the point that
  corresponds to the one under the pointer in the other cell.

Every layer carries the image pair's id in its metadata; the widget checks it
before each save.  Nothing outside the annotate widget writes into them.

A registration of the pair shown (the Inspect tab's, :meth:`Workspace.show_registration`) takes a third cell
of five layers of its own, placed as the TRUS cell is, so linked slicing shows the same anatomy in all three:
the TRUS, the warped MR over it, a map (displacement magnitude or Jacobian determinant), the warped MR label
pairs as outlines in their colours, and each label pair's centroids (warped MR and TRUS) with its error.
They too are created once and updated in place: the painted layers are never touched, and no second viewer
(whose canvas would share the GL context with this one) is opened.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..app.annotation import PairView, shown_name
from ..core.geometry import apply_affine

SIDES = ("moving", "fixed")
TITLES = {"moving": "MR (moving)", "fixed": "TRUS (fixed)"}
FRAME_COLOURS = {"moving": "orange", "fixed": "deepskyblue"}
ROLES = ("image", "all", "selected", "proposal", "landmarks", "cursor")  # one grid cell per side, in this order
CELL_ROLES = ("image", "warped", "map", "labels", "centroids", "targets")  # the registration cell, as many layers
CELL_TITLE = "Registration"
SHOWN = ("overlay", "displacement", "jacobian")  # what the registration cell shows over the TRUS


def place(layer, affine: np.ndarray) -> None:
    """Put ``layer`` where the diagonal voxel -> display ``affine`` says, as napari scale and translate.

    (Scale rather than an affine: napari's slider steps by the layers' scale, one slice at a time.)
    """
    placed = placement_kwargs(affine)
    if not (np.allclose(layer.scale, placed["scale"]) and np.allclose(layer.translate, placed["translate"])):
        layer.scale, layer.translate = placed["scale"], placed["translate"]


def placement_kwargs(affine: np.ndarray) -> dict[str, np.ndarray]:
    """A diagonal voxel -> display affine as napari's ``scale`` and ``translate``."""
    return {"scale": np.diag(affine)[:3].copy(), "translate": affine[:3, 3].copy()}


# one bright colour per label pair, cycled, the same on both sides: twelve colours of CIELAB lightness >= 60 (they
# read on dark TRUS and on bright MR alike), no magenta (the warped MR's overlay colour), ordered so that any two
# label pairs within three numbers of each other differ by a CIEDE2000 of at least 25 (tests/test_annotation.py)
PALETTE = ("#ff9500", "#00ffd4", "#00bfff", "#ffea00", "#ff6a4d", "#00ff6a", "#0095ff", "#ffc34d", "#ff6a00",
           "#4df0ff", "#ff4d97", "#bfff00")


def label_colormap():
    from napari.utils.colormaps import CyclicLabelColormap

    return CyclicLabelColormap(colors=["transparent", *PALETTE], name="labelreg")


def colour_of(position: int) -> str:
    """The colour of the label pair at ``position``, as the layers draw it."""
    return PALETTE[position % len(PALETTE)]


def colour_value(position: int) -> int:
    """The label value (and so the colour) of the label pair at ``position``, the same on both sides."""
    return position + 1


class Workspace:
    """The ten layers of the workspace in ``viewer`` and how a :class:`PairView` fills them."""

    def __init__(self, viewer) -> None:
        self.viewer = viewer
        self.layers: dict[tuple[str, str], object] = {}
        self.view: PairView | None = None
        self.selected: int | None = None
        self.masks: dict[int, list[np.ndarray]] = {}  # label pair id -> [moving, fixed], as saved
        self.offsets = {side: np.zeros(3) for side in SIDES}  # display shifts of unlinked slicing, mm
        self._centroids: dict[tuple[int, str], np.ndarray | None] = {}  # in voxels, computed once per mask
        self._stale = False  # a write failed: what the database holds is not known here
        self.cell: dict[str, object] = {}  # the registration cell's layers, by CELL_ROLES
        self.registered = None  # the RegisteredPair the cell shows (app.inspection)
        self.shown = "overlay"
        viewer.dims.events.point.connect(self._update_landmarks)

    # ---- building -------------------------------------------------------------------
    def complete(self) -> bool:
        return len(self.layers) == 2 * len(ROLES) and all(layer in self.viewer.layers for layer in self.layers.values())

    def _create(self, view: PairView) -> None:
        for layer in self.layers.values():  # only after a user deleted one of them
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        self.layers = {}
        for side in SIDES:
            vol, affine = view.volume(side), view.affine(side)
            zeros = np.zeros(vol.grid.shape, np.uint16)
            placed = placement_kwargs(affine)
            image = self.viewer.add_image(vol.data, colormap="gray", name=TITLES[side], **placed)
            image.name_overlay.visible = True
            image.bounding_box.visible = True
            image.bounding_box.points = False
            image.bounding_box.line_color = FRAME_COLOURS[side]
            image.bounding_box.line_thickness = 2
            # the other pairs as outlines (their hue reads on bright MR and dark TRUS alike), the selected filled
            everything = self.viewer.add_labels(zeros, opacity=0.9, **placed, name=f"{TITLES[side]}: label pairs",
                                                colormap=label_colormap())
            everything.contour = 1
            everything.editable = False
            selected = self.viewer.add_labels(zeros.copy(), opacity=0.6, **placed, colormap=label_colormap(),
                                              name=f"{TITLES[side]}: selected pair")
            proposal = self.viewer.add_labels(zeros.copy(), opacity=0.5, visible=False, **placed,
                                              colormap=label_colormap(), name=f"{TITLES[side]}: proposal")
            proposal.editable = False
            landmarks = self.viewer.add_points(
                np.empty((0, 3)), ndim=3, size=4.0, name=f"{TITLES[side]}: landmarks", **placed,
                features={"label": np.array([], str)},
                text={"string": "{label}", "color": "white", "size": 9, "anchor": "lower_left",
                      "translation": [0, -5, 5]})  # beside the selected ring, clear of the stroke
            landmarks.editable = False
            cursor = self.viewer.add_points(np.empty((0, 3)), ndim=3, size=6.0, symbol="cross", face_color="yellow",
                                            border_color="yellow", name=f"{TITLES[side]}: corresponding point",
                                            features={"label": np.array([], str)},
                                            text={"string": "{label}", "color": "yellow", "size": 9,
                                                  "anchor": "upper_left"}, **placed)
            cursor.editable = False
            for role, layer in zip(ROLES, (image, everything, selected, proposal, landmarks, cursor)):
                self.layers[side, role] = layer
        ours = [self.viewer.layers.index(layer) for layer in self.layers.values()]
        self.viewer.layers.move_multiple(ours, 0)  # the two cells come first whatever else is open
        grid = self.viewer.canvas.grid
        grid.stride, grid.shape, grid.enabled = len(ROLES), (1, 2), True  # (1, 3) while a registration shows
        self.viewer.dims.axis_labels = ("i", "j", "k")  # array axes, as nibabel returns them
        self.viewer.reset_view()

    # ---- showing a pair -------------------------------------------------------------
    def show(self, view: PairView, selected: int | None) -> None:
        """Fill every layer from ``view`` in place (zoom and slice stay where they are)."""
        first = not self.complete()
        if first:
            self._create(view)
        if self.registered is not None and self.registered.pair_id != view.record.id:
            self.hide_registration()  # another pair's registration never sits beside this one
        self.view = view
        self.masks = {pid: list(pair) for pid, pair in view.masks.items()}
        if not first:
            self.show_cursor(None)  # the last pair's cross-hair never stays behind
        self._centroids = {}
        self.offsets = {side: np.zeros(3) for side in SIDES}
        name = view.record.name
        for side in SIDES:
            vol, affine = view.volume(side), self.placement(side)
            image = self.layers[side, "image"]
            image.data = vol.data
            place(image, affine)
            low, high, least, most = view.windows[side]
            image.contrast_limits_range = (least, most)
            image.contrast_limits = (low, high)
            image.name = f"{TITLES[side]} · {name}"
            for role in ROLES:
                layer = self.layers[side, role]
                layer.metadata["image_pair_id"] = view.record.id
                layer.metadata["image_pair"] = name
                if role != "image":
                    place(layer, affine)
            proposal = self.layers[side, "proposal"]
            if proposal.visible or proposal.data.shape != vol.grid.shape:
                proposal.visible = False
                proposal.data = np.zeros(vol.grid.shape, np.uint16)
        self.select(selected)
        if first:
            self.viewer.reset_view()

    def placement(self, side: str) -> np.ndarray:
        """``side``'s voxel -> display affine: the correspondence, shifted while slicing is unlinked."""
        shifted = self.view.affine(side).copy()
        shifted[:3, 3] += self.offsets[side]
        return shifted

    def shift(self, side: str, delta_mm) -> None:
        """Move ``side``'s layers by ``delta_mm`` in display space (unlinked slicing); zero offset relinks."""
        self.offsets[side] = self.offsets[side] + np.asarray(delta_mm, float)
        affine = self.placement(side)
        for role in ROLES:
            place(self.layers[side, role], affine)
        if side == "fixed":
            for layer in self.cell.values():
                place(layer, affine)
        self._update_landmarks()

    def relink(self) -> None:
        for side in SIDES:
            if self.offsets[side].any():
                self.shift(side, -self.offsets[side])

    def select(self, selected: int | None) -> None:
        """Show ``selected`` in the painted layers and every other label pair beside it."""
        self.selected = selected
        view = self.view
        records = {lp.id: lp for lp in view.label_pairs}
        for k, side in enumerate(SIDES):
            shape = view.volume(side).grid.shape
            everything = np.zeros(shape, np.uint16)
            others = [pid for pid in self.masks if pid != selected]
            for pid in sorted(others, key=lambda p: -int(self.masks[p][k].sum())):  # small ones drawn on top
                everything[self.masks[pid][k]] = colour_value(records[pid].position)
            self.layers[side, "all"].data = everything
            layer = self.layers[side, "selected"]
            layer.metadata["label_pair_id"] = selected
            if selected is None:
                layer.data = np.zeros(shape, np.uint16)
            else:
                value = colour_value(records[selected].position)
                layer.data = self.masks[selected][k].astype(np.uint16) * value
                layer.selected_label = value
        self._update_landmarks()

    def update_records(self, view_records) -> None:
        """New label pair records (added, renamed, verified, deleted) for the pair shown."""
        view = self.view
        self.view = dataclasses.replace(view, label_pairs=list(view_records))
        known = {lp.id for lp in view_records}
        shapes = (view.moving.grid.shape, view.fixed.grid.shape)
        self.masks = {pid: self.masks.get(pid, [np.zeros(shapes[0], bool), np.zeros(shapes[1], bool)])
                      for pid in known}

    def stored(self, side: str) -> np.ndarray | None:
        """The selected pair's mask on ``side`` as last written (None: unknown, write again)."""
        if self.selected is None or self._stale:
            return None
        return self.masks[self.selected][SIDES.index(side)]

    def forget_saved(self) -> None:
        """After a failed write: no mask counts as saved, so the next save writes the layer again."""
        self._stale = True

    def record_saved(self, side: str, mask: np.ndarray) -> None:
        self.masks[self.selected][SIDES.index(side)] = mask
        self._stale = False
        self._centroids.pop((self.selected, side), None)
        self._update_landmarks()

    def frame(self, fill: float = 0.5, slice: bool = True) -> bool:
        """Centre the view and the slice on the gland (else on every label pair) and zoom so that it spans
        ``fill`` of a cell (``slice`` False: the slice stays); False (the whole images shown) where nothing is
        painted.  One camera serves every
        cell, and corresponding anatomy shares display positions, so the gland is framed in each."""
        view = self.view
        glands = [lp.id for lp in view.label_pairs if lp.type == "gland" and lp.id in self.masks]
        boxes = []
        for pid in glands or list(self.masks):
            for k, side in enumerate(SIDES):
                mask = self.masks[pid][k]
                if mask is not None and mask.any():
                    voxels = np.argwhere(mask)
                    corners = apply_affine(self.placement(side), np.stack([voxels.min(0) - 0.5, voxels.max(0) + 0.5]))
                    boxes += [corners.min(0), corners.max(0)]
        if not boxes:
            self.viewer.reset_view()
            return False
        low, high = np.min(boxes, 0), np.max(boxes, 0)
        centre, size = (low + high) / 2, high - low
        dims = self.viewer.dims
        shown = list(dims.displayed)[-2:]
        for axis in (a for a in range(3) if a not in shown and slice):
            dims.set_point(axis, centre[axis])
        camera = self.viewer.scene.camera
        camera.center = tuple(float(centre[a]) for a in shown)
        cell = np.asarray(self.viewer.canvas.viewbox_size(self.viewer.layers), float)
        camera.zoom = float(fill * np.min(cell / np.maximum(size[shown], 1e-3)))
        return True

    # ---- the correspondence cursor -----------------------------------------------------------
    def partner(self, side: str, point) -> tuple[np.ndarray, str]:
        """The other side's voxel corresponding to display ``point`` of ``side``'s cell, and through what: the
        registration the third cell shows, or the pair's initial correspondence (the same display point).
        Raises :class:`~napari_labelreg.core.transform.OutsideField` where the registration does not reach."""
        other = "fixed" if side == "moving" else "moving"
        point = np.asarray(point, float)[-3:]
        if self.registered is None:
            return apply_affine(np.linalg.inv(self.placement(other)), point[None])[0], "initial correspondence"
        reg = self.registered.registration
        here, there = (reg.fixed, reg.moving) if side == "fixed" else (reg.moving, reg.fixed)
        voxel = apply_affine(np.linalg.inv(self.placement(side)), point[None])
        mapped = reg.map_points(apply_affine(here.affine, voxel), to="moving" if side == "fixed" else "fixed")
        return apply_affine(np.linalg.inv(there.affine), mapped.points)[0], "registration"

    def show_cursor(self, side: str | None, point=None) -> str:
        """The cross-hair in the cell other than ``side``'s at the point corresponding to ``point``; none where
        ``side`` is None (the pointer left the two cells) or nothing corresponds.  Returns what it says."""
        from ..core.transform import OutsideField

        for layer_side in SIDES:
            layer = self.layers[layer_side, "cursor"]
            if layer_side == side or side is None:
                if len(layer.data):
                    layer.data = np.empty((0, 3))
        if side is None or self.view is None:
            return ""
        other = "fixed" if side == "moving" else "moving"
        try:
            voxel, through = self.partner(side, point)
        except OutsideField:
            self.layers[other, "cursor"].data = np.empty((0, 3))
            return "no corresponding point: outside the registration's field"
        display = self.to_display(other, voxel)
        dims = self.viewer.dims
        spacing = np.abs(np.diag(self.placement(other))[:3])
        away = [int(round((display[a] - dims.point[a]) / spacing[a])) for a in range(3) if a not in dims.displayed]
        layer = self.layers[other, "cursor"]
        shown = display.copy()  # drawn on the slice shown, the slices to the point said beside it
        for a in (a for a in range(3) if a not in dims.displayed):
            shown[a] = dims.point[a]
        with layer.events.blocker_all():
            layer.data = apply_affine(np.linalg.inv(self.placement(other)), shown[None])
            layer.features = {"label": np.asarray([", ".join(f"{d:+d}" for d in away if d)], str)}
        layer.refresh()
        return through

    def to_display(self, side: str, voxel) -> np.ndarray:
        """``side``'s voxel (i, j, k) as a display point, where the panels show it now."""
        return apply_affine(self.placement(side), np.asarray(voxel, float)[None])[0]

    # ---- landmarks --------------------------------------------------------------------
    def centroid(self, label_pair_id: int, side: str) -> np.ndarray | None:
        """The label pair's centroid on ``side`` in display mm, None where that side is unpainted."""
        key = (label_pair_id, side)
        if key not in self._centroids:
            mask = self.masks[label_pair_id][SIDES.index(side)]
            self._centroids[key] = np.argwhere(mask).mean(0) if mask.any() else None
        voxel = self._centroids[key]
        return None if voxel is None else apply_affine(self.placement(side), voxel[None])[0]

    def _update_landmarks(self, _event=None) -> None:
        if self.view is None or not self.complete():
            return
        dims = self.viewer.dims
        point = np.asarray(dims.point[-3:], float)
        sliced = [axis for axis in range(3) if axis not in dims.displayed[-2:]] if dims.ndim >= 3 else []
        records = {lp.id: lp for lp in self.view.label_pairs}
        for side in SIDES:
            layer = self.layers[side, "landmarks"]
            spacing = np.abs(np.diag(self.placement(side))[:3])
            rows, labels, colours, sizes, symbols = [], [], [], [], []
            for pid, lp in records.items():
                centre = self.centroid(pid, side) if pid in self.masks else None
                if centre is None:
                    continue
                away = [int(round((centre[a] - point[a]) / spacing[a])) for a in sliced]
                shown = centre.copy()
                for a in sliced:
                    shown[a] = point[a]
                offset = ", ".join(f"{d:+d}" for d in away if d)
                name = shown_name(lp) + (f" ({offset})" if offset else "")  # "other 3 (-3)": 3 slices back
                labels.append(name if pid == self.selected else "")  # one caption: the selected pair's
                rows.append(shown)
                colours.append(colour_of(lp.position))
                # rings, not discs: the stroke inside stays visible; the selected pair's ring is wider
                sizes.append(9.0 if pid == self.selected else 4.0)
                symbols.append("disc" if not offset else "square")
            placement = self.placement(side)  # the markers share their side's scale, so the slider's step too
            place(layer, placement)
            rows = (np.asarray(rows, float).reshape(-1, 3) - placement[:3, 3]) / np.diag(placement)[:3]
            with layer.events.blocker_all():  # one redraw below instead of one per property
                layer.data = rows
                layer.features = {"label": np.asarray(labels, str)}
                if rows.size:
                    layer.face_color = "transparent"
                    layer.border_color = colours
                    layer.border_width = 0.18
                    layer.symbol = symbols
            if rows.size:
                layer.size = np.asarray(sizes) / float(np.abs(np.diag(placement)[:3]).mean())  # mm
            layer.refresh()

    # ---- the registration cell -----------------------------------------------------------
    def show_registration(self, registered, shown: str = "overlay") -> None:
        """Show ``registered`` (an :class:`~napari_labelreg.app.inspection.RegisteredPair` of the pair shown) in
        the third cell, ``shown`` over its TRUS (one of :data:`SHOWN`)."""
        if self.view is None or registered.pair_id != self.view.record.id:
            raise ValueError("the registration is of another image pair than the one shown")
        if not self.cell or any(layer not in self.viewer.layers for layer in self.cell.values()):
            self._create_cell()
        self.registered = registered
        view, cell, affine = self.view, self.cell, self.placement("fixed")
        cell["targets"].data = np.empty((0, 3))  # mapped through the registration before this one
        records = {lp.id: lp for lp in view.label_pairs}
        cell["image"].data = view.fixed.data
        low, high, least, most = view.windows["fixed"]
        cell["image"].contrast_limits_range, cell["image"].contrast_limits = (least, most), (low, high)
        cell["warped"].data = registered.warped
        low, high, least, most = view.windows["moving"]
        cell["warped"].contrast_limits_range, cell["warped"].contrast_limits = (least, most), (low, high)
        outlines = np.zeros(registered.warped.shape, np.uint16)
        for pid, mask in sorted(zip(registered.label_ids, registered.warped_labels), key=lambda x: -x[1].sum()):
            if pid in records:
                outlines[mask] = colour_value(records[pid].position)
        cell["labels"].data = outlines
        self._show_centroids(registered, records)
        if self.viewer.canvas.grid.shape != (1, 3):
            self.viewer.canvas.grid.shape = (1, 3)
            self.frame(slice=False)  # narrower cells: the gland framed in them again
        for layer in cell.values():
            place(layer, affine)
            layer.metadata["image_pair_id"] = view.record.id
            layer.metadata["image_pair"] = view.record.name
        self.show_map(shown)

    def show_map(self, shown: str) -> None:
        """Over the registration cell's TRUS: the warped MR (``overlay``), or a map of the DDF."""
        if shown not in SHOWN:
            raise ValueError(f"shown must be one of {', '.join(SHOWN)}, got {shown!r}")
        registered, cell = self.registered, self.cell
        if registered is None:
            raise ValueError("register the pair first")
        layer = cell["map"]
        if shown == "displacement":
            layer.data = registered.displacement_mm
            layer.colormap, layer.name = "viridis", f"{CELL_TITLE}: displacement magnitude (mm)"
            layer.contrast_limits = (0.0, max(float(registered.displacement_mm.max()), 1e-3))
        elif shown == "jacobian":
            det = registered.jacobian
            spread = float(max(np.abs(det - 1).max(), 1e-3))
            layer.data = det
            layer.colormap, layer.name = "bwr", f"{CELL_TITLE}: Jacobian determinant"
            layer.contrast_limits = (1 - spread, 1 + spread)
        cell["map"].visible = shown != "overlay"
        cell["map"].colorbar.visible = shown != "overlay"
        cell["warped"].visible = shown == "overlay"
        for role in ("image", "labels", "centroids", "targets"):
            cell[role].visible = True
        self.shown = shown

    def hide_registration(self) -> None:
        """Hide the registration cell: the grid goes back to the workspace's two."""
        self.registered = None
        if self.viewer.canvas.grid.shape != (1, 2):
            self.viewer.canvas.grid.shape = (1, 2)
            if self.view is not None:
                self.frame(slice=False)
        for layer in self.cell.values():
            layer.visible = False
            if hasattr(layer, "colorbar"):
                layer.colorbar.visible = False

    def _create_cell(self) -> None:
        active = self.viewer.layers.selection.active  # napari makes each new layer active: the brush's comes back
        for layer in self.cell.values():
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)
        shape = self.view.fixed.grid.shape
        title = CELL_TITLE
        image = self.viewer.add_image(np.zeros(shape, np.float32), colormap="gray", name=f"{title}: TRUS")
        image.name_overlay.visible = True
        image.bounding_box.visible = True
        image.bounding_box.points = False
        image.bounding_box.line_color = "magenta"
        image.bounding_box.line_thickness = 2
        warped = self.viewer.add_image(np.zeros(shape, np.float32), colormap="magenta", blending="additive",
                                       opacity=0.6, name=f"{title}: warped MR")
        maps = self.viewer.add_image(np.zeros(shape, np.float32), colormap="viridis", opacity=0.7, visible=False,
                                     name=f"{title}: displacement magnitude (mm)")
        labels = self.viewer.add_labels(np.zeros(shape, np.uint16), opacity=0.9, colormap=label_colormap(),
                                        name=f"{title}: warped MR label pairs")
        labels.contour = 1
        labels.editable = False
        centroids = self.viewer.add_points(
            np.empty((0, 3)), ndim=3, size=4.0, name=f"{title}: centroids (ring: warped MR, cross: TRUS)",
            features={"label": np.array([], str)},
            text={"string": "{label}", "color": "white", "size": 9, "anchor": "lower_left", "translation": [0, -5, 5]})
        centroids.editable = False
        targets = self.viewer.add_points(
            np.empty((0, 3)), ndim=3, size=4.0, face_color="lime", name=f"{title}: MR targets mapped",
            features={"label": np.array([], str)},
            text={"string": "{label}", "color": "lime", "size": 10, "anchor": "upper_left"})
        targets.editable = False
        self.cell = dict(zip(CELL_ROLES, (image, warped, maps, labels, centroids, targets)))
        ours = [self.viewer.layers.index(layer) for layer in self.cell.values()]
        self.viewer.layers.move_multiple(ours, 2 * len(ROLES))  # the third cell, after the two of the workspace
        if active is not None:
            self.viewer.layers.selection.active = active

    def show_targets(self, voxels: np.ndarray, labels: list[str]) -> None:
        """MR targets mapped onto the TRUS (fixed voxels), drawn in the registration cell beside the centroids."""
        if self.registered is None:
            raise ValueError("register the pair first")
        layer = self.cell["targets"]
        with layer.events.blocker_all():
            layer.data = np.asarray(voxels, float).reshape(-1, 3)
            layer.features = {"label": np.asarray(labels, str)}
        layer.refresh()

    def _show_centroids(self, registered, records) -> None:
        rows, labels, colours, symbols = [], [], [], []
        for k, pid in enumerate(registered.label_ids):
            colour = colour_of(records[pid].position) if pid in records else "white"
            for centre, symbol, text in ((registered.moved[k], "ring", f"{registered.names[k]}: "
                                          f"{registered.errors_mm[k]:.1f} mm"), (registered.target[k], "cross", "")):
                if np.isfinite(centre).all():
                    rows.append(centre), labels.append(text), colours.append(colour), symbols.append(symbol)
        layer = self.cell["centroids"]
        with layer.events.blocker_all():
            layer.data = np.asarray(rows, float).reshape(-1, 3)
            layer.features = {"label": np.asarray(labels, str)}
            if rows:
                layer.face_color = colours
                layer.border_color = colours
                layer.symbol = symbols
        layer.refresh()
