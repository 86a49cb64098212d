"""trainer/data.py: reading raw CSV, Parquet and MovieLens, and the data-quality report of every rejected row."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import trainer.data
from services.launcher.cli import _load_dataset
from trainer.data import (
    DataError,
    QualityReport,
    load_csvs,
    load_movielens,
    load_tables,
    read_entities,
    read_entities_csv,
    read_interactions,
    read_interactions_csv,
)

ML100K = Path("/work/shared/data/ml-100k")

# 2021-03-04T05:06:07Z, in seconds since the epoch.
ISO_SECONDS = 1_614_834_367

MALFORMED_INTERACTIONS = """\
user_id,item_id,timestamp,rating,source
u1,i1,1000,4,web
u1,i2,1001,5,web
u1,i3,1002,,app
u1,i4,1003,4,web,SURPLUS
u2,i9,1004,3,web,SURPLUS,MORE
,i1,1005,3,web
u2,,1006,3,web
u2,i1,not-a-time,3,web
u2,i2,,3,web
u2,i3,-5,3,web
u2,i4,99999999999,3,web
u3,i1,1007,great,web
u1,i1,1000,4,web

u1,i1,1000,4,web
u4,i1,2021-03-04T05:06:07Z,4,web
u4,i2,2021-03-04 05:06:08,2,web
u4,i3,2021-03-04T06:06:09+01:00,1,web
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def malformed(tmp_path: Path) -> tuple[pd.DataFrame, QualityReport]:
    return read_interactions_csv(write(tmp_path / "interactions.csv", MALFORMED_INTERACTIONS))


def test_rejected_rows_are_counted_per_reason(malformed: tuple[pd.DataFrame, QualityReport]) -> None:
    _, report = malformed
    assert dict(report.rejected) == {
        "unparsable_row": 2,
        "missing_user_id": 1,
        "missing_item_id": 1,
        "bad_timestamp": 2,
        "timestamp_out_of_range": 2,
        "bad_rating": 1,
        "duplicate_event": 2,
    }
    # The blank line is no row; every other data line is read.
    assert report.rows_read == 17
    assert report.rows_kept == 6
    assert report.rows_read == report.rows_kept + sum(report.rejected.values())
    assert report.unknown_columns == ["source"]


def test_cleaned_frame_values_and_dtypes(malformed: tuple[pd.DataFrame, QualityReport]) -> None:
    clean, _ = malformed
    assert list(clean.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert pd.api.types.is_string_dtype(clean["user_id"])
    assert pd.api.types.is_string_dtype(clean["item_id"])
    assert clean["timestamp"].dtype == np.int64
    assert clean["rating"].dtype == np.float32
    assert clean["user_id"].tolist() == ["u1", "u1", "u1", "u4", "u4", "u4"]
    assert clean["item_id"].tolist() == ["i1", "i2", "i3", "i1", "i2", "i3"]
    # ISO date-times parse (naive means UTC; an offset is honoured).
    assert clean["timestamp"].tolist() == [1000, 1001, 1002, ISO_SECONDS, ISO_SECONDS + 1, ISO_SECONDS + 2]
    # An empty rating is kept as 0.
    assert clean["rating"].tolist() == [4.0, 5.0, 0.0, 4.0, 2.0, 1.0]
    assert clean.index.tolist() == list(range(6))


def test_report_to_dict(malformed: tuple[pd.DataFrame, QualityReport]) -> None:
    _, report = malformed
    payload = report.to_dict()
    assert payload["rows_read"] == 17
    assert payload["rows_kept"] == 6
    assert list(payload["rejected"]) == sorted(payload["rejected"])
    assert payload["rejected"]["duplicate_event"] == 2
    assert payload["unknown_columns"] == ["source"]
    assert payload["source"].endswith("interactions.csv")


def test_min_rating_drops_low_ratings(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp,rating\nu1,i1,1,1\nu1,i2,2,3.5\nu1,i3,3,5\nu1,i4,4,\n")
    clean, report = read_interactions_csv(path, min_rating=3.0)
    assert clean["item_id"].tolist() == ["i2", "i3", "i4"]
    assert dict(report.rejected) == {"below_min_rating": 1}


def test_rating_column_is_optional(tmp_path: Path) -> None:
    clean, report = read_interactions_csv(write(tmp_path / "i.csv", "item_id,user_id,timestamp\ni1,u1,5\ni2,u2,6\n"))
    assert clean["user_id"].tolist() == ["u1", "u2"]
    assert clean["rating"].tolist() == [0.0, 0.0]
    assert report.rows_kept == 2
    assert not report.rejected
    assert report.unknown_columns == []


def test_whitespace_around_fields_is_stripped(tmp_path: Path) -> None:
    clean, _ = read_interactions_csv(write(tmp_path / "i.csv", "user_id , item_id,timestamp\n u1 ,i1 , 7 \n"))
    assert clean.loc[0, "user_id"] == "u1"
    assert clean.loc[0, "item_id"] == "i1"
    assert clean.loc[0, "timestamp"] == 7


@pytest.mark.parametrize("missing", ["user_id", "item_id", "timestamp"])
def test_missing_required_column_is_named(tmp_path: Path, missing: str) -> None:
    columns = [c for c in ("user_id", "item_id", "timestamp", "rating") if c != missing]
    values = {"user_id": "u1", "item_id": "i1", "timestamp": "1", "rating": "4"}
    path = write(tmp_path / "i.csv", ",".join(columns) + "\n" + ",".join(values[c] for c in columns) + "\n")
    with pytest.raises(DataError, match=missing):
        read_interactions_csv(path)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        read_interactions_csv(tmp_path / "absent.csv")


def test_surplus_field_in_first_row_rejects_only_that_row(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp\nu1,i1,1000,SURPLUS\nu1,i2,1001\nu2,i1,1002\n")
    clean, report = read_interactions_csv(path)
    assert dict(report.rejected) == {"unparsable_row": 1}
    assert clean["user_id"].tolist() == ["u1", "u2"]
    assert clean["item_id"].tolist() == ["i2", "i1"]


def test_row_with_too_few_fields_is_unparsable(tmp_path: Path) -> None:
    path = write(tmp_path / "i.csv", "user_id,item_id,timestamp,rating\nu1,i1,1000,4\nu1,i2,1001\nu2,i3\n")
    clean, report = read_interactions_csv(path)
    assert dict(report.rejected) == {"unparsable_row": 2}
    assert clean["item_id"].tolist() == ["i1"]


# ---------------------------------------------------------------- items and users


def test_items_duplicate_and_missing_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "items.csv",
        "item_id,title,genres\ni1,Alpha,drama\ni2,Beta,\n,Nameless,comedy\ni1,Alpha again,horror\n"
        "i3,Gamma,scifi,SURPLUS\n  ,Blank,drama\ni4,Delta,action|comedy\n",
    )
    frame, report = read_entities_csv(path, "item_id")
    assert dict(report.rejected) == {"missing_item_id": 2, "duplicate_item_id": 1, "unparsable_row": 1}
    assert report.rows_read == 7
    assert report.rows_kept == 3
    assert frame["item_id"].tolist() == ["i1", "i2", "i4"]
    # The first of duplicated keys wins; attributes stay strings.
    assert frame["title"].tolist() == ["Alpha", "Beta", "Delta"]
    assert frame["genres"].tolist() == ["drama", "", "action|comedy"]


def test_entity_without_key_column(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="user_id"):
        read_entities_csv(write(tmp_path / "users.csv", "id,age\nu1,30\n"), "user_id")


def test_load_csvs_collects_every_report(tmp_path: Path) -> None:
    interactions = write(tmp_path / "i.csv", "user_id,item_id,timestamp\nu1,i1,1\nu2,i1,2\n")
    items = write(tmp_path / "items.csv", "item_id,title\ni1,One\ni1,Dup\n")
    users = write(tmp_path / "users.csv", "user_id,country\nu1,de\n,fr\nu2,it\n")
    dataset = load_csvs(interactions, items, users)
    assert len(dataset.interactions) == 2
    assert dataset.items is not None and dataset.items["item_id"].tolist() == ["i1"]
    assert dataset.users is not None and dataset.users["user_id"].tolist() == ["u1", "u2"]
    assert [q.source for q in dataset.quality] == [str(interactions), str(items), str(users)]
    assert dict(dataset.quality[1].rejected) == {"duplicate_item_id": 1}
    assert dict(dataset.quality[2].rejected) == {"missing_user_id": 1}

    only = load_csvs(interactions, None, None)
    assert only.items is None and only.users is None
    assert len(only.quality) == 1


# ---------------------------------------------------------------- MovieLens


def test_load_movielens_rejects_unknown_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"u\.data"):
        load_movielens(tmp_path)


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens ml-100k not present at {ML100K}")
def test_load_movielens_100k() -> None:
    dataset = load_movielens(ML100K)
    interactions = dataset.interactions
    assert len(interactions) == 100_000
    assert interactions["user_id"].nunique() == 943
    assert interactions["item_id"].nunique() == 1682
    assert interactions["timestamp"].dtype == np.int64
    assert interactions["rating"].dtype == np.float32
    assert set(interactions["rating"].unique()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    first = interactions.iloc[0]
    assert (first["user_id"], first["item_id"], first["timestamp"], first["rating"]) == ("196", "242", 881250949, 3.0)

    assert dataset.items is not None and dataset.users is not None
    assert len(dataset.items) == 1682
    assert len(dataset.users) == 943
    toy_story = dataset.items.set_index("item_id").loc["1"]
    assert toy_story["genres"] == "Animation|Children's|Comedy"
    assert toy_story["title"] == "Toy Story (1995)"
    assert toy_story["year"] == "1995"
    user = dataset.users.set_index("user_id").loc["1"]
    assert (user["age"], user["gender"], user["occupation"]) == ("24", "M", "technician")

    assert [q.rows_kept for q in dataset.quality] == [100_000, 1682, 943]
    assert all(not q.rejected for q in dataset.quality)


@pytest.mark.skipif(not (ML100K / "u.data").is_file(), reason=f"MovieLens ml-100k not present at {ML100K}")
def test_load_movielens_min_rating() -> None:
    dataset = load_movielens(ML100K, min_rating=4.0)
    assert dataset.interactions["rating"].min() == 4.0
    report = dataset.quality[0]
    assert report.rows_read == 100_000
    assert report.rows_kept == len(dataset.interactions)
    assert report.rejected["below_min_rating"] == 100_000 - len(dataset.interactions) > 0


def test_load_movielens_1m_layout(tmp_path: Path) -> None:
    """The ml-1m layout ('::'-separated, latin-1), written here in miniature with one malformed line."""
    (tmp_path / "ratings.dat").write_bytes(b"1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n2::oops\n")
    (tmp_path / "movies.dat").write_bytes(
        "10::GoldenEye (1995)::Action|Adventure|Thriller\n20::Amélie (2001)::Comedy|Romance\n".encode("latin-1")
    )
    (tmp_path / "users.dat").write_bytes(b"1::F::1::10::48067\n2::M::56::16::70072\n")
    dataset = load_movielens(tmp_path)
    assert len(dataset.interactions) == 3
    assert dataset.quality[0].rejected == {"unparsable_row": 1}
    assert dataset.items is not None and dataset.users is not None
    amelie = dataset.items.set_index("item_id").loc["20"]
    assert (amelie["title"], amelie["genres"], amelie["year"]) == ("Amélie (2001)", "Comedy|Romance", "2001")
    assert dataset.users.set_index("user_id").loc["2", "age"] == "56"


def test_negative_and_infinite_ratings_are_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("user_id,item_id,timestamp,rating\nu1,i1,1000,4\nu1,i2,1001,-1\nu2,i1,1002,inf\nu2,i3,1003,0\n")
    frame, report = read_interactions_csv(path)
    assert report.rejected == {"rating_out_of_range": 2}
    assert frame["item_id"].tolist() == ["i1", "i3"]


# ---------------------------------------------------------------- Parquet and directories

CLEAN_INTERACTIONS = "user_id,item_id,timestamp,rating\n" + "".join(
    f"u{n % 7},i{n % 11},{1_600_000_000 + n * 37},{n % 5 + 1}\n" for n in range(300)
)
ITEMS = "item_id,title,genres\n" + "".join(f"i{n},Title {n},genre{n % 3}\n" for n in range(11))
USERS = "user_id,country\n" + "".join(f"u{n},c{n % 2}\n" for n in range(7))


def csv_as_parquet(csv_path: Path, out: Path, parts: int = 1, row_group_size: int | None = None) -> Path:
    """The CSV's text columns as Parquet: one file, or a directory of `parts` files in row order."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if parts == 1:
        pq.write_table(table, out, row_group_size=row_group_size)
        return out
    out.mkdir()
    bounds = np.linspace(0, len(frame), parts + 1).astype(int)
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        pq.write_table(table.slice(start, stop - start), out / f"part-{index:03d}.parquet")
    (out / "_SUCCESS").write_text("")  # writers' bookkeeping is not data
    return out


def assert_same_dataset(left: trainer.data.Dataset, right: trainer.data.Dataset) -> None:
    pd.testing.assert_frame_equal(left.interactions, right.interactions)
    for mine, theirs in ((left.items, right.items), (left.users, right.users)):
        assert (mine is None) == (theirs is None)
        if mine is not None and theirs is not None:
            pd.testing.assert_frame_equal(mine, theirs)
    for mine_report, their_report in zip(left.quality, right.quality, strict=True):
        assert {**mine_report.to_dict(), "source": ""} == {**their_report.to_dict(), "source": ""}


@pytest.fixture
def clean_csvs(tmp_path: Path) -> dict[str, Path]:
    # Repeated rows make duplicate events to reject.
    return {
        "interactions": write(tmp_path / "interactions.csv", CLEAN_INTERACTIONS + "u1,i1,1600000037,2\n" * 3),
        "items": write(tmp_path / "items.csv", ITEMS + "i1,Again,x\n"),
        "users": write(tmp_path / "users.csv", USERS),
    }


@pytest.mark.parametrize("parts", [1, 3])
def test_parquet_file_and_directory_give_the_csv_dataset(
    clean_csvs: dict[str, Path], tmp_path: Path, parts: int
) -> None:
    from_csv = load_tables(clean_csvs["interactions"], clean_csvs["items"], clean_csvs["users"])
    suffix = ".parquet" if parts == 1 else ""
    parquet = {
        name: csv_as_parquet(path, tmp_path / f"{name}{suffix or '.d'}", parts, row_group_size=40)
        for name, path in clean_csvs.items()
    }
    from_parquet = load_tables(parquet["interactions"], parquet["items"], parquet["users"])
    assert_same_dataset(from_parquet, from_csv)
    assert from_parquet.quality[0].rejected == {"duplicate_event": 3}
    assert from_parquet.quality[0].source == str(parquet["interactions"])


def test_small_batches_give_the_same_rows_in_the_same_order(
    clean_csvs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = load_tables(clean_csvs["interactions"], clean_csvs["items"], None)
    parquet = csv_as_parquet(clean_csvs["interactions"], tmp_path / "i.pq", row_group_size=50)
    # Many batches and dictionary merges; duplicates across batches are still found.
    monkeypatch.setattr(trainer.data, "CSV_BLOCK_BYTES", 512)
    monkeypatch.setattr(trainer.data, "PARQUET_BATCH_ROWS", 16)
    monkeypatch.setattr(trainer.data, "DICTIONARY_MERGE_BATCHES", 3)
    assert_same_dataset(load_tables(clean_csvs["interactions"], clean_csvs["items"], None), whole)
    assert_same_dataset(load_tables(parquet, clean_csvs["items"], None), whole)


def test_malformed_text_parquet_is_counted_like_the_csv(tmp_path: Path) -> None:
    """The malformed CSV's parsable rows as Parquet text: the same rejects, less the unparsable rows."""
    csv_path = write(tmp_path / "interactions.csv", MALFORMED_INTERACTIONS)
    csv_frame, csv_report = read_interactions_csv(csv_path)
    rows = [line.split(",") for line in MALFORMED_INTERACTIONS.splitlines() if line]
    parsable = pd.DataFrame([row for row in rows[1:] if len(row) == len(rows[0])], columns=rows[0])
    parquet_path = tmp_path / "interactions.parquet"
    parsable.to_parquet(parquet_path, index=False)
    frame, report = read_interactions(parquet_path)
    pd.testing.assert_frame_equal(frame, csv_frame)
    expected = dict(csv_report.rejected)
    del expected["unparsable_row"]
    assert dict(report.rejected) == expected
    assert (report.rows_read, report.rows_kept) == (csv_report.rows_read - 2, csv_report.rows_kept)
    assert report.unknown_columns == ["source"]


def test_typed_parquet_nulls_nan_and_negative_values_are_rejected(tmp_path: Path) -> None:
    table = pa.table(
        {
            "user_id": pa.array(["u1", None, "u2", "u2", "u3", "u3", "u3", " u4 ", "u4"]),
            "item_id": pa.array([1, 2, 3, 4, 5, 6, 7, 8, None], pa.int64()),
            "timestamp": pa.array([1000, 1001, None, 1003, 1004, 1005, 1006, -1, 1008], pa.int64()),
            "rating": pa.array([4.5, 4.0, 4.0, float("nan"), -1.0, float("inf"), None, 3.0, 3.0]),
            "session": pa.array(["a"] * 9),
        }
    )
    path = tmp_path / "typed.pq"
    pq.write_table(table, path)
    frame, report = read_interactions(path)
    assert dict(report.rejected) == {
        "missing_user_id": 1,
        "missing_item_id": 1,
        "bad_timestamp": 1,
        "timestamp_out_of_range": 1,
        "bad_rating": 1,  # NaN, as the text "nan" is in CSV
        "rating_out_of_range": 2,
    }
    assert (report.rows_read, report.rows_kept) == (9, 2)
    assert report.unknown_columns == ["session"]
    # Integer ids become their decimal text; a null rating is a missing one (0), as an empty CSV field.
    assert frame["user_id"].tolist() == ["u1", "u3"]
    assert frame["item_id"].tolist() == ["1", "7"]
    assert frame["timestamp"].tolist() == [1000, 1006]
    assert frame["rating"].tolist() == [4.5, 0.0]
    assert pd.api.types.is_string_dtype(frame["item_id"])
    assert frame["timestamp"].dtype == np.int64 and frame["rating"].dtype == np.float32


def test_parquet_timestamps_dates_and_dictionary_ids(tmp_path: Path) -> None:
    moments = pd.to_datetime(["2021-03-04T05:06:07.900Z", "2021-03-04T05:06:08Z"], utc=True, format="ISO8601")
    path = tmp_path / "moments.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array(["u1", "u2"]).dictionary_encode(),
                "item_id": pa.array(["i1", "i2"], pa.large_string()),
                "timestamp": pa.array(moments, pa.timestamp("ms", tz="UTC")),
            }
        ),
        path,
    )
    frame, _ = read_interactions(path)
    assert frame["timestamp"].tolist() == [ISO_SECONDS, ISO_SECONDS + 1]  # floored, as date-time text is
    assert frame["user_id"].tolist() == ["u1", "u2"]
    assert frame["rating"].tolist() == [0.0, 0.0]

    dated = tmp_path / "dated.parquet"
    pq.write_table(
        pa.table({"user_id": ["u1"], "item_id": ["i1"], "timestamp": pa.array([18_690], pa.date32())}), dated
    )
    assert read_interactions(dated)[0]["timestamp"].tolist() == [18_690 * 86_400]


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("timestamp", pa.array([True]), r"'timestamp' is bool"),
        ("user_id", pa.array([1.5]), r"'user_id' is double"),
        ("rating", pa.array([["4"]]), r"'rating' is list"),
    ],
)
def test_parquet_column_of_the_wrong_type(tmp_path: Path, column: str, values: pa.Array, message: str) -> None:
    columns = {"user_id": pa.array(["u1"]), "item_id": pa.array(["i1"]), "timestamp": pa.array([1000])}
    columns[column] = values
    path = tmp_path / "wrong.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(DataError, match=message):
        read_interactions(path)


def test_parquet_missing_required_columns_are_named(tmp_path: Path) -> None:
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"user": ["u1"], "item_id": ["i1"]}), path)
    with pytest.raises(DataError, match=r"missing required column\(s\) \['user_id', 'timestamp'\]"):
        read_interactions(path)
    items = tmp_path / "items.parquet"
    pq.write_table(pa.table({"id": ["i1"]}), items)
    with pytest.raises(DataError, match="item_id"):
        read_entities(items, "item_id")


def test_unsupported_inputs_are_data_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unsupported file type '\.tsv'"):
        read_interactions(write(tmp_path / "i.tsv", "user_id\titem_id\ttimestamp\n"))
    with pytest.raises(DataError, match="not readable as Parquet"):
        read_interactions(write(tmp_path / "fake.parquet", "user_id,item_id,timestamp\n"))
    with pytest.raises(DataError, match="no such file"):
        read_interactions(tmp_path / "absent.parquet")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no data files"):
        read_interactions(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write(mixed / "a.csv", "user_id,item_id,timestamp\nu1,i1,1\n")
    pq.write_table(pa.table({"user_id": ["u2"], "item_id": ["i1"], "timestamp": [2]}), mixed / "b.parquet")
    with pytest.raises(DataError, match="mixes CSV and Parquet"):
        read_interactions(mixed)
    write(mixed / "notes.txt", "")
    with pytest.raises(DataError, match=r"unsupported file\(s\) \['notes.txt'\]"):
        read_interactions(mixed)


def test_directory_of_csv_files(tmp_path: Path) -> None:
    directory = tmp_path / "parts"
    directory.mkdir()
    write(directory / "a.csv", "user_id,item_id,timestamp\nu1,i1,1\nu1,i2,2\n")
    write(directory / "b.csv", "item_id,user_id,timestamp,rating\ni1,u1,1,5\ni3,u2,3,4\nbroken\n")
    frame, report = read_interactions(directory)
    assert frame["item_id"].tolist() == ["i1", "i2", "i3"]
    assert frame["rating"].tolist() == [0.0, 0.0, 4.0]
    assert dict(report.rejected) == {"duplicate_event": 1, "unparsable_row": 1}
    assert report.rows_read == 5
    write(directory / "c.csv", "user_id,timestamp\nu1,1\n")
    with pytest.raises(DataError, match=r"c\.csv: missing required column\(s\) \['item_id'\]"):
        read_interactions(directory)


def test_parquet_directory_whose_files_differ_in_optional_columns(tmp_path: Path) -> None:
    directory = tmp_path / "parts"
    directory.mkdir()
    pq.write_table(
        pa.table({"user_id": ["u1"], "item_id": ["i1"], "timestamp": [1], "rating": [5.0]}), directory / "a.pq"
    )
    pq.write_table(pa.table({"user_id": ["u2"], "item_id": ["i2"], "timestamp": [2]}), directory / "b.pq")
    frame, report = read_interactions(directory)
    # A rating absent from a file is a missing rating there, as an empty CSV field is.
    assert frame["rating"].tolist() == [5.0, 0.0]
    assert (report.rows_read, report.rows_kept, dict(report.rejected)) == (2, 2, {})
    pq.write_table(pa.table({"user_id": ["u3"], "item_id": ["i3"], "timestamp": ["3"]}), directory / "c.pq")
    with pytest.raises(DataError, match="not readable as Parquet"):
        read_interactions(directory)  # one column, two types across files


def test_cli_loads_parquet_interactions(clean_csvs: dict[str, Path], tmp_path: Path) -> None:
    parquet = csv_as_parquet(clean_csvs["interactions"], tmp_path / "interactions.parquet")
    dataset = _load_dataset(parquet, clean_csvs["items"], None, None, 0.0)
    assert_same_dataset(dataset, load_tables(clean_csvs["interactions"], clean_csvs["items"], None))
