"""When to try again after XNAT was unavailable. Pure: randomness is passed in."""

from __future__ import annotations


def backoff(
    attempt: int, first: float, cap: float, jitter: float, retry_after: float | None = None
) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 1).

    Exponential (`first`, 2x, 4x, ... up to `cap`) with "equal jitter": half the delay is
    fixed, half is spread by `jitter` in [0, 1), so daemons that failed together do not all
    return together. A server's Retry-After is honoured when it asks for longer.
    """
    base = min(cap, first * 2.0 ** max(0, attempt - 1))
    delay = base / 2 + base / 2 * min(max(jitter, 0.0), 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, cap))
    return delay
