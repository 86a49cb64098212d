"""A generated demo data set with real latent structure, so a fresh machine has something to learn from.

Items belong to topics and have a Zipf-like popularity; users have topic preferences that depend on their
attributes (age group and country), so even a cold user's attributes say something; histories are
time-ordered and sequential (the next item is often the next one of the last in its topic). Same seed, same
data.

Everything is drawn in bulk with numpy, so ten million interactions take seconds, not hours. The model:

- Item i has a topic t(i), sometimes a second genre, and a popularity p(i) ~ Zipf(1.6) clipped to [1, 200].
- User u has a preference w(u) ~ Dirichlet(1 + 3 [topic 2*age] + 1.5 [topic country+3]) over the topics,
  and a history length L(u) = min(max(3, Geometric(1 / mean_history)), n_items // 2).
- A history is a walk: each step is, with probability 1/2, the next item (by id) of the previous step's
  topic, otherwise a fresh draw with probability proportional to w(u)[t(i)] * p(i); a walk that runs past
  the end of its topic takes the fresh draw instead. The first step is a fresh draw.
- A user sees an item once. A fresh draw of an item already in the history is rejected and the next step
  draws afresh (the old per-interaction loop redrew in place, up to 20 times, and kept a repeat when all
  20 failed: now no history repeats an item). A following step onto a seen item is dropped and the walk
  looks one item further along, at most three ahead, as the old loop did.
- Drawing all steps at once needs the walk's length up front: each user gets an eighth more steps than
  L(u); the steps past L(u) distinct items are dropped, and the few users left short walk on from their
  last step until they have L(u). Steps are drawn for blocks of USERS_PER_BLOCK users at a time, so the
  data of a seed depend on that constant as well.
- Gaps between a user's events are 60 s plus an exponential with a mean of 6 h, from a start in the
  first year after START_TIME; ratings are uniform in 3..5.

Ids are the prefix and the index, zero padded to 5 digits or as many as the largest index needs, so they
stay unique and sort like the indices.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

TOPICS = ("action", "comedy", "drama", "documentary", "horror", "romance", "scifi", "animation")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
COUNTRIES = ("de", "fr", "es", "it", "uk", "us")
START_TIME = 1_600_000_000  # 2020-09-13, seconds

FOLLOW_PROBABILITY = 0.5  # chance that the next step is the next item of the last one's topic
MEAN_GAP_S = 6 * 3600
MIN_GAP_S = 60
MIN_HISTORY = 3
MAX_TOP_UPS = 12  # draws for users left short after dropping repeats; each draws twice as many as the last
# Users whose histories are drawn together: the block's arrays (a few MB) stay in cache and are reused by the
# allocator, where arrays over all ten million steps at once cost as much in page faults as in arithmetic.
USERS_PER_BLOCK = 1 << 14
TABLES = ("interactions", "items", "users")
FORMATS = ("csv", "parquet")
# pandas' own string dtype ("str"): Arrow-backed, so ten million ids are not ten million Python objects.
STRING = pd.StringDtype("pyarrow", na_value=np.nan)


@dataclass
class DemoData:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    def write(self, directory: Path, format: str = "csv") -> dict[str, Path]:
        """Write the three tables as `<name>.csv` (the default) or `<name>.parquet` into `directory`.

        CSV goes through Arrow's writer, which is many times faster than DataFrame.to_csv and writes the same
        bytes for these tables (no value needs quoting; one that did would raise rather than be written).
        """
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
        directory.mkdir(parents=True, exist_ok=True)
        paths = {name: directory / f"{name}.{format}" for name in TABLES}
        for name, frame in zip(TABLES, (self.interactions, self.items, self.users), strict=True):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            if format == "parquet":
                pq.write_table(table, paths[name])
            else:
                with paths[name].open("wb") as out:
                    # Arrow quotes header names whatever the style; pandas (and every reader) takes them bare.
                    out.write((",".join(table.column_names) + "\n").encode())
                    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
        return paths


@dataclass(frozen=True)
class _Catalogue:
    """Items sorted by topic (then id), and popularity as tickets for O(1) inverse-CDF draws within a topic."""

    order: np.ndarray  # sorted position -> item index
    tickets: np.ndarray  # one entry per unit of popularity: ticket -> sorted position
    position_end: np.ndarray  # per sorted position: one past the last sorted position of its topic
    below: np.ndarray  # per topic: tickets of all earlier topics
    mass: np.ndarray  # per topic: its tickets (total popularity)
    nearest: np.ndarray  # per topic: itself if it has items, else the nearest earlier topic that has

    @classmethod
    def of(cls, item_topic: np.ndarray, popularity: np.ndarray, n_topics: int) -> _Catalogue:
        order = np.argsort(item_topic, kind="stable").astype(np.int32)
        # Popularity is a whole number (at most 200), so a table with one ticket per unit is small and exact.
        tickets = np.repeat(np.arange(len(order), dtype=np.int32), popularity[order])
        total_before = np.concatenate(([0], np.cumsum(popularity[order])))
        sorted_topics = item_topic[order]
        start = np.searchsorted(sorted_topics, np.arange(n_topics), side="left").astype(np.int32)
        end = np.searchsorted(sorted_topics, np.arange(n_topics), side="right").astype(np.int32)
        below = total_before[start]
        mass = total_before[end] - below
        has_items = mass > 0
        nearest = np.maximum.accumulate(np.where(has_items, np.arange(n_topics, dtype=np.int8), np.int8(-1)))
        nearest[nearest < 0] = int(np.argmax(has_items))  # only reachable by rounding, never for real mass
        return cls(order, tickets, end[sorted_topics], below, mass, nearest)


def generate(n_users: int = 2000, n_items: int = 600, mean_history: int = 40, seed: int = 7) -> DemoData:
    if n_users < 1 or n_items < len(TOPICS) or mean_history < MIN_HISTORY:
        raise ValueError("need at least 1 user, one item per topic and a mean history of 3")
    rng = np.random.default_rng(seed)
    n_topics = len(TOPICS)

    item_topic = rng.integers(0, n_topics, n_items)
    second_topic = np.where(rng.random(n_items) < 0.3, rng.integers(0, n_topics, n_items), -1)
    item_popularity = rng.zipf(1.6, n_items).clip(1, 200)
    year = 1980 + 5 * item_topic + rng.integers(0, 20, n_items)
    item_ids = _ids("i", n_items)
    items = pd.DataFrame(
        {
            "item_id": _strings(item_ids),
            "title": _strings([f"{TOPICS[t].title()} story {i}" for i, t in enumerate(item_topic)]),
            "genres": _strings(
                [
                    TOPICS[t] if s < 0 or s == t else f"{TOPICS[t]}|{TOPICS[s]}"
                    for t, s in zip(item_topic, second_topic, strict=True)
                ]
            ),
            "year": _strings(pc.cast(pa.array(year), pa.string())),
        }
    )
    catalogue = _Catalogue.of(item_topic, item_popularity, n_topics)

    age = rng.integers(0, len(AGE_GROUPS), n_users)
    country = rng.integers(0, len(COUNTRIES), n_users)
    gender = rng.choice(3, n_users, p=[0.48, 0.48, 0.04])
    user_ids = _ids("u", n_users)
    users = pd.DataFrame(
        {
            "user_id": _strings(user_ids),
            "age_group": _strings(pc.take(pa.array(AGE_GROUPS), age)),
            "gender": _strings(pc.take(pa.array(["f", "m", "x"]), gender)),
            "country": _strings(pc.take(pa.array(COUNTRIES), country)),
        }
    )
    # Attributes shift the prior over topics, so they carry (some) signal for cold users.
    alpha = np.ones((n_users, n_topics))
    alpha[np.arange(n_users), (age * 2) % n_topics] += 3.0
    alpha[np.arange(n_users), (country + 3) % n_topics] += 1.5
    preference = rng.standard_gamma(alpha)  # normalised below: a Dirichlet(alpha) draw per user
    # A fresh draw picks topic t with probability proportional to preference[t] times the topic's popularity,
    # then an item within it by popularity: the same as drawing items by preference[t(i)] * popularity[i].
    topic_weight = preference * catalogue.mass
    topic_cdf = np.cumsum(topic_weight, axis=1) / topic_weight.sum(axis=1, keepdims=True)
    # One contiguous row per topic boundary, so gathering it for every step is a plain 1-D take.
    boundaries = np.ascontiguousarray(topic_cdf[:, :-1].T)
    del alpha, preference, topic_weight, topic_cdf

    lengths = np.minimum(np.maximum(MIN_HISTORY, rng.geometric(1.0 / mean_history, n_users)), n_items // 2)
    blocks = [
        _histories(rng, lengths[first : first + USERS_PER_BLOCK], boundaries[:, first:], catalogue, n_items)
        for first in range(0, n_users, USERS_PER_BLOCK)
    ]
    rows_user = np.concatenate(
        [
            block_users + first
            for (block_users, _), first in zip(blocks, range(0, n_users, USERS_PER_BLOCK), strict=True)
        ]
    )
    rows_item = np.concatenate([block_items for _, block_items in blocks])
    del blocks

    n_rows = len(rows_user)
    history_starts = _group_starts(rows_user)
    gaps = rng.exponential(MEAN_GAP_S, n_rows).astype(np.int64) + MIN_GAP_S
    gaps[history_starts] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[_group_start_index(history_starts)]
    start_time = START_TIME + rng.integers(0, 365 * 86_400, n_users)
    interactions = pd.DataFrame(
        {
            "user_id": _strings(pc.take(user_ids, rows_user)),
            "item_id": _strings(pc.take(item_ids, rows_item)),
            "timestamp": (start_time[rows_user] + elapsed).astype(np.int64),
            "rating": rng.integers(3, 6, n_rows),
        }
    )
    return DemoData(interactions, items, users)


def _histories(
    rng: np.random.Generator, lengths: np.ndarray, boundaries: np.ndarray, catalogue: _Catalogue, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's history as (user, item) rows, grouped by user in time order, lengths[u] distinct items."""
    n_users = len(lengths)
    # An eighth more steps than needed covers what dropping repeats costs nearly everyone in a large catalogue
    # (all but a few dozen of a million users); small catalogues repeat more and take a few top-ups.
    users = np.repeat(np.arange(n_users, dtype=np.int32), lengths + lengths // 8 + 2)
    drawn, follows = _fresh_draws(rng, users, boundaries, catalogue)
    follows[_group_starts(users)] = False  # a history starts with a fresh draw
    steps = _first_visits(users, _distinct_walks(users, drawn, follows, catalogue), lengths)
    done_users: list[np.ndarray] = []
    done_steps: list[np.ndarray] = []
    pending = np.ones(n_users, dtype=bool)
    for top_up in range(MAX_TOP_UPS + 1):
        users, steps = users[steps >= 0], steps[steps >= 0]
        short = pending & (np.bincount(users, minlength=n_users) < lengths)
        finished = ~short[users]
        done_users.append(users[finished])
        done_steps.append(steps[finished])
        users, steps = users[~finished], steps[~finished]
        pending = short
        if not pending.any() or top_up == MAX_TOP_UPS:
            break
        # Users still short walk on: their shortfall times 2, 4, 8, ... (per top-up) plus two more steps. The
        # history so far stays as it is (each step its own draw, following nothing), and the walk goes on from
        # its last step.
        missing = lengths - np.bincount(users, minlength=n_users)
        more = np.repeat(np.arange(n_users, dtype=np.int32), np.where(pending, missing * 2 ** (top_up + 1) + 2, 0))
        more_drawn, more_follows = _fresh_draws(rng, more, boundaries, catalogue)
        order = np.argsort(np.concatenate((users, more)), kind="stable")  # a user's earlier steps stay first
        users = np.concatenate((users, more))[order]
        drawn = np.concatenate((steps, more_drawn))[order]
        follows = np.concatenate((np.zeros(len(steps), dtype=bool), more_follows))[order]
        steps = _first_visits(users, _distinct_walks(users, drawn, follows, catalogue), lengths)
    if pending.any():
        # Unreachable in practice; the promise of lengths[u] distinct items must not rest on luck.
        users, steps = _fill_uniformly(rng, users, steps, pending, lengths, n_items)
        done_users.append(users)
        done_steps.append(steps)
    users, steps = np.concatenate(done_users), np.concatenate(done_steps)
    if len(done_users) > 1:
        order = np.argsort(users, kind="stable")
        users, steps = users[order], steps[order]
    return users, catalogue.order[steps]


def _fresh_draws(
    rng: np.random.Generator, users: np.ndarray, boundaries: np.ndarray, catalogue: _Catalogue
) -> tuple[np.ndarray, np.ndarray]:
    """For every step (grouped by user), a fresh draw as a sorted position, and whether the step follows instead.

    A fresh draw takes a topic by the user's weights and an item within it by popularity.
    """
    n = len(users)
    pick = rng.random(n)
    topic = np.zeros(n, dtype=np.int8)
    for boundary in boundaries:  # inverse CDF over the topics, one boundary at a time
        topic += pick >= boundary[users]
    del pick
    topic = catalogue.nearest[topic]
    mass = catalogue.mass[topic]
    ticket = np.minimum((rng.random(n) * mass).astype(np.int64), mass - 1)  # min: rounding of u * mass up
    drawn = catalogue.tickets[catalogue.below[topic] + ticket]
    del mass, ticket
    return drawn, rng.random(n) < FOLLOW_PROBABILITY


def _distinct_walks(users: np.ndarray, drawn: np.ndarray, follows: np.ndarray, catalogue: _Catalogue) -> np.ndarray:
    """The walks' sorted positions, with -1 for a step that repeats an earlier one of its user.

    A fresh draw of an item the user has seen is rejected, as the per-step loop rejected it by drawing again:
    the walk does not go on from it, the step after it draws afresh. (Going on would put the items after
    every popular item into many more histories than the model means.) A following step onto a seen item
    makes the step after it follow as well, at most twice in a row: the loop's look up to three items ahead.
    Whether a step repeats depends on the steps before it, so one pass settles each user's first open case
    and only those users' walks are redone: a few passes in a large catalogue, more in a small one.
    """
    follows = follows.copy()
    walked = np.empty_like(drawn)
    repeated = np.empty(len(drawn), dtype=bool)
    rows = np.arange(len(drawn))  # the rows of the users whose walks may still change
    is_open = np.zeros(int(users.max(initial=0)) + 1, dtype=bool)
    while rows.size:
        open_users, open_follows = users[rows], follows[rows]
        walked[rows] = _follow_series(drawn[rows], open_follows.copy(), catalogue.position_end)
        repeated[rows] = _repeats(open_users, walked[rows], len(catalogue.order))
        open_repeated = repeated[rows]
        # A repeated following step, one of at most two in a row: the walk looks one item further along.
        seen_ahead = open_repeated & open_follows
        two_before = np.concatenate(([False, False], seen_ahead[1:-1] & seen_ahead[:-2]))
        same_user = open_users[1:] == open_users[:-1]
        looks_on = (seen_ahead & ~two_before)[:-1] & ~open_follows[1:] & same_user
        rejected = open_repeated[:-1] & ~open_follows[:-1] & open_follows[1:]
        changes = np.flatnonzero(rejected | looks_on)
        first = changes[_group_starts(open_users[changes])]
        follows[rows[first + 1]] = ~follows[rows[first + 1]]
        is_open[:] = False
        is_open[open_users[first]] = True
        rows = rows[is_open[open_users]]
    return np.where(repeated, -1, walked)


def _follow_series(drawn: np.ndarray, follows: np.ndarray, position_end: np.ndarray) -> np.ndarray:
    """Sorted positions of the walk: a following step is one past the step before it, else its own draw.

    A run of following steps from a draw at position p gives p+1, p+2, ...; where that passes the end of
    the draw's topic, the step takes its own draw instead and the run starts again from there. One pass per
    such restart within a run: rare once topics have more than a handful of items. Updates `follows`.
    """
    position = np.arange(len(drawn), dtype=np.int64 if len(drawn) >= 2**31 else np.int32)
    while True:
        run_start = np.maximum.accumulate(np.where(follows, 0, position))
        origin = drawn[run_start]
        walked = origin + (position - run_start)
        past_end = walked >= position_end[origin]
        if not past_end.any():
            return walked
        # Only the first step past the end restarts; the ones after it follow the new draw.
        follows[past_end & ~np.concatenate(([False], past_end[:-1]))] = False


def _repeats(users: np.ndarray, steps: np.ndarray, n_positions: int) -> np.ndarray:
    """True where a step repeats an earlier step of the same user."""
    key = users.astype(np.int64) * n_positions + steps
    # Rows come grouped by user, so this stable sort mostly merges runs; equal keys keep their step order.
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    repeated = np.zeros(len(key), dtype=bool)
    repeated[order[1:][ordered[1:] == ordered[:-1]]] = True
    return repeated


def _first_visits(users: np.ndarray, steps: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`steps` (-1 for a repeat) with the steps beyond each user's length set to -1 as well."""
    kept = steps >= 0
    # A kept step's rank within its user (from 1): kept steps so far, less those before the user's first.
    seen = np.cumsum(kept)
    start = _group_start_index(_group_starts(users))
    kept &= seen - (seen[start] - kept[start]) <= lengths[users]
    return np.where(kept, steps, -1)


def _fill_uniformly(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    pending: np.ndarray,
    lengths: np.ndarray,
    n_items: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Complete the histories still short with items (in any numbering 0..n_items-1) they have not seen,
    uniformly: a per-user loop."""
    out_users, out_items = [users], [items]
    for user in np.flatnonzero(pending):
        have = items[users == user]
        unseen = np.setdiff1d(np.arange(n_items), have)
        extra = rng.choice(unseen, int(lengths[user]) - len(have), replace=False)
        out_users.append(np.full(len(extra), user, dtype=users.dtype))
        out_items.append(extra)
    users, items = np.concatenate(out_users), np.concatenate(out_items)
    order = np.argsort(users, kind="stable")
    return users[order], items[order]


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """True where a run of equal keys begins."""
    starts = np.ones(len(keys), dtype=bool)
    starts[1:] = keys[1:] != keys[:-1]
    return starts


def _group_start_index(starts: np.ndarray) -> np.ndarray:
    """For every element, the index at which its run begins."""
    return np.maximum.accumulate(np.where(starts, np.arange(len(starts)), 0))


def _ids(prefix: str, n: int) -> pa.Array:
    """prefix + index, zero padded to at least 5 digits: unique, and sorted like the indices."""
    width = max(5, len(str(n - 1)))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _strings(values: pa.Array | pa.ChunkedArray | list[str]) -> pd.Series:
    """A pandas "str" column straight from Arrow memory, with no Python object per value."""
    array = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values, pa.string())
    return pd.Series(array, dtype=STRING)
