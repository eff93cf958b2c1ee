"""The package as users meet it: the public API, what importing costs, and a real non-editable install."""

import os
import subprocess
import sys
import textwrap
import venv
from pathlib import Path

import pytest
from conftest import REPO_ROOT, subprocess_env

import streamload

BLOCKER = textwrap.dedent("""
    import sys
    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {blocked!r}:
                raise ImportError(f"{{name}} is blocked in this test")
    sys.meta_path.insert(0, Block())
""")


def run(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(**env),
                          timeout=120)


def test_every_public_name_resolves() -> None:
    assert set(streamload.__all__) == {"__version__", *streamload._HOMES}
    probe = "import streamload; print([n for n in streamload.__all__ if getattr(streamload, n, None) is None])"
    result = run(probe)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr[-2000:]


def test_import_streamload_loads_no_heavy_module() -> None:
    heavy = ('numpy', 'tqdm', 'h5py', 'keras', 'tensorflow', 'jax', 'cv2')
    probe = f"import sys, streamload; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    assert run(probe).stdout.strip() == "[]"


def test_opencv_loads_with_the_first_image_resized_not_before() -> None:
    probe = ("import sys, numpy as np; from streamload.images import decode_batch; from streamload.read import loader; "
             "before = 'cv2' in sys.modules; "
             "from streamload.images.resize_opencv import resize_bilinear_fast; "
             "resize_bilinear_fast(np.zeros((4, 4, 3), np.uint8), (2, 2)); print(before, 'cv2' in sys.modules)")
    assert run(probe).stdout.strip() == "False True"


def test_the_standard_library_only_modules_import_without_numpy_and_tqdm() -> None:
    code = BLOCKER.format(blocked={"numpy", "tqdm", "h5py"}) + textwrap.dedent("""
        import streamload.base.procstats, streamload.errors, streamload.base.process
        print(streamload.base.procstats.read_memory().rss_anon > 0)
    """)
    result = run(code)
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr[-2000:]


def test_the_blocker_really_blocks() -> None:
    """The test above means something only if numpy is refused under the blocker."""
    result = run(BLOCKER.format(blocked={"numpy"}) + "import streamload.format.manifest")
    assert result.returncode != 0 and "numpy is blocked" in result.stderr


@pytest.mark.slow
def test_non_editable_install_builds_and_reads_from_another_folder(tmp_path: Path, mnist_dir: Path) -> None:
    """``pip install .`` into a fresh venv, then the console script and a batch, far from the checkout."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=True).create(env_dir)
    python = env_dir / "bin" / "python"
    clean = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = subprocess.run([str(python), "-m", "pip", "install", "--quiet", str(REPO_ROOT)], capture_output=True,
                             text=True, env=clean, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    build = subprocess.run([str(env_dir / "bin" / "streamload-build"), "--source", str(mnist_dir), "--out", "mnist",
                            "--quiet"], cwd=elsewhere, capture_output=True, text=True, env=clean, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    read = ("import streamload, numpy; loader = streamload.BatchLoader('mnist', 'test', batch_size=8, shuffle=False); "
            "x, y = loader.load(0, 0); print(streamload.__file__); print(x.shape, y.argmax(1).tolist())")
    result = subprocess.run([str(python), "-c", read], cwd=elsewhere, capture_output=True, text=True, env=clean,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    location, batch = result.stdout.strip().splitlines()
    assert str(env_dir) in location and str(REPO_ROOT) not in location  # the installed copy, not the checkout
    assert batch == "(8, 28, 28, 1) [7, 2, 1, 0, 4, 1, 4, 9]"  # the first MNIST test digits
