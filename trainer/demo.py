"""A generated demo data set with real latent structure, so a fresh machine has something to learn from.

Items belong to topics and have a popularity; users have topic preferences that depend on their
attributes; histories are time-ordered and sequential (the next item is often a neighbour of the
last one in its topic). Same seed, same data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TOPICS = ("action", "comedy", "drama", "documentary", "horror", "romance", "scifi", "animation")
AGE_GROUPS = ("18-24", "25-34", "35-44", "45-54", "55+")
COUNTRIES = ("de", "fr", "es", "it", "uk", "us")
START_TIME = 1_600_000_000  # 2020-09-13, seconds


@dataclass
class DemoData:
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame

    def write(self, directory: Path) -> dict[str, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = {name: directory / f"{name}.csv" for name in ("interactions", "items", "users")}
        self.interactions.to_csv(paths["interactions"], index=False)
        self.items.to_csv(paths["items"], index=False)
        self.users.to_csv(paths["users"], index=False)
        return paths


def generate(n_users: int = 2000, n_items: int = 600, mean_history: int = 40, seed: int = 7) -> DemoData:
    if n_users < 1 or n_items < len(TOPICS) or mean_history < 3:
        raise ValueError("need at least 1 user, one item per topic and a mean history of 3")
    rng = np.random.default_rng(seed)
    n_topics = len(TOPICS)

    item_topic = rng.integers(0, n_topics, n_items)
    second_topic = np.where(rng.random(n_items) < 0.3, rng.integers(0, n_topics, n_items), -1)
    item_popularity = rng.zipf(1.6, n_items).clip(1, 200).astype(float)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i:05d}" for i in range(n_items)],
            "title": [f"{TOPICS[t].title()} story {i}" for i, t in enumerate(item_topic)],
            "genres": [
                TOPICS[t] if s < 0 or s == t else f"{TOPICS[t]}|{TOPICS[s]}"
                for t, s in zip(item_topic, second_topic, strict=True)
            ],
            "year": (1980 + 5 * item_topic + rng.integers(0, 20, n_items)).astype(str),
        }
    )
    # Items of a topic in a fixed order: "next in the series" gives histories their sequential signal.
    by_topic = [np.flatnonzero(item_topic == t) for t in range(n_topics)]

    age = rng.integers(0, len(AGE_GROUPS), n_users)
    country = rng.integers(0, len(COUNTRIES), n_users)
    gender = rng.choice(np.array(["f", "m", "x"]), n_users, p=[0.48, 0.48, 0.04])
    users = pd.DataFrame(
        {
            "user_id": [f"u{u:05d}" for u in range(n_users)],
            "age_group": [AGE_GROUPS[a] for a in age],
            "gender": gender,
            "country": [COUNTRIES[c] for c in country],
        }
    )
    # Attributes shift the prior over topics, so they carry (some) signal for cold users.
    base = np.ones((n_users, n_topics))
    base[np.arange(n_users), (age * 2) % n_topics] += 3.0
    base[np.arange(n_users), (country + 3) % n_topics] += 1.5
    preference = np.vstack([rng.dirichlet(row) for row in base])

    rows_user, rows_item, rows_time = [], [], []
    for user in range(n_users):
        length = int(max(3, rng.geometric(1.0 / mean_history)))
        weights = preference[user][item_topic] * item_popularity
        weights /= weights.sum()
        t = START_TIME + int(rng.integers(0, 365 * 86_400))
        seen: set[int] = set()
        current = int(rng.choice(n_items, p=weights))
        for _ in range(min(length, n_items // 2)):
            seen.add(current)
            rows_user.append(user)
            rows_item.append(current)
            rows_time.append(t)
            t += int(rng.exponential(6 * 3600)) + 60
            topic_items = by_topic[item_topic[current]]
            position = int(np.searchsorted(topic_items, current))
            following = [int(i) for i in topic_items[position + 1 : position + 4] if int(i) not in seen]
            if following and rng.random() < 0.5:
                current = following[0]
                continue
            for _attempt in range(20):
                current = int(rng.choice(n_items, p=weights))
                if current not in seen:
                    break
    interactions = pd.DataFrame(
        {
            "user_id": [f"u{u:05d}" for u in rows_user],
            "item_id": [f"i{i:05d}" for i in rows_item],
            "timestamp": np.asarray(rows_time, dtype=np.int64),
            "rating": rng.integers(3, 6, len(rows_user)),
        }
    )
    return DemoData(interactions, items, users)
