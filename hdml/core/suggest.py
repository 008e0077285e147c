"""Did-you-mean hints for unknown names (methods, datasets, config keys)."""
from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the (at most two) closest known names: similar spellings,
    then names the input starts with or is the start of; "" when none is close."""
    known = list(known)
    close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
    close += [k for k in known if k not in close and min(len(k), len(name)) >= 3
              and (name.startswith(k) or k.startswith(name))]  # `lifted-structure` for `lifted`
    close = close[:2]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
