import locale
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mrus_prostate"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason=f"{DATA} not present")
    for item in items:
        if "data" in item.keywords and not DATA.is_dir():
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _threads_fixed(monkeypatch):
    """In the test process, torch's thread count stays as it started: training gives way to other work on the
    machine (nn/threads.py), and the suite's bitwise checks must not depend on what runs beside it.  The
    processes tests start adapt as a user's do; tests/test_threads.py tests the adapting itself."""
    import math

    from napari_labelreg.nn import threads

    monkeypatch.setattr(threads, "INTERVAL_S", math.inf)


@pytest.fixture(autouse=True)
def _on_the_cpu(request, monkeypatch):
    """The suite runs on the CPU, whose kernels are deterministic (its bitwise checks rely on it), even on a GPU
    host: where no device is given, none is found.  Tests marked ``cuda`` ask for CUDA by name, with tolerances;
    processes the tests start are given ``--device cpu``."""
    if request.node.get_closest_marker("cuda") is None:
        import torch

        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


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


@pytest.fixture(scope="session")
def located_run(tmp_path_factory):
    """A tiny run with gland segmenters (a Locate stage), trained for two steps."""
    from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.train import train

    run = tmp_path_factory.mktemp("located")
    cfg = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=2, learning_rate=1e-4,
                      augment=AugmentConfig(enabled=False), locator=0.5)
    list(train([make_phantom(s).pair for s in range(2)], cfg, run))
    return run


_LOCALE = locale.setlocale(locale.LC_ALL)  # the session's, before any test ran


@pytest.fixture(autouse=True)
def _locale_kept():
    """GDCM's DICOM writer (tests write series with it, in fixtures of any scope) sets the C locale for the whole
    process, which makes Python's default text encoding ASCII for every later test: put the session's back."""
    yield
    locale.setlocale(locale.LC_ALL, _LOCALE)


# ---- database backends: SQLite files and a throwaway PostgreSQL server ------------------------------------

BACKENDS = ("sqlite", "postgresql")


def _postgres_binaries():
    import glob
    import shutil

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[-3]))
    initdb = found[-1] if found else shutil.which("initdb")
    return (initdb, str(Path(initdb).with_name("pg_ctl"))) if initdb else (None, None)


_POSTGRES: dict = {}  # what the session's own server offers: "restart"


@pytest.fixture
def restart_postgres(postgres_server):
    """Stop and start the test session's PostgreSQL server (not an external one)."""
    if "restart" not in _POSTGRES:
        pytest.skip("the PostgreSQL server is not this session's own (LABELREG_TEST_POSTGRES)")
    return _POSTGRES["restart"]


@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a PostgreSQL server for the tests: ``LABELREG_TEST_POSTGRES`` when set, else a throwaway cluster
    started here (Unix socket only, data in a temporary folder, removed at the end).  Skips without PostgreSQL."""
    import os
    import shutil
    import subprocess
    import tempfile

    pytest.importorskip("psycopg", reason="psycopg (PostgreSQL's driver) is not installed")
    if os.environ.get("LABELREG_TEST_POSTGRES"):
        yield os.environ["LABELREG_TEST_POSTGRES"]
        return
    initdb, pg_ctl = _postgres_binaries()
    if initdb is None:
        pytest.skip("PostgreSQL is not installed (scripts/bootstrap.sh installs it when run as root)")
    root = Path(tempfile.mkdtemp(prefix="lrpg-"))  # short: a socket path has a 107-byte limit
    as_owner = []
    if os.getuid() == 0:  # the server refuses to run as root: as the distribution's postgres user
        shutil.chown(root, "postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    subprocess.run([*as_owner, initdb, "-D", str(data), "-U", "labelreg", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True)
    options = f"-k {root} -c listen_addresses='' -c fsync=off -c max_connections=50"
    subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    def restart(mode: str = "immediate") -> None:  # "immediate": as a crash; the server recovers from its log
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", mode, "stop"], check=True, capture_output=True)
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                       check=True, capture_output=True)

    _POSTGRES["restart"] = restart
    try:
        yield f"postgresql+psycopg://labelreg@/postgres?host={root}"
    finally:
        _POSTGRES.pop("restart", None)
        subprocess.run([*as_owner, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path):
    """Where a fresh label database lives: a SQLite file, or a new database on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield str(tmp_path / "labels.db")
        return
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    server = make_url(request.getfixturevalue("postgres_server"))
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = dict(user=server.username, host=server.query["host"], dbname=server.database or "postgres")
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield server.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(**admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db(database_url, phantom_folder):
    """An imported phantom folder in a label database, on each backend (SQLite and PostgreSQL)."""
    from napari_labelreg.database import LabelDB
    from napari_labelreg.database.transfer import import_folder

    database = LabelDB.open(database_url)
    import_folder(database, phantom_folder)
    yield database
    database.close()
