"""Markdown for the report: every table goes through :func:`table`; CIs and verdicts are worded here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence


def table(header: Sequence[str], rows: Iterable[Sequence[object]], right: Sequence[int] = ()) -> list[str]:
    """A Markdown table; the columns whose index is in ``right`` are right-aligned."""
    rule = "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"
    return ["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(map(str, row)) + " |" for row in rows)]


def ci(c: Mapping, digits: int = 3, star: bool = True) -> str:
    """``+0.012 [+0.003, +0.021] *`` (``*``: the CI excludes 0); ``n/a`` without a finite cell."""
    if not c["n"]:
        return "n/a"
    mark = " *" if c["excludes_zero"] and star else ""
    return f"{c['mean']:+.{digits}f} [{c['lo']:+.{digits}f}, {c['hi']:+.{digits}f}]{mark}"


def rank(value: int | None) -> str:
    """A rank, ``-`` for the methods without one."""
    return "-" if value is None else str(value)


def verdict(name: str, other: str, c: Mapping | None) -> str:
    """One sentence: whether ``name`` beats ``other`` in Dice, by the CI of their paired difference."""
    if c is None:
        return f"{name} vs {other}: not run yet."
    d = c["dice"]
    if d["excludes_zero"]:
        word = "beats" if d["mean"] > 0 else "is worse than"
        return (f"{name} {word} {other}: paired Dice difference {ci(d, star=False)} over {d['n']} (subject, seed) "
                "pairs (95% bootstrap CI excludes 0).")
    return (f"{name} does not differ from {other}: paired Dice difference {ci(d, star=False)} over {d['n']} pairs "
            "(the 95% CI includes 0).")
