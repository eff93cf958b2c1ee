"""Tests for streamload.write.sources.tables: CSV files written here, built into real shards and read back;
features exact as float32, labels as integers, floats or class names; errors name line and column."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from conftest import read_split

from streamload.errors import InvalidOptionError, LabelRangeError, SourceFormatError
from streamload.write.build import BuildOptions, build_dataset
from streamload.write.sources import CsvSource, csv_sources, split_validation

RNG = np.random.default_rng(0)


def _table(rows: int, features: int = 3) -> np.ndarray:
    return RNG.standard_normal((rows, features)).astype(np.float32)


def _write(path: Path, header: list[str] | None, columns: list[list[str]], *, delimiter: str = ",",
           newline: str = "\n") -> Path:
    lines = ([delimiter.join(header)] if header else []) + [delimiter.join(row) for row in zip(*columns)]
    text = newline.join(lines) + newline
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def _numbers(values: np.ndarray) -> list[str]:
    return [repr(float(v)) for v in values]  # float32 -> shortest float64 text -> parses back to the same float32


def _round_trip(source: CsvSource, out: Path) -> dict[str, np.ndarray]:
    build_dataset({"train": source}, out, BuildOptions(progress=False, shard_size=11))
    return read_split(out, "train")


@pytest.mark.parametrize("chunk_rows", [1, 7, 8192])
def test_header_with_integer_labels_round_trips(tmp_path: Path, chunk_rows: int) -> None:
    x, y = _table(50), RNG.integers(0, 10, 50)
    path = _write(tmp_path / "t.csv", ["a", "label", "b", "c"],
                  [_numbers(x[:, 0]), [str(v) for v in y], _numbers(x[:, 1]), _numbers(x[:, 2])])
    source = CsvSource(path)
    assert source.has_header and source.columns == ["a", "label", "b", "c"] and source.label_index == 1
    assert source.num_samples == 50 and source.label_kind == "integer"
    assert source.specs["x"].dtype == "<f4" and source.specs["x"].shape == (3,) and source.specs["y"].dtype == "|u1"
    chunks = list(source.iter_chunks(chunk_rows))
    assert all(len(chunk["x"]) <= chunk_rows for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate([c["x"] for c in chunks]), x)
    back = _round_trip(source, tmp_path / "ds")
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["y"], y)


def test_class_names_become_sorted_class_indices(tmp_path: Path) -> None:
    x = _table(30, 2)
    names = np.array(["versicolor", "setosa", "virginica"])[RNG.integers(0, 3, 30)]
    path = _write(tmp_path / "iris.csv", None, [_numbers(x[:, 0]), _numbers(x[:, 1]), list(names)])
    source = CsvSource(path)  # no header: the first row has a name only where the second row has one too
    assert not source.has_header and source.label_index == 2 and source.label_kind == "name"
    assert source.class_names == ("setosa", "versicolor", "virginica") and source.num_classes == 3
    back = _round_trip(source, tmp_path / "ds")
    np.testing.assert_array_equal(back["y"], [source.class_names.index(name) for name in names])
    np.testing.assert_array_equal(back["x"], x)


def test_float_and_negative_targets(tmp_path: Path) -> None:
    x, target, offset = _table(20, 1), _table(20, 1)[:, 0], RNG.integers(-300, 3, 20)
    path = _write(tmp_path / "r.csv", ["x", "price", "delta"],
                  [_numbers(x[:, 0]), _numbers(target), [str(v) for v in offset]])
    regression = CsvSource(path, label_column="price")
    assert regression.label_kind == "float" and regression.specs["y"].dtype == "<f4"
    np.testing.assert_array_equal(_round_trip(regression, tmp_path / "a")["y"], target)
    signed = CsvSource(path, label_column=-1)
    assert signed.label_kind == "integer" and signed.specs["y"].dtype == "<i2"  # -300..2 needs int16
    # integer scalars are class labels, so negative ones are refused at build, naming the file and sample
    refused = r"r\.csv.*label -?\d+ at sample \d+ lies outside.*store the targets as floats"
    with pytest.raises(LabelRangeError, match=refused):
        _round_trip(signed, tmp_path / "b")
    assert not (tmp_path / "b").exists()


def test_tsv_gzip_bom_crlf_quotes_and_blank_lines(tmp_path: Path) -> None:
    x = _table(6, 2)
    body = "\ufeff" + "f1\tf2\tlabel\r\n" + "\r\n".join(
        f'"{a!r}"\t{b!r}\t{label}' + ("\r\n" if row == 2 else "")
        for row, (a, b, label) in enumerate(zip(x[:, 0].tolist(), x[:, 1].tolist(), range(6)))) + "\r\n"
    path = tmp_path / "t.tsv.gz"
    path.write_bytes(gzip.compress(body.encode()))
    source = CsvSource(path)
    assert source.columns == ["f1", "f2", "label"] and source.num_samples == 6
    back = _round_trip(source, tmp_path / "ds")
    np.testing.assert_array_equal(back["x"], x)
    np.testing.assert_array_equal(back["y"], np.arange(6))


def test_bad_fields_are_named_by_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("a,b,label\n1,2,0\n\n3,oops,1\n")
    with pytest.raises(SourceFormatError, match=r"bad.csv:4: column 'b': 'oops' is not a number"):
        list(CsvSource(path).iter_chunks())
    path.write_text("a,b,label\n1,2,0\n3,1\n")
    with pytest.raises(SourceFormatError, match="bad.csv:3: has 2 fields, the header has 3"):
        CsvSource(path)
    path.write_text("a,b,label\n1,2,0\n3,4,\n")
    with pytest.raises(SourceFormatError, match="bad.csv:3: the label field is empty"):
        CsvSource(path)
    path.write_text("a,b,label\n")
    with pytest.raises(SourceFormatError, match="has a header but no rows"):
        CsvSource(path)
    with pytest.raises(InvalidOptionError, match="no column 'price' for --label-column; its 3 columns are a, b"):
        CsvSource(path, label_column="price")


def test_validation_split_of_a_table(tmp_path: Path) -> None:
    x = _table(90, 2)
    path = _write(tmp_path / "t.csv", ["a", "b", "label"], [_numbers(x[:, 0]), _numbers(x[:, 1]),
                                                           [str(i) for i in range(90)]])
    sources = split_validation(csv_sources(path), 0.1, seed=0)
    build_dataset(sources, tmp_path / "ds", BuildOptions(progress=False))
    train, validation = read_split(tmp_path / "ds", "train"), read_split(tmp_path / "ds", "validation")
    assert len(validation["y"]) == 9 and sorted([*train["y"], *validation["y"]]) == list(range(90))
    np.testing.assert_array_equal(validation["x"], x[validation["y"]])


@pytest.mark.parametrize("text,line", [
    ('a,b,label\n1,2,0\n3,"4,1\n5,6,1\n', 3),  # the quote hides no delimiter: the row looks 3 wide
    ('a,b,label\n1,"2,0\n', 2),
    ('a,"b,label\n1,2,0\n', 1),
], ids=["middle", "last-row", "header"])
def test_an_unterminated_quote_is_one_line_naming_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "open.csv"
    path.write_text(text)
    with pytest.raises(SourceFormatError, match=rf"^{path}:{line}: not a valid CSV row: unexpected end of data$"):
        list(CsvSource(path).iter_chunks())


def test_a_field_over_the_csv_modules_limit_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text('a,b,label\n1,2,0\n3,"' + "9," * 100_000 + '",1\n')  # 200 kB in one quoted field
    with pytest.raises(SourceFormatError, match=rf"^{path}:3: not a valid CSV row: field larger than field limit"):
        list(CsvSource(path).iter_chunks())


def test_an_endless_line_is_refused_without_reading_it_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamload.write.sources import tables

    monkeypatch.setattr(tables, "MAX_LINE_CHARS", 1000)  # the real limit (64 Mi characters) at a test's size
    path = tmp_path / "long.csv"
    path.write_text("a,b,label\n1,2,0\n" + "7" * 5000 + ",2,1\n")
    with pytest.raises(SourceFormatError, match=rf"^{path}:3: line is longer than 1000 characters"):
        list(CsvSource(path).iter_chunks())


@pytest.mark.parametrize("row,column,text", [("1e400,2,0", "a", "1e400"), ("1,-4e38,0", "b", "-4e38"),
                                             ("1,2, 1e400", "label", "1e400")])
def test_numbers_that_overflow_float32_are_refused_by_line_and_column(tmp_path: Path, row: str, column: str,
                                                                      text: str) -> None:
    path = tmp_path / "big.csv"
    path.write_text(f"a,b,label\nnan,2,0.5\n{row}\n")  # the literal nan before it is no overflow
    with pytest.raises(SourceFormatError, match=rf"^{path}:3: column '{column}': '{text}' overflows float32"):
        list(CsvSource(path).iter_chunks())


def test_literal_nan_and_inf_fields_reach_the_builds_own_check(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    path.write_text("a,b,label\n1,nan,0\n-inf,2,1\n")
    chunk = next(CsvSource(path).iter_chunks())
    assert np.isnan(chunk["x"][0, 1]) and chunk["x"][1, 0] == -np.inf
    build_dataset({"train": CsvSource(path)}, tmp_path / "ds", BuildOptions(progress=False, allow_nonfinite=True))
    np.testing.assert_array_equal(read_split(tmp_path / "ds", "train")["x"], chunk["x"])
