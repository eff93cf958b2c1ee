"""Every module of the package imports only modules of its own layer or of the layers below it:
errors, options -> base -> store (object storage) -> format -> images -> places -> write -> read -> adapters -> the CLI
and the package's front door.
Inside format, write and read, the same holds for their own steps (e.g. format: specs and the manifest ->
shared reader and writer code -> one folder per format -> the dispatch by format name)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamload"
LAYERS = [  # lowest first; a module may import from its own layer and any earlier one
    {"errors", "options"},
    {"base"},
    {"store"},  # object storage and the shard cache: errors, options and the base helpers only
    {"format"},
    {"images"},
    {"places"},  # where a dataset lives: a local folder of generations or a bucket (manifest, leases, publishing)
    {"write"},
    {"read"},
    {"adapters"},
    {"cli", "__init__"},
]
STEPS = {  # the same inside a subpackage, by its modules and folders, lowest first
    "format": [{"specs", "records", "shardfiles", "manifest", "labels"}, {"reader", "writer", "ragged"},
               {"npy", "hdf5"}, {"dispatch"}],
    "places": [{"protocol", "layout"}, {"generations"}, {"local", "bucket"}, {"dispatch"}],
    "write": [{"sources"}, {"values", "staging", "verify", "build"}],
    "read": [{"remote", "file_watch"}, {"integrity", "dataset"}, {"sampler", "readahead", "kernel_hints"}, {"padding"},
             {"decoding", "batching", "loader", "epochs", "resume"}],
}
LAYER_OF = {name: number for number, names in enumerate(LAYERS) for name in names}
STEP_OF = {package: {name: number for number, names in enumerate(steps) for name in names}
           for package, steps in STEPS.items()}
FRONT_DOOR_CONSTANTS = {"__version__"}  # the package's own attributes a module may import (nothing loads for them)


def module_parts(path: Path) -> tuple[str, ...]:
    """``streamload/format/npy/reader.py`` -> ("format", "npy", "reader"); a subpackage's __init__ -> its name;
    the package's own __init__ -> ("__init__",)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return parts


def layer(parts: tuple[str, ...]) -> tuple[int, int] | None:
    """(layer, step inside its subpackage) of a module given by its parts below streamload, None if it has none."""
    if not parts or parts[0] not in LAYER_OF:
        return None
    steps = STEP_OF.get(parts[0])
    if steps is None:
        return LAYER_OF[parts[0]], 0
    if len(parts) == 1:  # the subpackage's __init__ (a docstring): beneath its own modules
        return LAYER_OF[parts[0]], -1
    return (LAYER_OF[parts[0]], steps[parts[1]]) if parts[1] in steps else None


def imported(source: str, own: tuple[str, ...]) -> set[tuple[str, ...]]:
    """The package's own modules that ``source``, the module at ``own`` (its path's parts below streamload), imports
    (relative or absolute), as parts below streamload."""
    package = own[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            module = node.module.split(".") if node.module else []
            if node.level:
                found |= _targets(package[:len(package) - (node.level - 1)], module, node.names)
            elif module[:1] == ["streamload"]:
                found |= _targets((), module[1:], node.names)
        elif isinstance(node, ast.Import):
            found |= {tuple(alias.name.split(".")[1:]) for alias in node.names if alias.name.startswith("streamload.")}
    return found


def _targets(base: tuple[str, ...], module: list[str], names: list[ast.alias]) -> set[tuple[str, ...]]:
    if module:
        return {(*base, *module)}
    found = set()
    for alias in names:  # ``from . import x``: x is a module, or an attribute of the package
        candidate = (*base, alias.name)
        if PACKAGE.joinpath(*candidate).with_suffix(".py").exists() or PACKAGE.joinpath(*candidate).is_dir():
            found.add(candidate)
        elif base:
            found.add(base)
        elif alias.name not in FRONT_DOOR_CONSTANTS:
            found.add(("__init__",))  # a public name through the front door: the top layer
    return found


def upward(source: str, own: tuple[str, ...]) -> list[str]:
    """The imports of ``source`` (the module at ``own``) that reach a layer, or a step of its subpackage, above
    its own."""
    mine = layer(module_parts(PACKAGE.joinpath(*own)))
    reached = []
    for target in imported(source, own):
        theirs = layer(target)
        same_subpackage = theirs is not None and theirs[0] == mine[0] and target[0] == own[0]
        if theirs is not None and (theirs[0] > mine[0] or (same_subpackage and theirs[1] > mine[1])):
            reached.append(f"{'/'.join(own)} -> {'.'.join(target)}")
    return reached


def test_every_module_has_a_layer() -> None:
    modules = {module_parts(path) for path in PACKAGE.rglob("*.py")}
    without = sorted("/".join(parts) for parts in modules if layer(parts) is None)
    assert not without, f"modules without a layer: {without}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    reached = []
    for path in PACKAGE.rglob("*.py"):
        reached += upward(path.read_text(), path.relative_to(PACKAGE).with_suffix(".py").parts)
    assert not reached, "imports that reach up a layer:\n" + "\n".join(sorted(reached))


def test_the_check_sees_imports_that_reach_up() -> None:
    """Relative, absolute and front-door imports above a module's layer, or above its step, are all caught."""
    source = ("from ..read.dataset import ShardedDataset\nfrom .dispatch import make_writer\n"
              "import streamload.adapters.tfdata\nfrom .. import StreamingGenerator, __version__\n"
              "from .npy import reader\nfrom ..errors import ShardFormatError\nfrom .specs import ArraySpec\n")
    assert sorted(upward(source, ("format", "reader.py"))) == [
        "format/reader.py -> __init__", "format/reader.py -> adapters.tfdata", "format/reader.py -> format.dispatch",
        "format/reader.py -> format.npy", "format/reader.py -> read.dataset"]
