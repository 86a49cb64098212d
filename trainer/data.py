"""Reading raw interactions, items and users, with a data-quality report of every rejected row."""

from __future__ import annotations

import csv
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_INTERACTION_COLUMNS = ("rating", "event_id")
# Timestamps after now + this much are treated as corrupt.
FUTURE_TOLERANCE_S = 86_400


class DataError(ValueError):
    """Input that cannot be read at all (missing file or required columns)."""


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


def _read_csv_strings(path: Path, report: QualityReport) -> pd.DataFrame:
    """Every column as a string; rows with the wrong number of fields are counted, not silently kept or lost."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        header = next(csv.reader(handle), [])
    if not header:
        raise DataError(f"{path}: empty file")
    unparsable = 0

    def count_and_skip(_row: pacsv.InvalidRow) -> str:
        nonlocal unparsable
        unparsable += 1
        return "skip"

    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(invalid_row_handler=count_and_skip),
        convert_options=pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=False
        ),
    )
    frame = table.to_pandas()
    frame.columns = [str(c).strip() for c in frame.columns]
    report.rows_read = len(frame) + unparsable
    report.reject("unparsable_row", unparsable)
    return frame.apply(lambda column: column.str.strip())


def _parse_timestamps(values: pd.Series) -> pd.Series:
    """Integer seconds, or anything pandas reads as a date-time; NaN when neither."""
    numeric = pd.to_numeric(values, errors="coerce")
    missing = numeric.isna() & (values != "")
    if missing.any():
        parsed = pd.to_datetime(values[missing], errors="coerce", utc=True, format="mixed")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
        numeric.loc[missing] = seconds.astype("float64")
    return numeric


def clean_interactions(frame: pd.DataFrame, report: QualityReport, min_rating: float = 0.0) -> pd.DataFrame:
    missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{report.source}: missing required column(s) {missing}; have {list(frame.columns)}")
    report.unknown_columns = [c for c in frame.columns if c not in INTERACTION_COLUMNS + OPTIONAL_INTERACTION_COLUMNS]
    frame = frame.astype({"user_id": str, "item_id": str})

    bad = frame["user_id"] == ""
    report.reject("missing_user_id", bad.sum())
    frame = frame[~bad]
    bad = frame["item_id"] == ""
    report.reject("missing_item_id", bad.sum())
    frame = frame[~bad]

    timestamps = _parse_timestamps(frame["timestamp"].astype(str))
    bad = timestamps.isna()
    report.reject("bad_timestamp", bad.sum())
    frame, timestamps = frame[~bad], timestamps[~bad]
    bad = (timestamps < 0) | (timestamps > time.time() + FUTURE_TOLERANCE_S)
    report.reject("timestamp_out_of_range", bad.sum())
    frame, timestamps = frame[~bad], timestamps[~bad]

    if "rating" in frame.columns:
        ratings = pd.to_numeric(frame["rating"].replace("", np.nan), errors="coerce")
        bad = ratings.isna() & (frame["rating"] != "")
        report.reject("bad_rating", bad.sum())
        # Negative or infinite feedback is corrupt data, not a low rating.
        out_of_range = ~bad & ((ratings < 0) | np.isinf(ratings))
        report.reject("rating_out_of_range", out_of_range.sum())
        bad = bad | out_of_range
        keep = ~bad & ~(ratings < min_rating)
        report.reject("below_min_rating", (~bad & (ratings < min_rating)).sum())
        frame, timestamps, ratings = frame[keep], timestamps[keep], ratings[keep]
        ratings = ratings.fillna(0.0)
    else:
        ratings = pd.Series(0.0, index=frame.index)

    clean = pd.DataFrame(
        {
            "user_id": frame["user_id"].to_numpy(),
            "item_id": frame["item_id"].to_numpy(),
            "timestamp": timestamps.to_numpy().astype(np.int64),
            "rating": ratings.to_numpy().astype(np.float32),
        }
    )
    duplicated = clean.duplicated(subset=["user_id", "item_id", "timestamp"], keep="first")
    report.reject("duplicate_event", duplicated.sum())
    clean = clean[~duplicated].reset_index(drop=True)
    report.rows_kept = len(clean)
    return clean


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


def read_interactions_csv(path: Path, min_rating: float = 0.0) -> tuple[pd.DataFrame, QualityReport]:
    report = QualityReport(str(path))
    return clean_interactions(_read_csv_strings(path, report), report, min_rating), report


def read_entities_csv(path: Path, key: str) -> tuple[pd.DataFrame, QualityReport]:
    report = QualityReport(str(path))
    return clean_entities(_read_csv_strings(path, report), key, report), report


def load_csvs(interactions: Path, items: Path | None, users: Path | None, min_rating: float = 0.0) -> Dataset:
    frame, report = read_interactions_csv(interactions, min_rating)
    quality = [report]
    item_frame = user_frame = None
    if items is not None:
        item_frame, item_report = read_entities_csv(items, "item_id")
        quality.append(item_report)
    if users is not None:
        user_frame, user_report = read_entities_csv(users, "user_id")
        quality.append(user_report)
    return Dataset(frame, item_frame, user_frame, quality)


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
