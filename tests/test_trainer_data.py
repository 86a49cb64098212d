"""trainer/data.py: reading raw CSVs and MovieLens, and the data-quality report of every rejected row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.data import (
    DataError,
    QualityReport,
    load_csvs,
    load_movielens,
    read_entities_csv,
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
