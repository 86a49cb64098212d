"""Cold-item benchmark: how well generated item vectors stand in for trained ones.

20% of the warm items are held out; an item generator is trained (the artefact's [gan] settings) on the
rest. For every held-out item and every user (of the first --users) who interacted with it, the item's
rank among all items for that user (Mult-VAE logits of the user's history without held-out items) is
computed with four vectors in the same run: the real trained one (the ceiling), the generator's
(expected over 64 samples), and two baselines: the mean vector of the 10 warm items nearest by
attributes, and the mean vector of all warm items.

    .venv/bin/python bench/cold_items_bench.py --artifacts ARTIFACTS [--users 400]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recsys_runtime.artifacts import load_manifest, resolve_version  # noqa: E402
from recsys_runtime.layout import CATALOG_DIR, HISTORIES_FILE, MODELS_DIR, WORKFLOW_DIR  # noqa: E402
from recsys_runtime.models.candidates import AutoencoderCandidates, item_vectors, load_candidate_scorer  # noqa: E402
from recsys_runtime.models.popularity import load_popularity  # noqa: E402
from recsys_runtime.workflow import Workflow  # noqa: E402
from trainer.models.gan import train_conditional_wgan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    version = resolve_version(args.artifacts)
    config = load_manifest(version)["config"]
    workflow = Workflow.load(version / WORKFLOW_DIR)
    popularity = load_popularity(version / MODELS_DIR)
    model = load_candidate_scorer(version / MODELS_DIR, config, popularity).model
    if not isinstance(model, AutoencoderCandidates):
        raise SystemExit("the artefact's candidate model has no item vectors")
    scorer = model.scorer
    items = pd.read_parquet(version / CATALOG_DIR / "items.parquet")
    conditions = workflow.item_attributes.sparse_table(items, workflow.items.ids).toarray()  # ml-100k: small
    targets = item_vectors(scorer)

    rng = np.random.default_rng(0)
    warm = np.flatnonzero(popularity > 0)
    warm = warm[warm > 0]
    held = np.sort(rng.choice(warm, len(warm) // 5, replace=False))
    kept = np.setdiff1d(warm, held)
    gan = config["gan"]
    generator, _ = train_conditional_wgan(
        conditions[kept],
        targets[kept],
        {**gan, "steps": gan["item_steps"]},
        config["seed"],
        "linear",
        reconstruction_weight=float(gan["item_reconstruction"]),
        row_weights=popularity[kept].astype(np.float64) ** float(gan["item_popularity_exponent"]),
    )
    generated = generator.expected(conditions[held], rng, 64)
    unit = conditions / np.maximum(np.linalg.norm(conditions, axis=1, keepdims=True), 1e-9)
    nearest = np.argsort(-(unit[held] @ unit[kept].T), axis=1)[:, :10]
    neighbours = targets[kept][nearest].mean(axis=1)
    average = np.repeat(targets[kept].mean(axis=0, keepdims=True), len(held), axis=0)

    histories = pd.read_parquet(version / HISTORIES_FILE)
    encoded = workflow.encode_interactions(histories.astype({"user_id": str, "item_id": str}))
    by_user = encoded.groupby("user_index")["item_index"].apply(np.asarray)
    kernel, bias = scorer.item_matrix()
    position = {int(item): n for n, item in enumerate(held)}
    ranks: dict[str, list[int]] = {"real": [], "generated": [], "attribute neighbours": [], "average item": []}
    for user_items in list(by_user)[: args.users]:
        hits = [int(i) for i in user_items if int(i) in position]
        if not hits:
            continue
        visible = np.setdiff1d(user_items, held)
        state = scorer.user_state(visible)
        others = np.delete(state @ kernel + bias, np.concatenate([[0], held, visible]))
        for item in hits:
            n = position[item]
            for name, vector in (
                ("real", targets[item]),
                ("generated", generated[n]),
                ("attribute neighbours", neighbours[n]),
                ("average item", average[n]),
            ):
                ranks[name].append(int(np.sum(others > state @ vector[:-1] + vector[-1])))
    results = {
        name: {
            "pairs": len(values),
            "top20": float(np.mean(np.asarray(values) < 20)),
            "top100": float(np.mean(np.asarray(values) < 100)),
            "median_rank": float(np.median(values)),
        }
        for name, values in ranks.items()
    }
    print(f"\nheld-out items {len(held)} of {len(warm)} warm; (user, held-out item) pairs {results['real']['pairs']}")
    for name, row in results.items():
        print(
            f"  {name:22} in top-20 {row['top20']:.3f}   in top-100 {row['top100']:.3f}"
            f"   median rank {row['median_rank']:.0f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
