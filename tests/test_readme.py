"""The README and docs/ tell the truth: every quoted figure is rendered from a committed result file (and
equal to it), no measured figure is typed outside those blocks, links resolve, examples run."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from shards import build

from benchmarks.report import VIEWS, blocks, refresh, render

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"```.*?```", re.DOTALL)
BLOCK = re.compile(r"<!-- results: .*?<!-- end results -->", re.DOTALL)
# a number with a unit of measurement: what a benchmark measures (seconds, bytes, rates, ratios, shares)
MEASURED = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?(?:s|ms|KB|MB|GB|MiB|GiB|x|%|samples/s|MB/s|IOPS)(?![\w/])")
# figures that are not measurements: defaults and arithmetic on them, each where it is written
NOT_MEASURED = {
    "README.md": {"64 MB"},
    "building.md": {"64 KB", "64 MB"},
    "cold-storage.md": {"5.2x", "128 KB", "25 MB"},
    "bigger-than-ram.md": {"5.2x", "1.3x"},
    "memory.md": {"20 ms"},
    "object-storage.md": {"7.75 s", "15.5 s"},  # the retry waits of store/retry.py's constants, summed
    "your-own-data.md": {"1 GiB"},  # the largest sample a .npy source may hold: a limit, not a measurement
}


def prose(text: str) -> str:
    """``text`` without its code and its rendered results blocks."""
    return FENCE.sub("", BLOCK.sub("", text))


def test_every_document_has_been_rendered_from_its_result_files() -> None:
    stale = [str(path.relative_to(ROOT)) for path in DOCUMENTS if refresh(path.read_text()) != path.read_text()]
    assert not stale, f"run `python3 -m benchmarks.report README.md docs/*.md`: stale blocks in {stale}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_each_results_block_equals_its_file_rendered(path: Path) -> None:
    for file, view, body in blocks(path.read_text()):
        assert (ROOT / file).parent == ROOT / "results", f"{path.name}: {file} is not a committed result file"
        assert (Path(file).stem, view) in VIEWS, f"{path.name}: no renderer for {file} {view or ''}"
        assert body == render(file, view), f"{path.name}: the block of {file} {view or ''} disagrees with the file"


def test_the_readme_quotes_the_headline_and_quick_start_results() -> None:
    quoted = {(file, view) for file, view, _ in blocks((ROOT / "README.md").read_text())}
    assert {("results/quickstart.json", None), ("results/loaders.json", "headline"),
            ("results/memory.json", "headline")} <= quoted


def test_every_result_file_is_tracked_by_git() -> None:
    tracked = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    quoted = {file for path in DOCUMENTS for file, _, _ in blocks(path.read_text())}
    assert quoted <= set(tracked), f"quoted but not committed: {sorted(quoted - set(tracked))}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_no_measured_figure_is_typed_outside_a_results_block(path: Path) -> None:
    if path.name == "faults.md":
        pytest.skip("faults.md quotes no measurement (its sizes are the faults' own parameters)")
    typed = set(MEASURED.findall(prose(path.read_text()))) - NOT_MEASURED.get(path.name, set())
    assert not typed, f"{path.name}: figures typed by hand, not rendered from results/: {sorted(typed)}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_one_spelling_of_the_interpreter(path: Path) -> None:
    written = BLOCK.sub("", path.read_text())  # rendered tables name a "python loop" consumer, not a command
    assert not re.findall(r"(?<![\w/.])python (?=\S)", written), f"{path.name}: write python3"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_resolve(path: Path) -> None:
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", path.read_text()):
        assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def python_blocks(path: Path, containing: str) -> list[str]:
    return [code for code in re.findall(r"```python\n(.*?)```", path.read_text(), re.DOTALL) if containing in code]


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "docs" / "training.md"], ids=lambda path: path.name)
def test_the_batch_loader_examples_run(tmp_path, path: Path) -> None:
    """The documented loop runs: ``for x, y in loader`` serves an epoch per loop, and the state names the next."""
    directory, arrays = build(tmp_path, 600, "npy", 200)
    examples = python_blocks(path, "BatchLoader(")
    assert len(examples) == 1
    scope: dict = {}
    exec(examples[0].replace('"data/mnist"', repr(str(directory))), scope)  # noqa: S102
    x, y = scope["x"], scope["y"]  # the last batch of the last epoch the loop read
    assert scope["epoch"] == 1 and len(x) == len(y) == 600 - 2 * 256
    assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1) and y.shape[1:] == (10,)
    assert (scope["state"]["epoch"], scope["state"]["sample"]) == (2, 0)


def test_the_report_command_rewrites_stale_blocks_and_check_says_so(tmp_path) -> None:
    from benchmarks.report import main

    document = tmp_path / "doc.md"
    document.write_text("Before.\n<!-- results: results/build-images.json -->\n| typed | 1 s |\n<!-- end results -->\n")
    assert main(["--check", str(document)]) == 1 and "| typed | 1 s |" in document.read_text()
    assert main([str(document)]) == 0
    assert blocks(document.read_text()) == [("results/build-images.json", None, render("results/build-images.json"))]
    assert main(["--check", str(document)]) == 0 and document.read_text().startswith("Before.\n")


def test_the_documented_checkpoint_default_is_the_class_default() -> None:
    import inspect

    from streamload.adapters.callbacks import TrainingCheckpoint

    documented = re.search(r"`TrainingCheckpoint\(directory, generator, save_freq=(\d+)\)`",
                           (ROOT / "docs" / "training.md").read_text())
    assert documented, "docs/training.md no longer shows TrainingCheckpoint's signature"
    default = inspect.signature(TrainingCheckpoint).parameters["save_freq"].default
    assert int(documented.group(1)) == default


@pytest.mark.parametrize("path", [ROOT / "README.md", ROOT / "docs" / "training.md"], ids=lambda path: path.name)
def test_the_encoded_image_examples_run(tmp_path, path: Path) -> None:
    """The documented read of an encoded photo store gives float32 (B, 224, 224, 3) batches."""
    from image_fixtures import ImageFolder, smooth_pixels

    from streamload import BuildOptions, ImageOptions, StreamingGenerator, build_dataset, image_folder_sources

    folder = ImageFolder(tmp_path / "photos", ["a", "b"])
    for number in range(6):
        folder.add(f"{'ab'[number % 2]}/{number}.jpg", smooth_pixels(40 + number, 60, 3, number))
    directory = tmp_path / "data"
    build_dataset(image_folder_sources(folder.root, ImageOptions(store="encoded", progress=False, jobs=1)), directory,
                  BuildOptions(progress=False))
    (example,) = python_blocks(path, "image_size=(224, 224)")
    scope: dict = {"StreamingGenerator": StreamingGenerator}
    exec(example.replace('"data/photos"', repr(str(directory))), scope)  # noqa: S102
    batches = [scope["train"][0][0]] + ([next(iter(scope["test"]))[0].numpy()] if "test" in scope else [])
    for x in batches:
        assert x.dtype == np.float32 and x.shape == (6, 224, 224, 3)
