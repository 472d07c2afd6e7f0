import numpy as np

from napari_labelreg.core.geometry import Grid
from napari_labelreg.app.inspection import ddf_vectors


def test_ddf_vectors_show_on_every_slice_of_every_axis_with_the_field_at_their_voxels(rng):
    grid = Grid.from_spacing((9, 12, 7), (1.5, 2.0, 3.0))
    ddf = rng.normal(size=(*grid.shape, 3))
    vectors = ddf_vectors(ddf, grid, step=4)
    voxels = np.round(vectors[:, 0] / grid.spacing).astype(int)
    for axis, n in enumerate(grid.shape):
        assert set(voxels[:, axis]) == set(range(n))  # no empty slice along any axis
    # axis-aligned grid: the vector is the DDF in mm at that voxel
    np.testing.assert_allclose(vectors[:, 1], ddf[tuple(voxels.T)], atol=1e-12)
    assert len(vectors) < ddf[..., 0].size / 8  # still decimated
