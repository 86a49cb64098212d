"""Attribute encoding (recsys_runtime/attributes.py), history sequences (recsys_runtime/sequences.py), the
fitted workflow (recsys_runtime/workflow.py) with stable indices across retrains, and the [workflow]
configuration section."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from recsys_runtime.attributes import (
    NUMERIC_CLIP,
    TEXT_OOV,
    TEXT_PAD,
    AttributeEncoder,
    ColumnEncoder,
    EncodedAttributes,
    infer_kind,
    tokenize,
)
from recsys_runtime.layout import REPORT_JSON, WORKFLOW_DIR
from recsys_runtime.sequences import EncodedSequences, encode_sequence, encode_sequences
from recsys_runtime.workflow import OOV_INDEX, Vocabulary, Workflow
from trainer.config import ConfigError, load_config
from trainer.data import Dataset, load_csvs
from trainer.demo import generate
from trainer.pipeline import train


def options(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "numeric_scaling": "zscore",
        "min_category_count": 1,
        "max_text_vocabulary": 100,
        "max_tokens": 4,
    }
    return {**base, **overrides}


def series(values: list[str]) -> pd.Series:
    return pd.Series(values, dtype=object)


def assert_same_attributes(a: EncodedAttributes, b: EncodedAttributes) -> None:
    for name in ("categorical", "numeric", "multi_hot", "tokens"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        assert left.shape == right.shape, name
        np.testing.assert_array_equal(left, right, err_msg=name)


def assert_same_sequences(a: EncodedSequences, b: EncodedSequences) -> None:
    for name in ("item_indices", "timestamps", "gaps", "lengths"):
        left, right = getattr(a, name), getattr(b, name)
        assert left.dtype == right.dtype, name
        np.testing.assert_array_equal(left, right, err_msg=name)


# ---------------------------------------------------------------- infer_kind


def test_infer_kind_numeric_with_few_distinct_values() -> None:
    assert infer_kind(series(["1", "2", "3", "2", "1", "3", "2", "1", "2", "3"])) == "numeric"
    assert infer_kind(series(["1990", "1995", "1990", "2001.5", "1995", "2001.5", "1990"])) == "numeric"
    # At least 95% of the present values must parse as numbers: 1 in 40 may not, 1 in 11 may not.
    assert infer_kind(series(["1", "2"] * 5 + ["n/a"])) == "categorical"
    assert infer_kind(series(["1", "2"] * 19 + ["n/a", "2"])) == "numeric"


def test_infer_kind_zip_codes_are_categorical() -> None:
    # Mostly digits and mostly distinct: codes, not quantities.
    zips = [f"{10000 + 37 * i:05d}" for i in range(30)] + ["02134", "SW1A"]
    assert infer_kind(series(zips)) == "categorical"


def test_infer_kind_multi_valued() -> None:
    genres = ["action|comedy", "drama", "comedy", "drama|horror", "action", "comedy", "drama", "scifi"]
    assert infer_kind(series(genres)) == "multi"


def test_infer_kind_free_text_titles() -> None:
    titles = [
        "The Big Sleep",
        "Some Like It Hot",
        "Twelve Angry Men",
        "North by Northwest",
        "Rear Window",
        "The Third Man",
        "Singin in the Rain",
        "Sunset Boulevard",
    ]
    assert infer_kind(series(titles)) == "text"


def test_infer_kind_short_repeated_labels_are_categorical() -> None:
    assert infer_kind(series(["red", "blue", "red", "green", "blue", "red", "green", "red"])) == "categorical"
    assert infer_kind(series(["18-24", "25-34", "18-24", "25-34", "35-44", "18-24"])) == "categorical"


def test_infer_kind_empty_column_is_categorical() -> None:
    assert infer_kind(pd.Series([], dtype=object)) == "categorical"
    assert infer_kind(series(["", "", ""])) == "categorical"


# ---------------------------------------------------------------- categorical


def test_categorical_sorted_vocabulary_and_index_zero_for_missing_and_unseen() -> None:
    encoder = ColumnEncoder.fit("colour", "categorical", series(["red", " blue", "", "green", "red"]), options())
    assert encoder.vocabulary == ["blue", "green", "red"]
    assert encoder.width == 1
    assert encoder.encode("blue") == [1]
    assert encoder.encode("green") == [2]
    assert encoder.encode(" red ") == [3]
    assert encoder.encode("") == [0]
    assert encoder.encode("purple") == [0]


def test_categorical_min_category_count() -> None:
    values = series(["a", "b", "b", "c", "c", "c"])
    encoder = ColumnEncoder.fit("x", "categorical", values, options(min_category_count=2))
    assert encoder.vocabulary == ["b", "c"]
    assert encoder.encode("a") == [0]
    assert encoder.encode("b") == [1]
    assert encoder.encode("c") == [2]
    missing_values = pd.Series(["a", None, np.nan, "a"], dtype=object)
    assert ColumnEncoder.fit("x", "categorical", missing_values, options(min_category_count=2)).vocabulary == ["a"]


# ---------------------------------------------------------------- numeric


def test_numeric_zscore_stats_stored_and_applied() -> None:
    encoder = ColumnEncoder.fit("n", "numeric", series(["1", "2", "3", "4", "", "abc"]), options())
    assert encoder.center == pytest.approx(2.5)
    assert encoder.scale == pytest.approx(math.sqrt(1.25))  # population std of 1..4
    assert encoder.width == 1
    assert encoder.encode("4")[0] == pytest.approx(1.5 / math.sqrt(1.25))
    assert encoder.encode("1")[0] == pytest.approx(-1.5 / math.sqrt(1.25))
    assert encoder.encode("2.5") == [0.0]


def test_numeric_robust_stats_stored_and_applied() -> None:
    values = series(["1", "2", "3", "4", "100"])
    encoder = ColumnEncoder.fit("n", "numeric", values, options(numeric_scaling="robust"))
    assert encoder.center == pytest.approx(3.0)  # median
    assert encoder.scale == pytest.approx(2.0)  # IQR: 4 - 2
    assert encoder.encode("4")[0] == pytest.approx(0.5)
    assert encoder.encode("1")[0] == pytest.approx(-1.0)
    zscore = ColumnEncoder.fit("n", "numeric", values, options(numeric_scaling="zscore"))
    assert zscore.center == pytest.approx(22.0)
    assert zscore.scale == pytest.approx(float(np.std([1, 2, 3, 4, 100])))


def test_numeric_clipping() -> None:
    encoder = ColumnEncoder("n", "numeric", center=10.0, scale=2.0)
    assert encoder.encode("1000") == [NUMERIC_CLIP]
    assert encoder.encode("-1000") == [-NUMERIC_CLIP]
    assert encoder.encode("20") == [5.0]
    assert encoder.encode("19")[0] == pytest.approx(4.5)
    assert encoder.encode("0") == [-5.0]


def test_numeric_missing_or_unparsable_is_zero() -> None:
    encoder = ColumnEncoder("n", "numeric", center=10.0, scale=2.0)
    for value in ("", "   ", "abc", "nan", "inf", "-inf", "1,5"):
        assert encoder.encode(value) == [0.0], value


def test_numeric_zero_spread_scale_is_one() -> None:
    for scaling in ("zscore", "robust"):
        encoder = ColumnEncoder.fit("n", "numeric", series(["7", "7", "7", ""]), options(numeric_scaling=scaling))
        assert encoder.center == pytest.approx(7.0)
        assert encoder.scale == 1.0
        assert encoder.encode("7") == [0.0]
        assert encoder.encode("8")[0] == pytest.approx(1.0)
    # Robust: the IQR of a mostly constant column is 0 even though the values differ.
    encoder = ColumnEncoder.fit("n", "numeric", series(["5"] * 9 + ["9"]), options(numeric_scaling="robust"))
    assert encoder.scale == 1.0
    # No parsable number at all: the identity.
    empty = ColumnEncoder.fit("n", "numeric", series(["", "x"]), options())
    assert (empty.center, empty.scale) == (0.0, 1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_numeric_fit_ignores_non_finite_values_like_encode() -> None:
    encoder = ColumnEncoder.fit("n", "numeric", series(["1", "2", "3", "inf"]), options())
    assert math.isfinite(encoder.center) and math.isfinite(encoder.scale)
    assert encoder.center == pytest.approx(2.0)
    assert encoder.encode("2") == [0.0]


# ---------------------------------------------------------------- multi-valued


def test_multi_hot_width_unseen_and_repeated_parts() -> None:
    values = series(["action|comedy", "drama", " comedy | drama ", "", "action"])
    encoder = ColumnEncoder.fit("genres", "multi", values, options())
    assert encoder.vocabulary == ["action", "comedy", "drama"]
    assert encoder.width == 4
    assert encoder.encode("comedy|action") == [0, 1, 1, 0]
    assert encoder.encode("drama") == [0, 0, 0, 1]
    assert encoder.encode("") == [0, 0, 0, 0]
    assert encoder.encode("western") == [1, 0, 0, 0]
    assert encoder.encode("western|drama|musical") == [1, 0, 0, 1]
    # A repeated part is one hot position, not a count.
    assert encoder.encode("drama|drama|drama") == [0, 0, 0, 1]
    assert encoder.encode("action||  |action") == [0, 1, 0, 0]


def test_multi_min_category_count() -> None:
    values = series(["a|b", "b|c", "b", "c|d"])
    encoder = ColumnEncoder.fit("tags", "multi", values, options(min_category_count=2))
    assert encoder.vocabulary == ["b", "c"]
    assert encoder.width == 3
    assert encoder.encode("a|b|d") == [1, 1, 0]


# ---------------------------------------------------------------- text


def test_tokenize_lowercases() -> None:
    assert tokenize("Hello, WORLD! 42x  it's") == ["hello", "world", "42x", "it", "s"]
    assert tokenize("") == []


def test_text_vocabulary_order_pad_oov_and_truncation() -> None:
    # Counts: a 3, c 2, b 1, d 1 -> by frequency, then alphabetically.
    values = series(["B a", "a C", "c A", "d"])
    encoder = ColumnEncoder.fit("title", "text", values, options(max_tokens=4))
    assert encoder.vocabulary == ["a", "c", "b", "d"]
    assert encoder.width == 4
    assert (TEXT_PAD, TEXT_OOV) == (0, 1)
    # First vocabulary token is index 2 (0 pad, 1 out of vocabulary).
    assert encoder.encode("A") == [2, 0, 0, 0]
    assert encoder.encode("a C b D") == [2, 3, 4, 5]
    assert encoder.encode("zebra a") == [1, 2, 0, 0]
    assert encoder.encode("") == [0, 0, 0, 0]
    # Truncation keeps the first max_tokens tokens.
    assert encoder.encode("d b c a a") == [5, 4, 3, 2]
    short = ColumnEncoder.fit("title", "text", values, options(max_tokens=2))
    assert short.encode("d b c a") == [5, 4]
    assert short.width == 2


def test_text_vocabulary_cap_and_min_count() -> None:
    values = series(["B a", "a C", "c A", "d"])
    capped = ColumnEncoder.fit("title", "text", values, options(max_text_vocabulary=2))
    assert capped.vocabulary == ["a", "c"]
    assert capped.encode("b a") == [1, 2, 0, 0]
    frequent = ColumnEncoder.fit("title", "text", values, options(min_category_count=2))
    assert frequent.vocabulary == ["a", "c"]
    # Equal counts are ordered alphabetically.
    tied = ColumnEncoder.fit("title", "text", series(["zeta alpha", "mid"]), options())
    assert tied.vocabulary == ["alpha", "mid", "zeta"]


# ---------------------------------------------------------------- AttributeEncoder


def item_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["i1", "i2", "i3", "i4", "i5", "i6"],
            "colour": ["red", "blue", "red", "green", "blue", None],
            "price": ["2", "2", "", "4", "2", "4"],
            "genres": ["action|comedy", "drama", "comedy|drama", "action", "", "horror|action"],
            "title": [
                "The Big Sleep",
                "Some Like It Hot",
                "The Third Man",
                "Rear Window",
                "The Big Heat",
                "Big Fish",
            ],
            "zip": ["01234", "10001", "94110", "60601", "73301", "33101"],
        }
    )


def test_attribute_kinds_inferred_and_override_beats_inference() -> None:
    frame = item_frame()
    inferred = AttributeEncoder.fit(frame, "item_id", {}, options())
    assert inferred.describe() == {
        "colour": "categorical",
        "price": "numeric",
        "genres": "multi",
        "title": "text",
        "zip": "categorical",
    }
    overridden = AttributeEncoder.fit(
        frame, "item_id", {"zip": "numeric", "price": "categorical", "title": "categorical"}, options()
    )
    kinds = overridden.describe()
    assert kinds["zip"] == "numeric"
    assert kinds["price"] == "categorical"
    assert kinds["title"] == "categorical"
    assert kinds["genres"] == "multi"
    assert "item_id" not in kinds
    zip_encoder = next(c for c in overridden.columns if c.name == "zip")
    assert zip_encoder.center == pytest.approx(np.mean([1234, 10001, 94110, 60601, 73301, 33101]))


def test_invalid_kind_raises_value_error() -> None:
    with pytest.raises(ValueError, match="ordinal"):
        ColumnEncoder("x", "ordinal")
    with pytest.raises(ValueError):
        AttributeEncoder.fit(item_frame(), "item_id", {"colour": "bogus"}, options())
    with pytest.raises(ValueError):
        ColumnEncoder.from_json(
            {"name": "x", "kind": "nope", "vocabulary": [], "center": 0, "scale": 1, "max_tokens": 0}
        )


def test_attribute_encoder_without_frame_has_no_columns() -> None:
    encoder = AttributeEncoder.fit(None, "user_id", {}, options())
    assert encoder.columns == []
    encoded = encoder.encode_rows([{"a": "b"}, {}])
    assert encoded.categorical.shape == (2, 0)
    assert encoded.numeric.shape == (2, 0)
    assert encoded.multi_hot.shape == (2, 0)
    assert encoded.tokens.shape == (2, 0)


def test_encode_rows_blocks_dtypes_and_values() -> None:
    encoder = AttributeEncoder.fit(item_frame(), "item_id", {}, options(max_tokens=3))
    encoded = encoder.encode_rows([{"colour": "red", "price": "4", "genres": "drama|western", "title": "Big Sleep"}])
    assert encoded.categorical.dtype == np.int32
    assert encoded.numeric.dtype == np.float32
    assert encoded.multi_hot.dtype == np.int8
    assert encoded.tokens.dtype == np.int32
    colour = next(c for c in encoder.columns if c.name == "colour")
    zip_code = next(c for c in encoder.columns if c.name == "zip")
    # Categorical block in column order: colour, zip (missing here -> 0).
    assert encoded.categorical.tolist() == [[colour.encode("red")[0], 0]]
    assert zip_code.encode("10001") != [0]
    genres = next(c for c in encoder.columns if c.name == "genres")
    assert encoded.multi_hot.shape == (1, genres.width)
    assert encoded.multi_hot[0].tolist() == genres.encode("drama|western")
    assert encoded.multi_hot[0, 0] == 1  # western is unseen
    price = next(c for c in encoder.columns if c.name == "price")
    assert encoded.numeric[0, 0] == np.float32(price.encode("4")[0])
    title = next(c for c in encoder.columns if c.name == "title")
    assert encoded.tokens[0].tolist() == title.encode("Big Sleep")
    assert encoded.tokens[0].tolist()[-1] == TEXT_PAD


def test_model_input_rows_one_hot_numeric_multi_hot_and_token_bags() -> None:
    frame = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "colour": ["red", "blue", ""],
            "price": ["1", "3", ""],
            "genres": ["drama", "drama|noir", ""],
            "title": ["big big sleep", "sleep", ""],
        }
    )
    kinds = {"colour": "categorical", "price": "numeric", "genres": "multi", "title": "text"}
    encoder = AttributeEncoder.fit(frame, "item_id", kinds, options())
    rows = [{"colour": "red", "price": "3", "genres": "noir|western", "title": "Big big BIG unknown"}, {}]
    sparse = encoder.sparse(encoder.encode_rows(rows))
    price = next(c for c in encoder.columns if c.name == "price").encode("3")[0]
    # colour one-hot [blue, red]; price; genres multi-hot [unseen, drama, noir]; title bag [oov, big, sleep].
    expected = np.array([[0, 1, price, 1, 0, 1, 1, 3, 0], [0, 0, 0, 0, 0, 0, 0, 0, 0]], np.float32)
    assert sparse.dtype == np.float32
    np.testing.assert_array_equal(sparse.toarray(), expected)
    np.testing.assert_array_equal(encoder.dense(encoder.encode_rows(rows)), expected)
    # A whole table: row i for index i, row 0 (the OOV bucket) and ids without attributes empty.
    table = encoder.sparse_table(frame, pd.Index(["b", "zz", "a"]))
    first = encoder.sparse(
        encoder.encode_rows([{"colour": "blue", "price": "3", "genres": "drama|noir", "title": "sleep"}])
    )
    assert table.shape == (4, 9) and table[0].nnz == 0 and table[2].nnz == 0
    np.testing.assert_array_equal(table[1].toarray(), first.toarray())


def test_json_round_trip_gives_identical_encodings() -> None:
    frame = item_frame()
    encoder = AttributeEncoder.fit(frame, "item_id", {"zip": "numeric"}, options(numeric_scaling="robust"))
    restored = AttributeEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert restored.key == "item_id"
    assert restored.to_json() == encoder.to_json()
    assert restored.columns == encoder.columns
    assert_same_attributes(restored.encode_frame(frame), encoder.encode_frame(frame))
    probe = [{"colour": "nope", "price": "3", "genres": "x|drama", "title": "a big man", "zip": "1"}, {}]
    assert_same_attributes(restored.encode_rows(probe), encoder.encode_rows(probe))
    for column in encoder.columns:
        again = ColumnEncoder.from_json(json.loads(json.dumps(column.to_json())))
        assert again == column
        assert again.encode("The Big comedy|drama 2") == column.encode("The Big comedy|drama 2")


def test_encode_frame_equals_encode_rows_per_row() -> None:
    frame = item_frame()
    encoder = AttributeEncoder.fit(frame, "item_id", {}, options())
    offline = encoder.encode_frame(frame)
    for i, record in enumerate(frame.to_dict("records")):
        # Online rows carry only what is known: a missing value is an absent column.
        row = {k: str(v) for k, v in record.items() if isinstance(v, str)}
        online = encoder.encode_rows([row])
        assert_same_attributes(online, offline.row(i))
    assert "colour" not in {k for k, v in frame.iloc[5].items() if isinstance(v, str)}


def test_encode_frame_without_a_column_equals_rows_without_it() -> None:
    frame = item_frame()
    encoder = AttributeEncoder.fit(frame, "item_id", {}, options())
    partial = frame.drop(columns=["price", "title"])
    offline = encoder.encode_frame(partial)
    np.testing.assert_array_equal(offline.numeric, np.zeros((len(frame), 1), np.float32))
    np.testing.assert_array_equal(offline.tokens, np.zeros((len(frame), 4), np.int32))
    rows = [{k: v for k, v in r.items() if isinstance(v, str)} for r in partial.to_dict("records")]
    assert_same_attributes(encoder.encode_rows(rows), offline)
    # Columns the encoder does not know are ignored.
    extra = frame.assign(unknown=["z"] * len(frame))
    assert_same_attributes(encoder.encode_frame(extra), encoder.encode_frame(frame))


# ---------------------------------------------------------------- sequences


def log_gap(seconds: float) -> np.float32:
    return np.float32(np.log1p(seconds))


def test_encode_sequence_left_padding() -> None:
    encoded = encode_sequence(np.array([5, 6, 7]), np.array([100, 160, 400]), 5)
    assert encoded.item_indices.dtype == np.int32
    assert encoded.timestamps.dtype == np.int64
    assert encoded.gaps.dtype == np.float32
    assert encoded.item_indices.tolist() == [[0, 0, 5, 6, 7]]
    assert encoded.timestamps.tolist() == [[0, 0, 100, 160, 400]]
    np.testing.assert_allclose(encoded.gaps, [[0, 0, 0, log_gap(60), log_gap(240)]], rtol=1e-6)
    assert encoded.lengths.tolist() == [3]


def test_encode_sequence_truncation_keeps_most_recent_and_gap_from_dropped_item() -> None:
    encoded = encode_sequence(np.array([1, 2, 3, 4, 5]), np.array([10, 20, 40, 80, 160]), 3)
    assert encoded.item_indices.tolist() == [[3, 4, 5]]
    assert encoded.timestamps.tolist() == [[40, 80, 160]]
    # The oldest kept item (t=40) is measured from the dropped item before it (t=20).
    np.testing.assert_allclose(encoded.gaps, [[log_gap(20), log_gap(40), log_gap(80)]], rtol=1e-6)
    assert encoded.lengths.tolist() == [3]
    exact = encode_sequence(np.array([3, 4, 5]), np.array([40, 80, 160]), 3)
    assert exact.gaps[0, 0] == 0.0  # not truncated: the first item has no predecessor


def test_encode_sequence_negative_differences_clamp_to_zero() -> None:
    encoded = encode_sequence(np.array([1, 2, 3]), np.array([100, 50, 200]), 4)
    np.testing.assert_allclose(encoded.gaps, [[0, 0, 0, log_gap(150)]], rtol=1e-6)
    truncated = encode_sequence(np.array([1, 2, 3]), np.array([100, 50, 60]), 2)
    np.testing.assert_allclose(truncated.gaps, [[0, log_gap(10)]], rtol=1e-6)
    assert np.all(truncated.gaps >= 0)


def test_encode_sequence_empty_history() -> None:
    encoded = encode_sequence(np.array([], dtype=np.int32), np.array([], dtype=np.int64), 4)
    assert encoded.item_indices.tolist() == [[0, 0, 0, 0]]
    assert encoded.timestamps.tolist() == [[0, 0, 0, 0]]
    assert encoded.gaps.tolist() == [[0.0, 0.0, 0.0, 0.0]]
    assert encoded.lengths.tolist() == [0]
    assert encoded.item_indices.dtype == np.int32 and encoded.timestamps.dtype == np.int64


def test_encode_sequences_equals_per_user_encode_sequence() -> None:
    frame = pd.DataFrame(
        {
            "user_index": [0, 1, 1, 1, 1, 1, 2, 4, 4],
            "item_index": [9, 1, 2, 3, 4, 5, 7, 8, 0],
            "timestamp": [5, 10, 20, 20, 50, 90, 3, 100, 400],
        }
    )
    users, stacked = encode_sequences(frame, 3)
    assert users.dtype == np.int32
    assert users.tolist() == [0, 1, 2, 4]
    assert stacked.item_indices.shape == (4, 3)
    for row, user in enumerate(users):
        part = frame[frame["user_index"] == user]
        single = encode_sequence(part["item_index"].to_numpy(), part["timestamp"].to_numpy(), 3)
        assert_same_sequences(
            EncodedSequences(
                stacked.item_indices[row : row + 1],
                stacked.timestamps[row : row + 1],
                stacked.gaps[row : row + 1],
                stacked.lengths[row : row + 1],
            ),
            single,
        )
    assert stacked.lengths.tolist() == [1, 3, 1, 2]
    assert stacked.item_indices[1].tolist() == [3, 4, 5]


def test_encode_sequences_empty_frame() -> None:
    frame = pd.DataFrame(
        {
            "user_index": np.array([], np.int32),
            "item_index": np.array([], np.int32),
            "timestamp": np.array([], np.int64),
        }
    )
    users, stacked = encode_sequences(frame, 5)
    assert users.shape == (0,)
    assert stacked.item_indices.shape == (0, 5)
    assert stacked.gaps.shape == (0, 5)
    assert stacked.lengths.shape == (0,)
    workflow = Workflow.fit(interactions_frame([("u1", "i1", 1)]), 5)
    keys, sequences = workflow.encode_histories(interactions_frame([("u1", "i1", 1)]).iloc[:0])
    assert keys.shape == (0,)
    assert sequences.item_indices.shape == (0, 5)


# ---------------------------------------------------------------- Vocabulary and Workflow


def test_vocabulary_fit_sorted_with_min_count() -> None:
    vocabulary = Vocabulary.fit(series(["b", "a", "c", "b", "a", "b"]), 2)
    assert list(vocabulary.ids) == ["a", "b"]
    assert vocabulary.size == 3
    assert vocabulary.encode(["a", "b", "c", "zz"]).tolist() == [1, 2, OOV_INDEX, OOV_INDEX]
    assert vocabulary.decode(np.array([2, 1])).tolist() == ["b", "a"]
    with pytest.raises(ValueError):
        vocabulary.decode(np.array([0]))


def test_vocabulary_fit_with_previous_keeps_indices_and_appends_sorted() -> None:
    previous = Vocabulary.fit(series(["d", "b", "a"]), 1)
    assert list(previous.ids) == ["a", "b", "d"]
    # "b" no longer appears; "e", "c" are new; "x" is below min_count.
    current = Vocabulary.fit(series(["e", "d", "c", "a", "e", "c", "d", "a", "x"]), 2, previous)
    assert list(current.ids) == ["a", "b", "d", "c", "e"]
    for value in previous.ids:
        assert current.encode([value]).tolist() == previous.encode([value]).tolist()
    assert current.encode(["b"]).tolist() == [2]
    assert current.encode(["c", "e", "x"]).tolist() == [4, 5, OOV_INDEX]
    # A third version keeps both earlier generations in place.
    third = Vocabulary.fit(series(["aa", "e", "zz"]), 1, current)
    assert list(third.ids) == ["a", "b", "d", "c", "e", "aa", "zz"]


def interactions_frame(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    users, items, times = zip(*rows, strict=True)
    return pd.DataFrame(
        {
            "user_id": list(users),
            "item_id": list(items),
            "timestamp": np.array(times, dtype=np.int64),
            "rating": np.zeros(len(rows), np.float32),
        }
    )


def test_workflow_fit_with_previous_keeps_user_and_item_indices() -> None:
    first = Workflow.fit(interactions_frame([("u2", "i3", 1), ("u1", "i1", 2), ("u3", "i2", 3)]), 5)
    assert list(first.users.ids) == ["u1", "u2", "u3"]
    assert list(first.items.ids) == ["i1", "i2", "i3"]
    second_data = interactions_frame([("u0", "i0", 1), ("u3", "i3", 2), ("u9", "i9", 3), ("u1", "i4", 4)])
    second = Workflow.fit(second_data, 5, previous=first)
    assert list(second.users.ids) == ["u1", "u2", "u3", "u0", "u9"]
    assert list(second.items.ids) == ["i1", "i2", "i3", "i0", "i4", "i9"]
    for vocab_first, vocab_second in ((first.users, second.users), (first.items, second.items)):
        ids = list(vocab_first.ids)
        np.testing.assert_array_equal(vocab_second.encode(ids), vocab_first.encode(ids))
    fresh = Workflow.fit(second_data, 5)
    assert list(fresh.users.ids) == ["u0", "u1", "u3", "u9"]


def history_data() -> pd.DataFrame:
    # File order is not time order; u1 has more items than max_history; u2 is below min_user_count;
    # i_rare is below min_item_count; u3 has two events at the same time (file order decides).
    return interactions_frame(
        [
            ("u1", "i3", 300),
            ("u3", "i2", 50),
            ("u1", "i1", 100),
            ("u2", "i1", 7),
            ("u1", "i2", 200),
            ("u3", "i1", 10),
            ("u1", "i_rare", 250),
            ("u1", "i4", 400),
            ("u3", "i3", 50),
            ("u1", "i5", 90),
            ("u3", "i4", 60),
            ("u4", "i5", 1),
            ("u4", "i4", 1_000_000),
        ]
    )


def test_encode_history_equals_encode_histories_row() -> None:
    interactions = history_data()
    workflow = Workflow.fit(interactions, 3, min_user_count=2, min_item_count=2)
    assert not workflow.users.contains("u2")
    assert not workflow.items.contains("i_rare")
    keys, offline = workflow.encode_histories(interactions)
    assert sorted(keys.tolist()) == ["u1", "u2", "u3", "u4"]
    assert len(set(keys.tolist())) == len(keys)
    for user in ["u1", "u2", "u3", "u4"]:
        history = interactions[interactions["user_id"] == user].sort_values("timestamp", kind="stable")
        online = workflow.encode_history(history["item_id"].tolist(), history["timestamp"].tolist())
        row = keys.tolist().index(user)
        assert_same_sequences(
            online,
            EncodedSequences(
                offline.item_indices[row : row + 1],
                offline.timestamps[row : row + 1],
                offline.gaps[row : row + 1],
                offline.lengths[row : row + 1],
            ),
        )
    row_u1 = keys.tolist().index("u1")
    # u1 in time order: i5 90, i1 100, i2 200, i_rare 250, i3 300, i4 400 -> last three.
    assert offline.item_indices[row_u1].tolist() == workflow.items.encode(["i_rare", "i3", "i4"]).tolist()
    assert offline.item_indices[row_u1, 0] == OOV_INDEX
    assert offline.timestamps[row_u1].tolist() == [250, 300, 400]
    assert offline.gaps[row_u1, 0] == pytest.approx(np.log1p(50), rel=1e-6)
    row_u2 = keys.tolist().index("u2")
    assert offline.lengths[row_u2] == 1
    assert offline.item_indices[row_u2].tolist() == [0, 0, workflow.items.encode(["i1"])[0]]
    row_u3 = keys.tolist().index("u3")
    assert offline.item_indices[row_u3].tolist() == workflow.items.encode(["i2", "i3", "i4"]).tolist()


def test_encode_history_unknown_items_and_empty_history() -> None:
    workflow = Workflow.fit(history_data(), 4, min_item_count=2)
    encoded = workflow.encode_history(["never-seen", "i1", "i_rare"], [1, 2, 3])
    assert encoded.item_indices.tolist() == [[0, 0, workflow.items.encode(["i1"])[0], 0]]
    assert encoded.lengths.tolist() == [3]
    empty = workflow.encode_history([], [])
    assert empty.item_indices.tolist() == [[0, 0, 0, 0]]
    assert empty.lengths.tolist() == [0]
    assert empty.gaps.tolist() == [[0.0] * 4]


def users_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u5"],
            "age": ["20", "30", "20", "30", "20"],
            "country": ["de", "fr", "de", "us", ""],
        }
    )


def test_workflow_save_load_round_trip(tmp_path: Path) -> None:
    interactions = history_data()
    items = item_frame().assign(item_id=["i1", "i2", "i3", "i4", "i5", "i_rare"])
    workflow = Workflow.fit(
        interactions,
        3,
        min_user_count=2,
        min_item_count=2,
        items=items,
        users=users_frame(),
        options={"numeric_scaling": "robust", "max_tokens": 5, "attribute_kinds": {"zip": "numeric"}},
    )
    assert workflow.item_attributes.describe()["zip"] == "numeric"
    assert workflow.user_attributes.describe() == {"age": "numeric", "country": "categorical"}
    workflow.save(tmp_path / "wf")
    loaded = Workflow.load(tmp_path / "wf")
    assert list(loaded.users.ids) == list(workflow.users.ids)
    assert list(loaded.items.ids) == list(workflow.items.ids)
    assert loaded.max_history == 3
    assert loaded.item_attributes.to_json() == workflow.item_attributes.to_json()
    assert loaded.user_attributes.to_json() == workflow.user_attributes.to_json()
    assert_same_attributes(loaded.item_attributes.encode_frame(items), workflow.item_attributes.encode_frame(items))
    assert_same_attributes(
        loaded.user_attributes.encode_frame(users_frame()), workflow.user_attributes.encode_frame(users_frame())
    )
    keys_a, seq_a = workflow.encode_histories(interactions)
    keys_b, seq_b = loaded.encode_histories(interactions)
    assert keys_a.tolist() == keys_b.tolist()
    assert_same_sequences(seq_a, seq_b)
    assert_same_sequences(
        loaded.encode_history(["i1", "x", "i4"], [1, 5, 9]), workflow.encode_history(["i1", "x", "i4"], [1, 5, 9])
    )
    meta = json.loads((tmp_path / "wf" / "workflow.json").read_text())
    meta["format"] = 999
    (tmp_path / "wf" / "workflow.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format"):
        Workflow.load(tmp_path / "wf")


# ---------------------------------------------------------------- pipeline: stable indices across retrains


def second_dataset(tmp_path: Path, first: Any) -> dict[str, Path]:
    """The demo data without some items (and so maybe some users), plus new items and users."""
    interactions: pd.DataFrame = first.interactions
    dropped = {f"i{i:05d}" for i in range(0, 60, 7)}
    kept = interactions[~interactions["item_id"].isin(dropped)]
    new_items = ["i00100", "a-new", "i00060", "zz-new"]
    new_users = ["u00150", "new-user", "u00000"]  # u00000 exists already
    extra = pd.DataFrame(
        {
            "user_id": [new_users[k % len(new_users)] for k in range(12)],
            "item_id": [new_items[k % len(new_items)] for k in range(12)],
            "timestamp": np.arange(12, dtype=np.int64) * 3600 + 1_650_000_000,
            "rating": [4] * 12,
        }
    )
    items = pd.concat(
        [
            first.items[~first.items["item_id"].isin(dropped)],
            pd.DataFrame(
                {
                    "item_id": new_items,
                    "title": [f"New film number {k}" for k in range(4)],
                    "genres": ["drama", "comedy|drama", "action", "scifi"],
                    "year": ["2001", "2002", "2001", "2003"],
                }
            ),
        ]
    )
    users = pd.concat(
        [
            first.users,
            pd.DataFrame({"user_id": ["u00150", "new-user"], "age_group": ["18-24", "55+"], "gender": ["f", "m"]}),
        ]
    )
    directory = tmp_path / "second"
    directory.mkdir()
    paths = {
        "interactions": directory / "interactions.csv",
        "items": directory / "items.csv",
        "users": directory / "users.csv",
    }
    pd.concat([kept, extra]).to_csv(paths["interactions"], index=False)
    items.to_csv(paths["items"], index=False)
    users.to_csv(paths["users"], index=False)
    return paths


@pytest.mark.slow
def test_train_twice_keeps_indices_of_persisting_ids(tmp_path: Path) -> None:
    first = generate(n_users=150, n_items=60, mean_history=10)
    paths = first.write(tmp_path / "first")
    override = tmp_path / "config.toml"
    override.write_text("[gan]\nenabled = false\n")  # vocabularies are the point here, not generators
    config = load_config(override)
    root = tmp_path / "artifacts"
    dataset_1 = load_csvs(paths["interactions"], paths["items"], paths["users"])
    result_1 = train(dataset_1, config, root)
    paths_2 = second_dataset(tmp_path, first)
    dataset_2 = load_csvs(paths_2["interactions"], paths_2["items"], paths_2["users"])
    assert isinstance(dataset_2, Dataset)
    override.write_text('[workflow.attribute_kinds]\nyear = "numeric"\n[gan]\nenabled = false\n')
    result_2 = train(dataset_2, load_config(override), root)
    assert result_1.version_dir != result_2.version_dir

    for table, key in (("items.parquet", "item_id"), ("users.parquet", "user_id")):
        ids_1 = pd.read_parquet(result_1.version_dir / WORKFLOW_DIR / table)[key].astype(str).tolist()
        ids_2 = pd.read_parquet(result_2.version_dir / WORKFLOW_DIR / table)[key].astype(str).tolist()
        column = "item_id" if key == "item_id" else "user_id"
        in_1 = set(dataset_1.interactions[column])
        in_2 = set(dataset_2.interactions[column])
        assert set(ids_1) == in_1
        assert set(ids_2) == in_1 | in_2
        # Index of an id is its position + 1: every id of the first version keeps its position ...
        assert ids_2[: len(ids_1)] == ids_1
        for value in in_1 & in_2:
            assert ids_1.index(value) == ids_2.index(value)
        # ... and the new ids are appended, sorted.
        assert ids_2[len(ids_1) :] == sorted(in_2 - in_1)
        assert len(in_2 - in_1) > 0

    items_dropped = set(dataset_1.interactions["item_id"]) - set(dataset_2.interactions["item_id"])
    assert items_dropped  # the second data set really lacks some items
    loaded_1 = Workflow.load(result_1.version_dir / WORKFLOW_DIR)
    loaded_2 = Workflow.load(result_2.version_dir / WORKFLOW_DIR)
    common_items = sorted(set(loaded_1.items.ids) & set(dataset_2.interactions["item_id"]))
    np.testing.assert_array_equal(loaded_1.items.encode(common_items), loaded_2.items.encode(common_items))
    assert loaded_2.items.encode(["a-new"])[0] > len(loaded_1.items)

    # 60 items have many distinct years, so inference calls year a code (categorical); the second run's
    # configuration overrides it.
    expected_users = {"age_group": "categorical", "gender": "categorical", "country": "categorical"}
    for result, year in ((result_1, "categorical"), (result_2, "numeric")):
        expected_items = {"title": "text", "genres": "multi", "year": year}
        data = result.report["data"]
        assert data["item_attribute_kinds"] == expected_items
        assert data["user_attribute_kinds"] == expected_users
        on_disk = json.loads((result.version_dir / REPORT_JSON).read_text())
        assert on_disk["data"]["item_attribute_kinds"] == expected_items
    assert loaded_2.item_attributes.describe()["year"] == "numeric"
    assert result_2.report["data"]["items"] == len(loaded_2.items)


# ---------------------------------------------------------------- config


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_config_defaults_for_workflow() -> None:
    workflow = load_config()["workflow"]
    assert workflow["attribute_kinds"] == {}
    assert workflow["numeric_scaling"] == "zscore"


def test_config_attribute_kinds_accepts_arbitrary_columns(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        '[workflow.attribute_kinds]\nzip = "categorical"\n"release year" = "numeric"\n'
        'tags = "multi"\nsynopsis = "text"\n',
    )
    kinds = load_config(path)["workflow"]["attribute_kinds"]
    assert kinds == {"zip": "categorical", "release year": "numeric", "tags": "multi", "synopsis": "text"}
    # The override does not leak into the defaults of a later load.
    assert load_config()["workflow"]["attribute_kinds"] == {}


def test_config_attribute_kinds_rejects_invalid_kind(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[workflow.attribute_kinds]\nzip = "ordinal"\n')
    with pytest.raises(ConfigError, match="attribute_kinds"):
        load_config(path)


@pytest.mark.parametrize("value", ["1", "true", '["numeric"]', "{ kind = 'numeric' }"])
def test_config_attribute_kinds_rejects_non_strings(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, f"[workflow.attribute_kinds]\nzip = {value}\n")
    # Rejected as a value of the wrong type, before (and not only by) the check of the kind names.
    with pytest.raises(ConfigError, match=r"attribute_kinds.* must be strings"):
        load_config(path)


def test_config_attribute_kinds_must_be_a_table(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[workflow]\nattribute_kinds = "numeric"\n')
    with pytest.raises(ConfigError, match="attribute_kinds"):
        load_config(path)


@pytest.mark.parametrize("scaling", ["zscore", "robust"])
def test_config_numeric_scaling_accepts_known(tmp_path: Path, scaling: str) -> None:
    path = write_config(tmp_path, f'[workflow]\nnumeric_scaling = "{scaling}"\n')
    assert load_config(path)["workflow"]["numeric_scaling"] == scaling


@pytest.mark.parametrize("value", ['"minmax"', '"ZSCORE"', '""', "1"])
def test_config_numeric_scaling_rejects_others(tmp_path: Path, value: str) -> None:
    path = write_config(tmp_path, f"[workflow]\nnumeric_scaling = {value}\n")
    with pytest.raises(ConfigError, match="numeric_scaling"):
        load_config(path)


@pytest.mark.parametrize("dict_lookup_max_ids", [1_000_000, 10])
def test_vocabulary_encode_by_dict_and_by_pandas_agree(
    monkeypatch: pytest.MonkeyPatch, dict_lookup_max_ids: int
) -> None:
    import recsys_runtime.workflow as workflow_module

    monkeypatch.setattr(workflow_module, "DICT_LOOKUP_MAX_IDS", dict_lookup_max_ids)
    vocabulary = Vocabulary(pd.Index([str(i) for i in range(1, 500)], dtype=object))
    rng = np.random.default_rng(0)

    def by_pandas(values: object) -> np.ndarray:
        return (vocabulary.ids.get_indexer(pd.Index(values, dtype=object)) + 1).astype(np.int32)

    for size in (0, 1, 50, workflow_module.SMALL_ENCODE, workflow_module.SMALL_ENCODE + 1, 5000):
        values = [str(v) for v in rng.integers(-20, 700, size)]  # known and unknown ids, repeats
        encoded = vocabulary.encode(values)
        assert encoded.dtype == np.int32 and np.array_equal(encoded, by_pandas(values)), size
    odd = ["1", 1, None, float("nan"), "499", "500", " 1"]  # not strings, or near misses: out of vocabulary
    for values in (odd, np.array(["3", "x"]), np.array(["3", "x"], dtype=object), pd.Series(["7", "y"])):
        assert np.array_equal(vocabulary.encode(values), by_pandas(values))
    assert vocabulary.encode(odd).tolist() == [1, 0, 0, 0, 499, 0, 0]
