"""Items without interactions: a content autoencoder over their attributes, and the score they borrow."""

from __future__ import annotations

import numpy as np
import pandas as pd

from recsys_runtime.models.cold_items import ColdItemTransfer
from recsys_runtime.workflow import Workflow
from trainer.config import load_config
from trainer.models.item_autoencoder import cold_neighbours, item_features, train_item_codes


def catalogue() -> tuple[Workflow, pd.DataFrame]:
    genres = ["horror", "comedy", "romance", "documentary"]
    items = pd.DataFrame(
        {
            "item_id": [f"i{n:03d}" for n in range(80)],
            "genres": [genres[n % 4] + ("|" + genres[(n + 1) % 4] if n % 5 == 0 else "") for n in range(80)],
            "year": [str(1950 + (n % 4) * 20 + n % 7) for n in range(80)],
        }
    )
    # Items 0..59 have interactions; 60..79 exist only in the catalogue.
    interactions = pd.DataFrame(
        {"user_id": [f"u{n % 7}" for n in range(60)], "item_id": [f"i{n:03d}" for n in range(60)], "timestamp": 1}
    )
    workflow = Workflow.fit(interactions, 10, items=items, options={"attribute_kinds": {"year": "numeric"}})
    return workflow, items


def test_catalogue_items_without_interactions_enter_the_vocabulary() -> None:
    workflow, _ = catalogue()
    assert len(workflow.items) == 80
    assert workflow.items.encode(["i079"])[0] > 0


def test_features_align_with_item_indices() -> None:
    workflow, items = catalogue()
    features = item_features(workflow.item_attributes, items, workflow.items.ids)
    assert features.shape[0] == workflow.items.size
    dense = features.toarray()
    assert not dense[0].any(), "row 0 is the out-of-vocabulary bucket"
    same_genre = workflow.items.encode(["i004", "i008"])
    assert np.array_equal(dense[same_genre[0]][:5] > 0, dense[same_genre[1]][:5] > 0)


def test_cold_items_borrow_from_content_neighbours() -> None:
    workflow, items = catalogue()
    config = dict(load_config()["item_autoencoder"])
    config.update(epochs=150, batch_size=16, learning_rate=0.01)
    codes, losses = train_item_codes(item_features(workflow.item_attributes, items, workflow.items.ids), config, 0)
    assert losses[-1] < losses[0]
    warm = np.zeros(workflow.items.size, dtype=bool)
    warm[workflow.items.encode([f"i{n:03d}" for n in range(60)])] = True
    neighbours = cold_neighbours(codes, warm, 5)
    cold = np.flatnonzero(~warm)[1:]
    horror_cold, comedy_cold = workflow.items.encode(["i064", "i061"])  # genres horror, comedy
    horror_warm = workflow.items.encode([f"i{n:03d}" for n in range(60) if n % 4 == 0])
    # A horror cold item's neighbours are mostly horror items.
    assert np.isin(neighbours.indices[horror_cold], horror_warm).mean() >= 0.6
    # A user whose model probability mass sits on horror items: the horror cold item outranks the comedy one.
    probabilities = np.full(workflow.items.size, 1e-4)
    probabilities[horror_warm] = 0.05
    probabilities[0] = 0.0
    probabilities[cold] = 0.0
    transferred = ColdItemTransfer(neighbours, cold, 1.0).apply(probabilities)
    assert transferred[horror_cold] > transferred[comedy_cold] > 0
    assert np.array_equal(transferred[warm], probabilities[warm]), "warm items keep their own scores"
