"""Summarise a ``--py-spy`` sample: where the service's busy time goes, per function.

``python -m tests.bench.pyspy FILE [--top N]``, FILE being one of the
``*.pyspy.txt`` files the fan-out scenario leaves in the log directory (py-spy's
``raw`` format: one folded stack and its sample count a line). Samples whose
innermost frame is the event loop waiting (``epoll_wait``) are idle, not work,
and are left out, so the percentages are of the busy samples: what the README's
profile tables quote. py-spy stops the process to read each sample, so the
service's CPU seconds in a sampled run are higher than in an unsampled one.
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable, Sequence
from typing import Final

# Innermost frames that mean "waiting for the next event", not work.
IDLE_FRAMES: Final = ("epoll_wait", "select_epoll_poll")


def frame_name(frame: str) -> str:
    """``Hub.report (ble_scanner/core/hub.py:120)`` → ``Hub.report (hub.py)``."""
    name, _, where = frame.partition(" (")
    if not where:
        return name
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1].rstrip(')')})"


def summarise(
    lines: Iterable[str],
) -> tuple[int, int, collections.Counter[str], collections.Counter[str]]:
    """(all samples, busy samples, inclusive counts, self counts) over the busy samples."""
    total = busy = 0
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        if frames[-1].split(" (")[0] in IDLE_FRAMES:
            continue
        busy += n
        for name in set(frames):
            inclusive[name] += n
        own[frames[-1]] += n
    return total, busy, inclusive, own


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.pyspy", description=__doc__)
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args(argv)
    with open(args.file) as f:
        total, busy, inclusive, own = summarise(f)
    print(f"{busy} busy of {total} samples")
    if not busy:
        return 0
    print("inclusive (frames in every busy sample, the loop and the launcher, left out):")
    shown = [(name, n) for name, n in inclusive.most_common() if n < busy]
    for name, n in shown[: args.top]:
        print(f"  {100 * n / busy:5.1f}%  {name}")
    print("self:")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / busy:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
