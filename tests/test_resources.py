"""Per-stage peak memory (trainer/resources.py): the mark resets, and a span's peak sees its allocations."""

from __future__ import annotations

import numpy as np

from trainer.resources import peak_rss_gib, reset_peak_rss


def test_the_peak_covers_a_spans_allocation_and_resets_after_it() -> None:
    assert reset_peak_rss()
    before = peak_rss_gib()
    assert before is not None
    block = np.ones(64 * 2**20 // 8 * 4)  # 256 MiB, touched
    assert float(block.sum()) == block.size
    del block
    during = peak_rss_gib()
    assert during is not None and during - before > 0.2
    assert reset_peak_rss()
    after = peak_rss_gib()
    assert after is not None and after < during - 0.2, "the freed block is not in the new span's peak"
