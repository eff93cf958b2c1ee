"""Command line of ``scripts/build_shards.py``: build MNIST (or any IDX dataset) into shards, or verify.

Exit status: 0 success, 1 a verified dataset has bad shards, 2 bad input or options (the message
names the file and what is wrong; nothing already on disk is touched).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .base.names import display_name
from .errors import InvalidOptionError, StreamloadError
from .format.hdf5.writer import COMPRESSIONS
from .format.manifest import FORMATS, MANIFEST_NAME
from .places.bucket import BucketPlace
from .places.layout import generation_number
from .store.url import is_remote
from .write.build import BuildOptions, build_dataset
from .write.sources.select import add_source_arguments, sources_from_args
from .write.verify import verify_dataset


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="build_shards.py",
        description="Write MNIST, an image folder, NumPy files or a CSV table to verified HDF5 or .npy shards.",
    )
    parser.add_argument("--format", choices=FORMATS, default="npy", help="shard format (default: npy)")
    parser.add_argument("--out", type=_location,
                        help="dataset folder to create (its manifest is OUT/manifest.json), or s3://bucket/prefix: "
                             "built in a temporary folder, then uploaded as a new generation, manifest last")
    parser.add_argument("--shard-size", type=int, help="samples per shard (default: about 64 MB per shard)")
    parser.add_argument("--compression", choices=COMPRESSIONS, help="HDF5 only: compress, stored in chunks")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at --out")
    parser.add_argument("--num-classes", type=int, metavar="N",
                        help="class labels must lie in [0, N) (default: the largest label + 1)")
    parser.add_argument("--pixel-scale", type=_fraction, metavar="S",
                        help="multiply every model input by S when reading, e.g. 1/255 or 1 (default: 1/255 for "
                             "uint8 and 0..255 integers, 1/65535 for uint16 and 0..65535, floats as they are)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="keep NaN and infinity in float arrays (default: refuse the build, naming the sample)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or summary")
    add_source_arguments(parser)
    parser.add_argument("--verify", type=_location, metavar="DIR",
                        help="check every shard of DIR (or s3://bucket/prefix) instead of building")
    parser.add_argument("--upload", type=Path, metavar="DIR",
                        help="upload the existing dataset DIR to --out s3://bucket/prefix (as a new generation)")
    args = parser.parse_args(argv)
    if args.verify is None and args.out is None:
        parser.error("--out DIR is required (or --verify DIR)")
    if args.upload is not None and not is_remote(args.out):
        parser.error("--upload DIR needs --out s3://bucket/prefix")
    return args


def _location(text: str) -> str | Path:
    """A local folder as a Path; ``s3://...`` kept as text (checked when it is used: a bad one exits 2)."""
    return text if is_remote(text) else Path(text)


def _fraction(text: str) -> float:
    """A number or a fraction such as ``1/255``."""
    top, _, bottom = text.partition("/")
    try:
        return float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number or a fraction such as 1/255: {text!r}") from None


def run_verify(directory: str | Path, quiet: bool) -> int:
    if (isinstance(directory, Path) and generation_number(directory.name) is not None
            and (directory.parent / MANIFEST_NAME).is_file()):
        raise InvalidOptionError(f"{directory}: is a generation folder inside a dataset; --verify takes the dataset "
                                 f"folder, which checks its current generation: --verify {directory.parent}")
    problems = verify_dataset(directory, progress=not quiet)
    for problem in problems:
        print(f"BAD {problem}", file=sys.stderr)
    if not problems and not quiet:
        print(f"{directory}: every shard matches its size, header and checksums")
    return 1 if problems else 0


def run_build(args: argparse.Namespace) -> int:
    if args.seed < 0:  # numpy's generators take seeds >= 0: refused before any work, not as a traceback mid-build
        raise InvalidOptionError(f"--seed must be 0 or more, got {args.seed}")
    options = BuildOptions(format=args.format, shard_size=args.shard_size, compression=args.compression,
                           overwrite=args.overwrite, progress=not args.quiet, num_classes=args.num_classes,
                           pixel_scale=args.pixel_scale, allow_nonfinite=args.allow_nonfinite)
    started = time.perf_counter()
    if is_remote(args.out):
        place = BucketPlace(args.out)  # a bad URL is refused before anything is built
        if args.upload is not None:
            manifest = place.publish(args.upload)
        else:
            sources = sources_from_args(args)
            with tempfile.TemporaryDirectory(prefix="streamload-build-") as folder:
                build_dataset(sources, Path(folder) / "dataset", options)
                manifest = place.publish(Path(folder) / "dataset")
        written = f"{args.out}/{manifest.generation}/ and {args.out}/{MANIFEST_NAME}"
    else:
        manifest = build_dataset(sources_from_args(args), args.out, options)
        written = str(args.out / MANIFEST_NAME)
    if not args.quiet:
        seconds = time.perf_counter() - started
        for name, split in manifest.splits.items():
            print(f"{name}: {split.num_samples} samples in {len(split.shards)} {manifest.format} shard(s)")
        print(f"wrote {written} in {seconds:.1f} s")
    return 0


def report(program: str, exc: BaseException) -> int:
    """Print ``exc`` as the one line ``PROGRAM: error: ...`` (h5py's and others' multi-line texts joined); 2.

    Whatever a message quotes (a file name from someone else's dataset, an OS error's path) is escaped
    once more here, so no error line can carry a terminal control sequence.
    """
    lines = (line.strip(" \t") for line in str(exc).split("\n"))  # only newlines join: a \r is escaped below
    text = display_name(" ".join(line for line in lines if line) or type(exc).__name__)
    print(f"{program}: error: {text}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run_verify(args.verify, args.quiet) if args.verify else run_build(args)
    except (StreamloadError, OSError) as exc:  # OSError: e.g. no permission or no space at --out
        return report("build_shards.py", exc)


if __name__ == "__main__":
    sys.exit(main())
