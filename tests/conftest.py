from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mrus_prostate"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"{DATA} not present")
    for item in items:
        if "data" in item.keywords and not DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def write_phantom_folder(root: Path, count: int = 3, **kwargs) -> Path:
    """Phantom pairs in the mrus_prostate folder layout (4-D labels)."""
    from napari_labelreg.core import io
    from napari_labelreg.core.phantom import make_phantom

    for seed in range(count):
        pair = make_phantom(seed, **kwargs).pair
        name = f"obs{seed:03d}.nii.gz"
        io.save_volume(root / "moving_images" / name, pair.moving.data, pair.moving.grid)
        io.save_volume(root / "fixed_images" / name, pair.fixed.data, pair.fixed.grid)
        io.save_volume(root / "moving_labels" / name, pair.moving_labels.transpose(1, 2, 3, 0).astype(np.uint8),
                       pair.moving.grid)
        io.save_volume(root / "fixed_labels" / name, pair.fixed_labels.transpose(1, 2, 3, 0).astype(np.uint8),
                       pair.fixed.grid)
    return root


@pytest.fixture
def phantom_folder(tmp_path):
    return write_phantom_folder(tmp_path / "data")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """A tiny network trained for two steps on phantoms: enough to run registration end to end."""
    from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.train import train

    run = tmp_path_factory.mktemp("model")
    cfg = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=2, learning_rate=1e-4,
                      augment=AugmentConfig(enabled=False))
    list(train([make_phantom(s).pair for s in range(2)], cfg, run))
    return run


@pytest.fixture(autouse=True)
def _locale_kept():
    """GDCM's DICOM writer (tests write series with it) sets the C locale for the whole process, which makes
    Python's default text encoding ASCII for every later test: put the locale back after each test."""
    import locale

    saved = locale.setlocale(locale.LC_ALL)
    yield
    locale.setlocale(locale.LC_ALL, saved)
