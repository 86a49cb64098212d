"""The process's peak resident memory over a span of training (Linux: VmHWM in /proc/self/status, whose mark
/proc/self/clear_refs resets). Elsewhere, or where /proc is not writable, no figure rather than a wrong one."""

from __future__ import annotations

import re
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK = "5"  # clear_refs: reset the peak RSS mark to the current RSS


def reset_peak_rss() -> bool:
    """Start a new span; False where the mark cannot be reset (the peak would then span the whole run)."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK)
    except OSError:
        return False
    return True


def peak_rss_gib() -> float | None:
    """Peak RSS since the last reset (or the process's start), in GiB."""
    try:
        found = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return None if found is None else int(found.group(1)) / 2**20
