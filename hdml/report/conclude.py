"""The sentence that closes each report section: what the section's statistics support, worded
from them (counts of corrected verdicts, ranges of differences, intervals), never written ahead.

A family of comparisons (`stats.PairedTest`, or anything with `mean`, `excludes_zero()` and
`comparisons`) is summed up as "k of m comparisons exclude 0 (Holm-corrected)", with the
direction of those that do and the range of all the differences in points.
"""
from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Protocol


class Tested(Protocol):
    mean: float
    comparisons: int

    def excludes_zero(self) -> bool | None: ...


def points(x: float) -> str:
    return f"{100 * x:+.1f}".replace("-", "−")


def span(values: Sequence[float]) -> str:
    """'−14.2 to −6.1 points' (or one value) over the finite fractions given."""
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return "no difference to show"
    if len(finite) == 1 or math.isclose(finite[0], finite[-1]):
        return f"{points(finite[0])} points"
    return f"{points(finite[0])} to {points(finite[-1])} points"


def tally(tests: Sequence[Tested]) -> tuple[int, int, int, int]:
    """(tested, excluding 0 and positive, excluding 0 and negative, m of the correction)."""
    tested = [t for t in tests if t.excludes_zero() is not None]
    up = sum(1 for t in tested if t.excludes_zero() and t.mean > 0)
    down = sum(1 for t in tested if t.excludes_zero() and t.mean < 0)
    return len(tested), up, down, max((t.comparisons for t in tested), default=0)


def verdict(subject: str, tests: Sequence[Tested], better: str, worse: str, noise: str) -> str:
    """One sentence: `subject` (e.g. "HDML against its base loss"), then how many of its
    corrected comparisons exclude 0, which way (`better`/`worse` name the directions), and the
    range of the differences; `noise` is said when none excludes 0 ("HDML's gain is inside
    the seeds' noise")."""
    tested, up, down, m = tally(tests)
    diffs = span([t.mean for t in tests])
    if not tests:
        return f"{subject}: nothing to compare."
    if tested == 0:
        return (f"{subject}: differences of {diffs}, none tested (fewer than 3 paired seeds), so the "
                f"report marks none.")
    found = up + down
    where = f"{found} of {tested} comparisons exclude 0 (Holm-corrected over {m})"
    means = [t.mean for t in tests if math.isfinite(t.mean)]
    sign = ("; every one of the {} differences is negative" if all(v < 0 for v in means) else
            "; every one of the {} differences is positive" if all(v > 0 for v in means) else "")
    sign = sign.format(len(means)) if len(means) > 1 else ""
    if found == 0:
        return f"{noise}: {where}; differences of {diffs}{sign}."
    parts = [f"{up} {better}" if up else "", f"{down} {worse}" if down else ""]
    return f"{subject}: {where}, {' and '.join(p for p in parts if p)}; differences of {diffs}{sign}."


def paragraph(sentence: str) -> str:
    """The sentence as the section's closing paragraph."""
    return f'<p class="conclusion"><b>What the numbers support.</b> {html.escape(sentence)}</p>'
