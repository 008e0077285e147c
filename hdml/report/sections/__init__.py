"""The report's sections: every module of this package adds its own to the page.

A section builder takes the page being built (`Report`) and the checked inputs (`Inputs`) and
adds one section, or a short note where the results hold nothing for it; it may also write its
tables under tables/. A module here registers its builders with `@register_section(order=N)`, N
being the section's declared place on the page (ascending, one section per place), so that a new
section is one new file in this package and no line anywhere else: `builders()` imports every
module of the package first, and one that fails to import is an error naming its file.
"""
from __future__ import annotations

from collections.abc import Callable

from hdml.core.discovery import import_modules
from hdml.report.inputs import Inputs
from hdml.report.page import Report

SectionBuilder = Callable[[Report, Inputs], None]

SECTIONS: dict[int, SectionBuilder] = {}  # place on the page -> builder


def _name(builder: SectionBuilder) -> str:
    return f"{builder.__module__}.{builder.__qualname__}"


def register_section(*, order: int) -> Callable[[SectionBuilder], SectionBuilder]:
    """Decorator: put the builder at place `order` on the page; a place taken by another builder
    is an error, so that no section's position depends on which module was imported first."""

    def add(builder: SectionBuilder) -> SectionBuilder:
        taken = SECTIONS.get(order)
        if taken is not None and _name(taken) != _name(builder):
            raise ValueError(f"report section {_name(builder)}: order {order} is taken by {_name(taken)}")
        SECTIONS[order] = builder
        return builder

    return add


def builders() -> list[SectionBuilder]:
    """Every section builder, in page order, once every module of this package has registered its own."""
    import_modules(__name__, "report section")
    return [SECTIONS[order] for order in sorted(SECTIONS)]
