"""Every module of the package imports only modules of its own layer or of the layers below it: store (object
storage) -> sources -> manifest, writers, build -> readers -> sampler, read hints -> loader -> Keras and tf.data."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "streamload"
LAYERS = [  # lowest first; a module may import from its own layer and any earlier one
    {"errors", "_names", "_process", "_validate", "durable", "options", "procstats", "records", "shardfiles", "specs"},
    {"store"},  # object storage and the shard cache: errors, options and durable writes only
    {"sources"},
    {"manifest", "layout", "labels", "values", "writers", "generations", "staging", "build", "verify", "cli",
     "recordwriter"},
    {"readers", "recordreader", "integrity", "dataset"},
    {"sampler", "readahead", "kernel_hints"},
    {"batching", "loader", "epochs", "resume"},
    {"workers", "generator", "callbacks", "tfdata"},
]
LAYER_OF = {name: number for number, names in enumerate(LAYERS) for name in names}


def top_module(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def imported(path: Path) -> set[str]:
    """The package's own top-level modules that ``path`` imports (relative or absolute)."""
    tree = ast.parse(path.read_text())
    inside_subpackage = path.parent != PACKAGE
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and node.module.startswith("streamload."):
                found.add(node.module.split(".")[1])
            elif node.level == 1 and not inside_subpackage:
                found.update([node.module.split(".")[0]] if node.module else [alias.name for alias in node.names])
            elif node.level == 2 and inside_subpackage and node.module:
                found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("streamload."))
    return found


def test_every_module_has_a_layer() -> None:
    modules = {top_module(path) for path in PACKAGE.rglob("*.py")
               if path.name != "__init__.py" or path.parent != PACKAGE}
    assert modules <= set(LAYER_OF), f"modules without a layer: {sorted(modules - set(LAYER_OF))}"


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE and path.name == "__init__.py":
            continue  # the package's lazy front door names everything
        own = LAYER_OF[top_module(path)]
        upward += [f"{path.relative_to(PACKAGE)} -> {name}" for name in imported(path)
                   if name in LAYER_OF and LAYER_OF[name] > own]
    assert not upward, "imports that reach up a layer:\n" + "\n".join(sorted(upward))
