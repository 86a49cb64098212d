"""Reading raw interactions, items and users, with a data-quality report of every rejected row.

Interactions, items and users come as CSV or Parquet: a `.csv`, `.parquet` or `.pq` file, or a directory of
such files (all of one format). Every input is streamed in record batches through pyarrow, so what is held at
once while reading interactions is one batch (about `CSV_BLOCK_BYTES` of CSV text, or `PARQUET_BATCH_ROWS`
rows of the needed Parquet columns, though Parquet is decoded a row group at a time, whose size the writer
chose) and the kept rows in compact form: 20 bytes a row (user and item ids as int32 codes into one
dictionary of the distinct ids, the int64 timestamp, the float32 rating), plus the distinct ids of at most
`DICTIONARY_MERGE_BATCHES` batches not yet merged into that dictionary. Columns that are not needed are never
read (CSV: never converted). Only at the end are repeats removed and the codes expanded into the string
columns the trainer reads. Items and users are kept whole (their attribute text is the result), but are read
batch by batch too.
"""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_INTERACTION_COLUMNS = ("rating", "event_id")
# Timestamps after now + this much are treated as corrupt.
FUTURE_TOLERANCE_S = 86_400

CSV_SUFFIXES = (".csv",)
PARQUET_SUFFIXES = (".parquet", ".pq")
# One CSV batch is one block of this many bytes of text (about 140k interaction rows of 30 bytes).
CSV_BLOCK_BYTES = 4 << 20
PARQUET_BATCH_ROWS = 1 << 19
# Each kept batch carries its own id dictionary; merging them bounds that overhead.
DICTIONARY_MERGE_BATCHES = 8
# Integers of at most this many digits are read by pyarrow directly; they fit int64 and parse as pandas would.
FAST_INTEGER_DIGITS = 15
# Plain decimals this short convert identically with pyarrow and pandas (both round correctly).
FAST_DECIMAL = r"^[0-9]{1,9}\.[0-9]{1,6}$"
_SECONDS_PER_UNIT = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


class DataError(ValueError):
    """Input that cannot be read at all (missing file, unknown format, missing or mistyped columns)."""


@dataclass
class QualityReport:
    """What happened to the rows of one input file."""

    source: str
    rows_read: int = 0
    rows_kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    unknown_columns: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int | np.integer | float) -> None:
        if count:
            self.rejected[reason] += int(count)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows_read": self.rows_read,
            "rows_kept": self.rows_kept,
            "rejected": dict(sorted(self.rejected.items())),
            "unknown_columns": self.unknown_columns,
        }


@dataclass
class Dataset:
    """Clean inputs: every id a non-empty string, timestamps int64 seconds, attributes strings."""

    interactions: pd.DataFrame  # user_id, item_id, timestamp, rating
    items: pd.DataFrame | None  # item_id + attribute columns
    users: pd.DataFrame | None  # user_id + attribute columns
    quality: list[QualityReport]


# ---------------------------------------------------------------- column types


def _value_type(data_type: pa.DataType) -> pa.DataType:
    return data_type.value_type if pa.types.is_dictionary(data_type) else data_type


def _is_text(data_type: pa.DataType) -> bool:
    data_type = _value_type(data_type)
    return bool(pa.types.is_string(data_type) or pa.types.is_large_string(data_type)) or (data_type == pa.string_view())


def _is_id_type(data_type: pa.DataType) -> bool:
    return _is_text(data_type) or pa.types.is_integer(_value_type(data_type))


def _is_timestamp_type(data_type: pa.DataType) -> bool:
    value = _value_type(data_type)
    return _is_text(value) or any(
        check(value) for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_timestamp, pa.types.is_date)
    )


def _is_rating_type(data_type: pa.DataType) -> bool:
    value = _value_type(data_type)
    return _is_text(value) or any(
        check(value) for check in (pa.types.is_integer, pa.types.is_floating, pa.types.is_decimal)
    )


# What each interaction column may be stored as in Parquet (CSV columns are always text).
_INTERACTION_TYPES = {
    "user_id": (_is_id_type, "text or integer"),
    "item_id": (_is_id_type, "text or integer"),
    "timestamp": (_is_timestamp_type, "integer or float seconds, a timestamp, a date, or text"),
    "rating": (_is_rating_type, "a number or text"),
}


def _decoded(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if isinstance(array, pa.DictionaryArray) else array


def _as_text(array: pa.Array, column: str, source: str) -> pa.Array:
    """Non-null strings without surrounding whitespace: a null is an empty field, as in CSV."""
    array = _decoded(array)
    try:
        text = pc.cast(array, pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as error:
        raise DataError(f"{source}: column {column!r} of type {array.type} cannot be read as text") from error
    # pyarrow's Unicode whitespace is exactly what str.strip() removes.
    return pc.utf8_trim_whitespace(text.fill_null(""))


# ---------------------------------------------------------------- sources


@dataclass
class _Table:
    """One input (a CSV or Parquet file, or a directory of either) that is read in record batches."""

    source: str
    kind: str  # "csv" or "parquet"
    files: list[Path]
    columns: list[str]  # stripped names, first seen first
    csv_headers: dict[Path, list[str]] = field(default_factory=dict)  # raw names, per CSV file
    parquet_schema: pa.Schema | None = None  # over all files of a directory

    def column_type(self, name: str) -> pa.DataType:
        if self.parquet_schema is None:
            return pa.string()
        return self.parquet_schema.field(name).type

    def batches(self, report: QualityReport, columns: Sequence[str] | None = None) -> Iterator[dict[str, pa.Array]]:
        """The wanted columns (all when None) batch by batch, text columns stripped; counts rows read."""
        if self.kind == "csv":
            for path in self.files:
                yield from self._csv_batches(path, report, columns)
        else:
            yield from self._parquet_batches(report, columns)

    def _csv_batches(
        self, path: Path, report: QualityReport, columns: Sequence[str] | None
    ) -> Iterator[dict[str, pa.Array]]:
        header = self.csv_headers[path]
        stripped = [name.strip() for name in header]
        wanted = [raw for raw, name in zip(header, stripped, strict=True) if columns is None or name in columns]
        unparsable = 0

        def count_and_skip(_row: pacsv.InvalidRow) -> str:
            nonlocal unparsable
            unparsable += 1
            return "skip"

        try:
            reader = pacsv.open_csv(
                path,
                read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(invalid_row_handler=count_and_skip),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(header, pa.string()),
                    strings_can_be_null=False,
                    include_columns=wanted,
                ),
            )
            for batch in reader:
                report.rows_read += batch.num_rows
                yield {
                    raw.strip(): pc.utf8_trim_whitespace(batch.column(index))
                    for index, raw in enumerate(batch.schema.names)
                }
        except pa.ArrowInvalid as error:
            raise DataError(f"{path}: {error}") from error
        report.rows_read += unparsable
        report.reject("unparsable_row", unparsable)

    def _parquet_batches(self, report: QualityReport, columns: Sequence[str] | None) -> Iterator[dict[str, pa.Array]]:
        assert self.parquet_schema is not None
        names = [c for c in self.columns if columns is None or c in columns]
        for path in self.files:
            # File by file, batch by batch: pyarrow.dataset's scanner decodes ahead of a slow consumer (here
            # about 500 MB more at peak), where a ParquetFile holds about one row group.
            parquet_file = pq.ParquetFile(path)
            present = [name for name in names if name in parquet_file.schema_arrow.names]
            try:
                for batch in parquet_file.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=present):
                    report.rows_read += batch.num_rows
                    arrays = dict(zip(batch.schema.names, batch.columns, strict=True))
                    yield {
                        # A column that only some files of a directory have is null in the others.
                        name: _as_text(array, name, str(path)) if _is_text(array.type) else array
                        for name in names
                        for array in [arrays.get(name, pa.nulls(batch.num_rows, self.parquet_schema.field(name).type))]
                    }
            except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
                raise DataError(f"{path}: {error}") from error


def _format_of(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    return None


def _data_files(directory: Path) -> list[Path]:
    # Names starting with '.' or '_' are bookkeeping of the tools that write such directories (_SUCCESS, .crc).
    return sorted(
        path
        for path in directory.rglob("*")
        if path.is_file() and not any(part.startswith((".", "_")) for part in path.relative_to(directory).parts)
    )


def _csv_header(path: Path) -> list[str]:
    # utf-8-sig: pyarrow drops a byte-order mark from the first name, so must we.
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    if not header:
        raise DataError(f"{path}: empty file")
    return header


def _open_table(path: Path) -> _Table:
    """The format from the suffix (a directory: its files' suffixes), and the columns, before reading any row."""
    accepted = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    if path.is_dir():
        files = _data_files(path)
        if not files:
            raise DataError(f"{path}: directory holds no data files ({accepted})")
        kinds = {_format_of(file) for file in files}
        if None in kinds:
            odd = sorted({file.name for file in files if _format_of(file) is None})[:5]
            raise DataError(f"{path}: unsupported file(s) {odd} in the directory; expected only {accepted} files")
        if len(kinds) > 1:
            raise DataError(f"{path}: the directory mixes CSV and Parquet files; use one format")
        kind = kinds.pop()
    elif path.is_file():
        files = [path]
        kind = _format_of(path)
        if kind is None:
            raise DataError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r}; expected {accepted}")
    else:
        raise DataError(f"{path}: no such file")

    assert kind is not None
    if kind == "csv":
        headers = {file: _csv_header(file) for file in files}
        columns = list(dict.fromkeys(name.strip() for header in headers.values() for name in header))
        return _Table(str(path), kind, files, columns, csv_headers=headers)
    try:
        schema = pa.unify_schemas([pq.read_schema(file) for file in files])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as error:
        raise DataError(f"{path}: not readable as Parquet: {error}") from error
    # The pandas index, when pandas stored one, is not data.
    index_columns = {c for c in (schema.pandas_metadata or {}).get("index_columns", []) if isinstance(c, str)}
    columns = [name for name in schema.names if name not in index_columns]
    if len(set(columns)) != len(columns):
        raise DataError(f"{path}: duplicated column names {columns}")
    return _Table(str(path), kind, files, columns, parquet_schema=schema)


# ---------------------------------------------------------------- interactions


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """Integer seconds, or anything pandas reads as a date-time; NaN when neither."""
    numeric = pd.to_numeric(values, errors="coerce")
    missing = numeric.isna() & (values != "")
    if missing.any():
        parsed = pd.to_datetime(values[missing], errors="coerce", utc=True, format="mixed")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        numeric.loc[missing] = seconds.astype("float64")
    return numeric


def _plain_integers(text: pa.Array) -> np.ndarray:
    """Where the text is at most 15 ASCII digits: exact in int64 and float64, read alike by pyarrow and pandas."""
    short = pc.less_equal(pc.utf8_length(text), FAST_INTEGER_DIGITS)
    return pc.and_(pc.ascii_is_decimal(text), short).to_numpy(zero_copy_only=False)


def _timestamp_seconds(array: pa.Array) -> np.ndarray:
    """Seconds since the epoch as float64 or int64 (rows that are no time are NaN in float64, 0 in int64)."""
    array = _decoded(array)
    data_type = array.type
    if _is_text(data_type):
        plain = _plain_integers(array)
        if plain.all():
            return pc.cast(array, pa.int64()).to_numpy()
        seconds = np.full(len(array), np.nan)
        if plain.any():
            seconds[plain] = pc.cast(array.filter(pa.array(plain)), pa.int64()).to_numpy()
        # Everything else (negative, fractional, date-time text, garbage) goes the way it always has.
        rest = array.filter(pa.array(~plain)).to_pandas()
        seconds[~plain] = _parse_timestamps(rest).to_numpy(dtype=np.float64, na_value=np.nan)
        return seconds
    if pa.types.is_date32(data_type):
        days = pc.cast(array, pa.int32()).to_numpy(zero_copy_only=False)
        return days.astype(np.float64) * 86_400
    if pa.types.is_timestamp(data_type) or pa.types.is_date64(data_type):
        per_second = _SECONDS_PER_UNIT["ms" if pa.types.is_date64(data_type) else data_type.unit]
        ticks = pc.cast(array, pa.int64()).to_numpy(zero_copy_only=False)
        # Floor, as for date-time text: a moment before the epoch is negative, hence out of range.
        return np.floor_divide(ticks.astype(np.float64), per_second)
    if pa.types.is_integer(data_type) and data_type != pa.uint64() and array.null_count == 0:
        return pc.cast(array, pa.int64()).to_numpy()
    return pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)


def _rating_values(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(ratings as float64, NaN where missing or unreadable; where the rating is missing, i.e. empty or null)."""
    array = _decoded(array)
    if not _is_text(array.type):
        ratings = pc.cast(array, pa.float64()).to_numpy(zero_copy_only=False)
        return ratings, array.is_null().to_numpy(zero_copy_only=False)
    empty = pc.equal(array, "").to_numpy(zero_copy_only=False)
    fast = _plain_integers(array)
    rest = ~fast & ~empty
    if rest.any():
        fast[rest] = pc.match_substring_regex(array.filter(pa.array(rest)), FAST_DECIMAL).to_numpy(zero_copy_only=False)
        rest = ~fast & ~empty
    ratings = np.full(len(array), np.nan)
    if fast.any():
        ratings[fast] = pc.cast(array.filter(pa.array(fast)), pa.float64()).to_numpy()
    if rest.any():
        others = pd.to_numeric(array.filter(pa.array(rest)).to_pandas(), errors="coerce")
        ratings[rest] = others.to_numpy(dtype=np.float64, na_value=np.nan)
    return ratings, empty


def _check_interaction_columns(table_columns: Sequence[str], report: QualityReport) -> list[str]:
    """The columns to read; raises DataError naming what is missing. Records the unknown columns."""
    missing = [c for c in INTERACTION_COLUMNS if c not in table_columns]
    if missing:
        raise DataError(f"{report.source}: missing required column(s) {missing}; have {list(table_columns)}")
    needed = [c for c in table_columns if c in INTERACTION_COLUMNS or c == "rating"]
    doubled = sorted({c for c in needed if needed.count(c) > 1})
    if doubled:
        raise DataError(f"{report.source}: column(s) {doubled} appear more than once")
    report.unknown_columns = [c for c in table_columns if c not in INTERACTION_COLUMNS + OPTIONAL_INTERACTION_COLUMNS]
    return needed


class _InteractionCleaner:
    """Validates interactions batch by batch and keeps the clean rows compactly (dictionary-coded ids)."""

    def __init__(self, report: QualityReport, min_rating: float) -> None:
        self.report = report
        self.min_rating = min_rating
        self.latest = time.time() + FUTURE_TOLERANCE_S
        self.users = _IdCodes()
        self.items = _IdCodes()
        self.timestamps: list[np.ndarray] = []
        self.ratings: list[np.ndarray] = []

    def add(self, columns: Mapping[str, pa.Array]) -> None:
        """One batch: user_id and item_id as text, timestamp and optionally rating as text or numbers."""
        users, items = columns["user_id"], columns["item_id"]
        alive = np.ones(len(users), dtype=bool)

        def drop(reason: str, bad: np.ndarray) -> None:
            bad = alive & bad
            self.report.reject(reason, bad.sum())
            alive[bad] = False

        # Each reason counts only rows still alive, in this order, as the report always has.
        drop("missing_user_id", pc.equal(users, "").to_numpy(zero_copy_only=False))
        drop("missing_item_id", pc.equal(items, "").to_numpy(zero_copy_only=False))
        # Values are parsed only on rows still alive: a row rejected already is never parsed.
        seconds = _scattered(_timestamp_seconds(_alive_only(columns["timestamp"], alive)), alive)
        with np.errstate(invalid="ignore"):
            if seconds.dtype == np.float64:
                drop("bad_timestamp", np.isnan(seconds))
            drop("timestamp_out_of_range", (seconds < 0) | (seconds > self.latest))
            if "rating" in columns:
                ratings, missing = _rating_values(_alive_only(columns["rating"], alive))
                ratings, missing = _scattered(ratings, alive), _scattered(missing, alive)
                drop("bad_rating", np.isnan(ratings) & ~missing)
                # Negative or infinite feedback is corrupt data, not a low rating.
                drop("rating_out_of_range", (ratings < 0) | np.isinf(ratings))
                drop("below_min_rating", ratings < self.min_rating)
                ratings = np.where(missing, 0.0, ratings)
            else:
                ratings = np.zeros(len(users))

        keep = pa.array(alive)
        self.users.add(users.filter(keep))
        self.items.add(items.filter(keep))
        self.timestamps.append(seconds[alive].astype(np.int64))
        self.ratings.append(ratings[alive].astype(np.float32))

    def finish(self) -> pd.DataFrame:
        """The clean frame; repeats of (user, item, timestamp) after the first are rejected across all batches."""
        user_dictionary, user_codes = self.users.finish()
        item_dictionary, item_codes = self.items.finish()
        timestamps = np.concatenate(self.timestamps) if self.timestamps else np.empty(0, np.int64)
        ratings = np.concatenate(self.ratings) if self.ratings else np.empty(0, np.float32)
        self.timestamps, self.ratings = [], []  # the joined copies replace the per-batch pieces
        duplicated = _repeats(user_codes, item_codes, timestamps)
        self.report.reject("duplicate_event", duplicated.sum())
        if duplicated.any():
            kept = ~duplicated
            user_codes, item_codes, timestamps, ratings = (
                user_codes[kept],
                item_codes[kept],
                timestamps[kept],
                ratings[kept],
            )
        columns = {
            "user_id": _expanded(user_dictionary, user_codes),
            "item_id": _expanded(item_dictionary, item_codes),
            "timestamp": timestamps,
            "rating": ratings,
        }
        clean = pd.DataFrame(columns, copy=False)
        self.report.rows_kept = len(clean)
        return clean


def _repeats(user_codes: np.ndarray, item_codes: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Rows whose (user, item, timestamp) came before: candidates share a 64-bit mix, confirmed exactly.

    Sorting one integer column needs one copy of it; a hash table over every row, or comparing the three
    columns (which factorizes each), needs several times that."""
    with np.errstate(over="ignore"):
        mixed = user_codes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        mixed += item_codes.astype(np.uint64)
        mixed *= np.uint64(0xC2B2AE3D27D4EB4F)
        mixed += timestamps.view(np.uint64)
        mixed *= np.uint64(0x165667B19E3779F9)
    ordered = np.sort(mixed)
    shared = np.unique(ordered[1:][ordered[1:] == ordered[:-1]])
    del ordered
    candidates = np.flatnonzero(pd.Series(mixed).isin(shared).to_numpy()) if len(shared) else np.empty(0, np.int64)
    del mixed
    repeats = np.zeros(len(timestamps), dtype=bool)
    if len(candidates):
        keys = pd.DataFrame(
            {"user": user_codes[candidates], "item": item_codes[candidates], "timestamp": timestamps[candidates]}
        )
        repeats[candidates[keys.duplicated(keep="first").to_numpy()]] = True
    return repeats


def _alive_only(array: pa.Array, alive: np.ndarray) -> pa.Array:
    return array if alive.all() else array.filter(pa.array(alive))


def _scattered(values: np.ndarray, alive: np.ndarray) -> np.ndarray:
    """Values of the alive rows back in place; rows not alive get zeros, never looked at."""
    if len(values) == len(alive):
        return values
    full = np.zeros(len(alive), dtype=values.dtype)
    full[alive] = values
    return full


class _IdCodes:
    """Ids as int32 codes into one dictionary that grows batch by batch (new ids are appended to it)."""

    def __init__(self) -> None:
        self.dictionary: pa.Array = pa.array([], pa.string())
        self.codes: list[np.ndarray] = []
        self.pending: list[pa.DictionaryArray] = []  # batches coded against their own small dictionaries

    def add(self, ids: pa.Array) -> None:
        self.pending.append(pc.dictionary_encode(ids))
        # Merging re-hashes the whole dictionary, so it is done for several batches at once.
        if len(self.pending) >= DICTIONARY_MERGE_BATCHES:
            self._merge()

    def _merge(self) -> None:
        if not self.pending:
            return
        known = pa.DictionaryArray.from_arrays(pa.array([], pa.int32()), self.dictionary)
        # The first chunk's dictionary stays a prefix of the unified one, so codes already made stay valid.
        unified = pa.chunked_array([known, *self.pending]).unify_dictionaries()
        self.dictionary = unified.chunk(0).dictionary
        self.codes.extend(chunk.indices.to_numpy(zero_copy_only=False) for chunk in unified.chunks[1:])
        self.pending = []

    def finish(self) -> tuple[pa.Array, np.ndarray]:
        """(the dictionary, every code in row order)."""
        self._merge()
        codes = np.concatenate(self.codes) if self.codes else np.empty(0, np.int32)
        self.codes = []
        return self.dictionary, codes


def _expanded(dictionary: pa.Array, codes: np.ndarray) -> pd.Series:
    # large_string: more than 2 GiB of id text is fine; it is also what pandas' own string columns hold.
    return pc.take(pc.cast(dictionary, pa.large_string()), pa.array(codes)).to_pandas()


def clean_interactions(frame: pd.DataFrame, report: QualityReport, min_rating: float = 0.0) -> pd.DataFrame:
    """An in-memory frame of text (or values read as text) cleaned exactly as files are."""
    needed = _check_interaction_columns([str(c) for c in frame.columns], report)
    cleaner = _InteractionCleaner(report, min_rating)
    cleaner.add({c: pa.array(frame[c].astype(str), pa.string()).fill_null("") for c in needed})
    return cleaner.finish()


def read_interactions(path: Path, min_rating: float = 0.0) -> tuple[pd.DataFrame, QualityReport]:
    """Interactions from a CSV or Parquet file or directory, streamed; see the module docstring for memory."""
    report = QualityReport(str(path))
    table = _open_table(path)
    if len(table.csv_headers) > 1:
        # Each CSV file of a directory has its own header; each must hold the required columns.
        for file, header in table.csv_headers.items():
            _check_interaction_columns([name.strip() for name in header], QualityReport(str(file)))
    needed = _check_interaction_columns(table.columns, report)
    for name in needed:
        accepts, expected = _INTERACTION_TYPES[name]
        if not accepts(table.column_type(name)):
            raise DataError(f"{path}: column {name!r} is {table.column_type(name)}; expected {expected}")
    cleaner = _InteractionCleaner(report, min_rating)
    for batch in table.batches(report, needed):
        for id_column in ("user_id", "item_id"):
            if not _is_text(batch[id_column].type):
                batch[id_column] = _as_text(batch[id_column], id_column, str(path))
        cleaner.add(batch)
    return cleaner.finish(), report


# ---------------------------------------------------------------- items and users


def clean_entities(frame: pd.DataFrame, key: str, report: QualityReport) -> pd.DataFrame:
    """Items or users: a non-empty unique key plus attribute columns, all strings."""
    if key not in frame.columns:
        raise DataError(f"{report.source}: missing required column {key!r}; have {list(frame.columns)}")
    frame = frame.astype(str)
    bad = frame[key] == ""
    report.reject(f"missing_{key}", bad.sum())
    frame = frame[~bad]
    duplicated = frame.duplicated(subset=[key], keep="first")
    report.reject(f"duplicate_{key}", duplicated.sum())
    frame = frame[~duplicated].reset_index(drop=True)
    report.rows_kept = len(frame)
    return frame


def read_entities(path: Path, key: str) -> tuple[pd.DataFrame, QualityReport]:
    """Items or users from a CSV or Parquet file or directory: every column as stripped text."""
    report = QualityReport(str(path))
    table = _open_table(path)
    if key not in table.columns:
        raise DataError(f"{path}: missing required column {key!r}; have {table.columns}")
    parts = []
    for batch in table.batches(report):
        text = {name: _as_text(array, name, str(path)) for name, array in batch.items()}
        parts.append(pa.table(text))
    if parts:
        combined = pa.concat_tables(parts, promote_options="default")
        # A column that only some files of a directory have is empty text in the others.
        columns = {name: combined.column(name).fill_null("") for name in combined.column_names}
        frame = pa.table(columns).to_pandas()
    else:
        frame = pd.DataFrame({name: pd.Series([], dtype="str") for name in table.columns})
    return clean_entities(frame, key, report), report


# The CSV-only names these readers had before they read Parquet too.
read_interactions_csv = read_interactions
read_entities_csv = read_entities


def load_tables(interactions: Path, items: Path | None, users: Path | None, min_rating: float = 0.0) -> Dataset:
    """Interactions plus optional items and users, each a CSV or Parquet file or a directory of them."""
    frame, report = read_interactions(interactions, min_rating)
    quality = [report]
    item_frame = user_frame = None
    if items is not None:
        item_frame, item_report = read_entities(items, "item_id")
        quality.append(item_report)
    if users is not None:
        user_frame, user_report = read_entities(users, "user_id")
        quality.append(user_report)
    return Dataset(frame, item_frame, user_frame, quality)


load_csvs = load_tables


# ---------------------------------------------------------------- MovieLens


def _latin1_lines(path: Path) -> list[str]:
    return [line for line in path.read_bytes().decode("latin-1").splitlines() if line.strip()]


def _split_rows(lines: list[str], sep: str, width: int, report: QualityReport) -> list[list[str]]:
    rows = [line.split(sep) for line in lines]
    good = [row for row in rows if len(row) >= width]
    report.rows_read = len(rows)
    report.reject("unparsable_row", len(rows) - len(good))
    return good


def load_movielens(directory: Path, min_rating: float = 0.0) -> Dataset:
    """The ml-100k (u.data, u.item, u.user) or ml-1m (ratings.dat, movies.dat, users.dat) layout."""
    if (directory / "u.data").is_file():
        return _load_ml100k(directory, min_rating)
    if (directory / "ratings.dat").is_file():
        return _load_ml1m(directory, min_rating)
    raise DataError(f"{directory}: neither u.data (ml-100k) nor ratings.dat (ml-1m) found")


def _load_ml100k(directory: Path, min_rating: float) -> Dataset:
    report = QualityReport(str(directory / "u.data"))
    rows = _split_rows(_latin1_lines(directory / "u.data"), "\t", 4, report)
    raw = pd.DataFrame([r[:4] for r in rows], columns=["user_id", "item_id", "rating", "timestamp"])
    interactions = clean_interactions(raw, report, min_rating)
    quality = [report]

    items = None
    if (directory / "u.item").is_file():
        genre_names = [line.split("|")[0] for line in _latin1_lines(directory / "u.genre")]
        item_report = QualityReport(str(directory / "u.item"))
        records = []
        for fields in _split_rows(_latin1_lines(directory / "u.item"), "|", 5 + len(genre_names), item_report):
            flags = fields[5 : 5 + len(genre_names)]
            genres = "|".join(name for name, flag in zip(genre_names, flags, strict=True) if flag == "1")
            records.append((fields[0], fields[1], genres, fields[2][-4:] if fields[2] else ""))
        frame = pd.DataFrame(records, columns=["item_id", "title", "genres", "year"])
        items = clean_entities(frame, "item_id", item_report)
        quality.append(item_report)

    users = None
    if (directory / "u.user").is_file():
        user_report = QualityReport(str(directory / "u.user"))
        rows = _split_rows(_latin1_lines(directory / "u.user"), "|", 5, user_report)
        frame = pd.DataFrame([r[:5] for r in rows], columns=["user_id", "age", "gender", "occupation", "zip"])
        users = clean_entities(frame, "user_id", user_report)
        quality.append(user_report)
    return Dataset(interactions, items, users, quality)


def _load_ml1m(directory: Path, min_rating: float) -> Dataset:
    report = QualityReport(str(directory / "ratings.dat"))
    rows = _split_rows(_latin1_lines(directory / "ratings.dat"), "::", 4, report)
    raw = pd.DataFrame([r[:4] for r in rows], columns=["user_id", "item_id", "rating", "timestamp"])
    interactions = clean_interactions(raw, report, min_rating)
    quality = [report]
    items = users = None
    if (directory / "movies.dat").is_file():
        item_report = QualityReport(str(directory / "movies.dat"))
        rows = _split_rows(_latin1_lines(directory / "movies.dat"), "::", 3, item_report)
        frame = pd.DataFrame(
            [(r[0], r[1], r[2], r[1].strip()[-5:-1]) for r in rows], columns=["item_id", "title", "genres", "year"]
        )
        items = clean_entities(frame, "item_id", item_report)
        quality.append(item_report)
    if (directory / "users.dat").is_file():
        user_report = QualityReport(str(directory / "users.dat"))
        rows = _split_rows(_latin1_lines(directory / "users.dat"), "::", 5, user_report)
        frame = pd.DataFrame([r[:5] for r in rows], columns=["user_id", "gender", "age", "occupation", "zip"])
        users = clean_entities(frame, "user_id", user_report)
        quality.append(user_report)
    return Dataset(interactions, items, users, quality)
