"""Training configuration: packaged defaults (defaults.toml) overridden by a user's TOML file."""

from __future__ import annotations

import copy
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from recsys_runtime.attributes import KINDS, SCALINGS

CANDIDATE_MODELS = ("autoencoder", "item_knn")


class ConfigError(ValueError):
    """The configuration file names an unknown key or has a value of the wrong type."""


def defaults() -> dict[str, Any]:
    text = resources.files("trainer").joinpath("defaults.toml").read_text()
    return tomllib.loads(text)


def _merge(base: dict[str, Any], override: dict[str, Any], path: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        where = f"{path}{key}"
        if key not in base:
            raise ConfigError(f"unknown configuration key {where!r}")
        default = base[key]
        if isinstance(default, list) and default and all(isinstance(v, str) for v in default):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{where!r} must be list of strings")
            merged[key] = list(value)
            continue
        if isinstance(default, list):
            integers = all(isinstance(v, int) for v in default)
            allowed = (int,) if integers else (int, float)
            if not isinstance(value, list) or not all(
                isinstance(v, allowed) and not isinstance(v, bool) for v in value
            ):
                raise ConfigError(f"{where!r} must be list of {'integers' if integers else 'numbers'}")
            merged[key] = [int(v) for v in value] if integers else [float(v) for v in value]
            continue
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where!r} must be a table")
            if not default:  # an empty table in the defaults is free-form: names to strings
                if not all(isinstance(v, str) for v in value.values()):
                    raise ConfigError(f"{where!r} values must be strings")
                merged[key] = dict(value)
                continue
            merged[key] = _merge(default, value, f"{where}.")
            continue
        # ints are accepted where floats are expected; bools never pass as numbers
        if isinstance(default, bool) != isinstance(value, bool) or (
            not isinstance(value, type(default)) and not (isinstance(default, float) and isinstance(value, int))
        ):
            raise ConfigError(f"{where!r} must be {type(default).__name__}, got {type(value).__name__}")
        merged[key] = float(value) if isinstance(default, float) else value
    return merged


def _check_ranges(config: dict[str, Any]) -> None:
    checks = [
        (config["workflow"]["max_history"] >= 1, "workflow.max_history must be >= 1"),
        (config["workflow"]["numeric_scaling"] in SCALINGS, f"workflow.numeric_scaling must be one of {SCALINGS}"),
        (config["workflow"]["min_category_count"] >= 1, "workflow.min_category_count must be >= 1"),
        (config["workflow"]["max_tokens"] >= 1, "workflow.max_tokens must be >= 1"),
        (config["workflow"]["max_text_vocabulary"] >= 1, "workflow.max_text_vocabulary must be >= 1"),
        (
            all(kind in KINDS for kind in config["workflow"]["attribute_kinds"].values()),
            f"workflow.attribute_kinds values must be one of {KINDS}",
        ),
        (config["item_knn"]["neighbours"] >= 1, "item_knn.neighbours must be >= 1"),
        (config["candidates"]["model"] in CANDIDATE_MODELS, f"candidates.model must be one of {CANDIDATE_MODELS}"),
        (config["candidates"]["popularity_shrinkage"] >= 0, "candidates.popularity_shrinkage must be >= 0"),
        (config["candidates"]["ann_min_items"] >= 1, "candidates.ann_min_items must be >= 1"),
        (config["candidates"]["ann_nprobe"] >= 1, "candidates.ann_nprobe must be >= 1"),
        (0 <= config["candidates"]["generated_weight"] <= 1, "candidates.generated_weight must be in [0, 1]"),
        (config["autoencoder"]["variant"] in ("vae", "dae"), "autoencoder.variant must be vae or dae"),
        (
            len(config["autoencoder"]["hidden"]) >= 1 and min(config["autoencoder"]["hidden"]) >= 1,
            "autoencoder.hidden must list positive sizes",
        ),
        (config["autoencoder"]["latent"] >= 1, "autoencoder.latent must be >= 1"),
        (0 <= config["autoencoder"]["dropout"] < 1, "autoencoder.dropout must be in [0, 1)"),
        (config["autoencoder"]["beta_max"] >= 0, "autoencoder.beta_max must be >= 0"),
        (config["autoencoder"]["anneal_steps"] >= 1, "autoencoder.anneal_steps must be >= 1"),
        (config["autoencoder"]["l2"] >= 0, "autoencoder.l2 must be >= 0"),
        (config["autoencoder"]["learning_rate"] > 0, "autoencoder.learning_rate must be > 0"),
        (config["autoencoder"]["batch_size"] >= 1, "autoencoder.batch_size must be >= 1"),
        (config["autoencoder"]["epochs"] >= 1, "autoencoder.epochs must be >= 1"),
        (config["autoencoder"]["patience"] >= 1, "autoencoder.patience must be >= 1"),
        (config["item_autoencoder"]["hidden"] >= 1, "item_autoencoder.hidden must be >= 1"),
        (config["item_autoencoder"]["code"] >= 1, "item_autoencoder.code must be >= 1"),
        (config["item_autoencoder"]["epochs"] >= 1, "item_autoencoder.epochs must be >= 1"),
        (config["item_autoencoder"]["batch_size"] >= 1, "item_autoencoder.batch_size must be >= 1"),
        (config["item_autoencoder"]["learning_rate"] > 0, "item_autoencoder.learning_rate must be > 0"),
        (config["item_autoencoder"]["neighbours"] >= 1, "item_autoencoder.neighbours must be >= 1"),
        (config["item_autoencoder"]["content_weight"] >= 0, "item_autoencoder.content_weight must be >= 0"),
        (config["item_knn"]["shrinkage"] >= 0, "item_knn.shrinkage must be >= 0"),
        (config["popularity"]["half_life_days"] >= 0, "popularity.half_life_days must be >= 0"),
        (config["ranking"]["validation_users"] >= 1, "ranking.validation_users must be >= 1"),
        (config["ranking"]["sampled_softmax_min_items"] >= 0, "ranking.sampled_softmax_min_items must be >= 0"),
        (config["ranking"]["sampled_negatives"] >= 1, "ranking.sampled_negatives must be >= 1"),
        (config["ranking"]["sparse_update_min_rows"] >= 0, "ranking.sparse_update_min_rows must be >= 0"),
        (config["markov"]["neighbours"] >= 1, "markov.neighbours must be >= 1"),
        (config["markov"]["order"] >= 1, "markov.order must be >= 1"),
        (0 < config["item_knn"]["recency_decay"] <= 1, "item_knn.recency_decay must be in (0, 1]"),
        (0 < config["markov"]["recency_decay"] <= 1, "markov.recency_decay must be in (0, 1]"),
        (set(config["ranking"]["models"]) <= {"gru4rec", "caser"}, "ranking.models may list gru4rec and caser"),
        (config["gru4rec"]["epochs"] >= 1 and config["caser"]["epochs"] >= 1, "gru4rec/caser epochs must be >= 1"),
        (config["caser"]["length"] >= 1, "caser.length must be >= 1"),
        (config["gru4rec"]["max_length"] >= 2, "gru4rec.max_length must be >= 2"),
        (all(0 <= w <= 1 for w in config["ranking"]["blend_grid"]), "ranking.blend_grid values in [0, 1]"),
        (1 <= config["serving"]["candidates"] <= 1000, "serving.candidates must be in 1..1000"),
        (1 <= config["serving"]["triton_cpu_instances"] <= 64, "serving.triton_cpu_instances must be in 1..64"),
        (config["data"]["min_item_count"] >= 1, "data.min_item_count must be >= 1"),
        (config["gan"]["noise"] >= 1, "gan.noise must be >= 1"),
        (
            len(config["gan"]["hidden"]) >= 1 and min(config["gan"]["hidden"]) >= 1,
            "gan.hidden must list positive sizes",
        ),
        (config["gan"]["steps"] >= 1 and config["gan"]["item_steps"] >= 1, "gan.steps/item_steps must be >= 1"),
        (config["gan"]["batch_size"] >= 2, "gan.batch_size must be >= 2"),
        (config["gan"]["update_budget"] >= 0, "gan.update_budget must be >= 0 (0: no cap)"),
        (
            min(config[model]["max_steps"] for model in ("autoencoder", "gru4rec", "caser")) >= 0,
            "autoencoder/gru4rec/caser max_steps must be >= 0 (0: no cap)",
        ),
        (config["gan"]["critic_steps"] >= 1, "gan.critic_steps must be >= 1"),
        (config["gan"]["gradient_penalty"] >= 0, "gan.gradient_penalty must be >= 0"),
        (config["gan"]["learning_rate"] > 0, "gan.learning_rate must be > 0"),
        (config["gan"]["item_reconstruction"] >= 0, "gan.item_reconstruction must be >= 0"),
        (config["gan"]["samples"] >= 1, "gan.samples must be >= 1"),
        (config["gan"]["quality_users"] >= 0, "gan.quality_users must be >= 0 (0: every training user)"),
        (config["gan"]["item_popularity_exponent"] >= 0, "gan.item_popularity_exponent must be >= 0"),
        (config["gan"]["cold_history"] >= 1, "gan.cold_history must be >= 1"),
        (config["data"]["min_user_count"] >= 1, "data.min_user_count must be >= 1"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ConfigError("; ".join(problems))


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The effective configuration: defaults, overridden by the file at `path` when given."""
    config = defaults()
    if path is not None:
        try:
            override = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
        config = _merge(config, override, "")
    _check_ranges(config)
    return config
