"""trainer/demo.py: the generated demo data's shape, invariants and the structure models learn from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.demo import AGE_GROUPS, TOPICS, DemoData, _fill_uniformly, generate

STRING = pd.Series(["a"]).dtype  # what pandas makes of Python strings: the dtype callers have always had


@pytest.fixture(scope="module")
def demo() -> DemoData:
    return generate(n_users=1500, n_items=400, mean_history=20, seed=11)


def topics_of(demo: DemoData) -> pd.Series:
    """Each interaction's item's primary topic (the first genre)."""
    primary = demo.items.set_index("item_id")["genres"].str.split("|").str[0]
    return demo.interactions["item_id"].map(primary)


def test_same_seed_same_data_other_seed_other_data() -> None:
    first, second = generate(200, 80, 8, seed=5), generate(200, 80, 8, seed=5)
    other = generate(200, 80, 8, seed=6)
    for name in ("interactions", "items", "users"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    assert not first.interactions.equals(other.interactions)


def test_columns_dtypes_and_sizes(demo: DemoData) -> None:
    assert list(demo.interactions.columns) == ["user_id", "item_id", "timestamp", "rating"]
    assert list(demo.items.columns) == ["item_id", "title", "genres", "year"]
    assert list(demo.users.columns) == ["user_id", "age_group", "gender", "country"]
    assert demo.interactions["timestamp"].dtype == np.int64
    assert demo.interactions["rating"].dtype == np.int64
    for frame, columns in (
        (demo.interactions, ["user_id", "item_id"]),
        (demo.items, ["item_id", "title", "genres", "year"]),
        (demo.users, ["user_id", "age_group", "gender", "country"]),
    ):
        for column in columns:
            assert frame[column].dtype == STRING, column
    assert len(demo.users) == 1500 and len(demo.items) == 400
    assert demo.users["user_id"].iloc[[0, -1]].tolist() == ["u00000", "u01499"]
    assert demo.items["item_id"].iloc[[0, -1]].tolist() == ["i00000", "i00399"]
    assert demo.interactions["rating"].between(3, 5).all()
    assert set(demo.users["age_group"]) == set(AGE_GROUPS)
    assert set(demo.items["genres"].str.split("|").str[0]) <= set(TOPICS)
    assert set(demo.interactions["user_id"]) == set(demo.users["user_id"])  # everyone has a history
    assert set(demo.interactions["item_id"]) <= set(demo.items["item_id"])
    # A mean history of 20, lifted a little by the minimum of 3.
    assert 18 < len(demo.interactions) / len(demo.users) < 22


def test_ids_widen_past_five_digits_and_sort_like_their_index() -> None:
    demo = generate(n_users=100_001, n_items=8, mean_history=3, seed=1)
    ids = demo.users["user_id"]
    assert ids.iloc[[0, -1]].tolist() == ["u000000", "u100000"]
    assert ids.is_unique and ids.is_monotonic_increasing


def test_no_user_sees_an_item_twice_and_everyone_sees_three(demo: DemoData) -> None:
    assert not demo.interactions.duplicated(["user_id", "item_id"]).any()
    assert demo.interactions.groupby("user_id").size().min() >= 3
    # Tiny catalogues too: with 8 items a history is capped at 4, and repeats are frequent draws.
    tiny = generate(n_users=300, n_items=8, mean_history=10, seed=2)
    assert not tiny.interactions.duplicated(["user_id", "item_id"]).any()
    assert tiny.interactions.groupby("user_id").size().between(3, 4).all()


def test_histories_are_grouped_by_user_in_time_order(demo: DemoData) -> None:
    users = demo.interactions["user_id"]
    assert users.is_monotonic_increasing
    gaps = demo.interactions.groupby("user_id")["timestamp"].diff().dropna()
    assert gaps.min() >= 60  # strictly increasing, at least a minute apart


def test_age_group_raises_its_favoured_topic(demo: DemoData) -> None:
    """Age group a raises the prior of topic (2a) % 8: its users interact with that topic more than others."""
    in_topic = topics_of(demo)
    age = demo.interactions["user_id"].map(demo.users.set_index("user_id")["age_group"])
    for index, group in enumerate(AGE_GROUPS):
        favoured = in_topic == TOPICS[(2 * index) % len(TOPICS)]
        mine, others = favoured[age == group].mean(), favoured[age != group].mean()
        assert mine > others + 0.05, (group, mine, others)


def test_histories_follow_the_series_within_a_topic(demo: DemoData) -> None:
    """Half the steps are "the next item of the last one's topic": consecutive pairs show it far above chance."""
    topic = demo.items["genres"].str.split("|").str[0]
    # Items of a topic in id order: the series a walk follows.
    series = demo.items.assign(topic=topic).sort_values(["topic", "item_id"]).reset_index(drop=True)
    position = pd.Series(series.index, index=series["item_id"])
    step = demo.interactions["item_id"].map(position).to_numpy()
    user = demo.interactions["user_id"].to_numpy()
    same_user = user[1:] == user[:-1]
    same_topic = series["topic"].to_numpy()[step[1:]] == series["topic"].to_numpy()[step[:-1]]
    # Next, or a little further when the next was seen already.
    ahead = np.diff(step)
    follows = same_topic & (ahead >= 1) & (ahead <= 3)
    share = follows[same_user].mean()
    chance = 3 / len(demo.items)
    assert share > 0.35 > 20 * chance, share


def test_write_csv_is_what_pandas_writes_and_parquet_round_trips(tmp_path: Path) -> None:
    demo = generate(n_users=60, n_items=40, mean_history=6, seed=4)
    paths = demo.write(tmp_path / "csv")
    assert {name: path.name for name, path in paths.items()} == {
        "interactions": "interactions.csv",
        "items": "items.csv",
        "users": "users.csv",
    }
    for name, path in paths.items():
        assert path.read_text() == getattr(demo, name).to_csv(index=False), name
    loaded = pd.read_csv(paths["interactions"], dtype={"user_id": str, "item_id": str})
    pd.testing.assert_frame_equal(loaded, demo.interactions)

    paths = demo.write(tmp_path / "parquet", format="parquet")
    for name, path in paths.items():
        assert path.suffix == ".parquet"
        pd.testing.assert_frame_equal(pd.read_parquet(path), getattr(demo, name))
    with pytest.raises(ValueError, match="format"):
        demo.write(tmp_path / "other", format="json")


def test_last_resort_fill_completes_short_histories_with_unseen_items() -> None:
    """What the generator falls back on if top-ups ever leave a user short: the history so far stays first."""
    users = np.array([1, 1, 2], dtype=np.int32)
    items = np.array([3, 5, 0])
    pending = np.array([False, True, True])
    users, items = _fill_uniformly(np.random.default_rng(0), users, items, pending, np.array([0, 4, 8]), 8)
    assert users.tolist() == [1] * 4 + [2] * 8
    assert items[:2].tolist() == [3, 5] and items[4] == 0
    assert sorted(items[4:].tolist()) == list(range(8))
    assert len(set(items[:4].tolist())) == 4


def test_rejects_tiny_parameters() -> None:
    with pytest.raises(ValueError):
        generate(n_users=0)
    with pytest.raises(ValueError):
        generate(n_users=10, n_items=7)
    with pytest.raises(ValueError):
        generate(n_users=10, n_items=40, mean_history=2)
