"""The conditional GANs' generators at serving time (trained by trainer.models.gan): an MLP's .npy weights run
in numpy, sampled per condition row."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

USER_GENERATOR = "user_generator"
ITEM_GENERATOR = "item_generator"


@dataclass
class Generator:
    """An MLP: [noise, condition] -> relu hidden layers -> output (sigmoid or linear)."""

    kernels: list[np.ndarray]
    biases: list[np.ndarray]
    noise: int
    output: str  # "sigmoid" | "linear"

    @property
    def condition_size(self) -> int:
        return int(self.kernels[0].shape[0]) - self.noise

    @property
    def output_size(self) -> int:
        return int(self.kernels[-1].shape[1])

    def forward(self, noise: np.ndarray, conditions: np.ndarray) -> np.ndarray:
        x = np.hstack([noise, conditions]).astype(np.float32)
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            x = x @ kernel + bias
            if i < len(self.kernels) - 1:
                x = np.maximum(x, 0.0)
        if self.output == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
        return x.astype(np.float32)

    def sample(self, conditions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One generated row per condition row."""
        noise = rng.standard_normal((len(conditions), self.noise)).astype(np.float32)
        return self.forward(noise, conditions)

    def expected(self, conditions: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
        """The mean of `samples` generated rows per condition: what the generator expects of such an entity."""
        repeated = np.repeat(conditions, samples, axis=0)
        return self.sample(repeated, rng).reshape(len(conditions), samples, -1).mean(axis=1)

    def save(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        for i, (kernel, bias) in enumerate(zip(self.kernels, self.biases, strict=True)):
            np.save(directory / f"{name}.kernel{i}.npy", kernel.astype(np.float32), allow_pickle=False)
            np.save(directory / f"{name}.bias{i}.npy", bias.astype(np.float32), allow_pickle=False)
        meta = {"layers": len(self.kernels), "noise": self.noise, "output": self.output}
        (directory / f"{name}.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path, name: str) -> Generator:
        meta = json.loads((directory / f"{name}.json").read_text())
        layers = range(int(meta["layers"]))
        return cls(
            [np.load(directory / f"{name}.kernel{i}.npy", allow_pickle=False) for i in layers],
            [np.load(directory / f"{name}.bias{i}.npy", allow_pickle=False) for i in layers],
            int(meta["noise"]),
            str(meta["output"]),
        )
