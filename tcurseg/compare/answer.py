"""The report's opening: does tCURLoRA beat LoRA, in the paper's setting and in ours, and by how much. A table
generated from the headline tables, then the protocol's hand-written sentences with their numbers filled in."""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping

from tcurseg.compare.config import NAMES, Protocol
from tcurseg.compare.headline import Headline
from tcurseg.compare.render import ci, table

PLACEHOLDER = re.compile(r"\{(\w+):(\w+)-(\w+)\}")  # {preset:method-reference}


def difference(head: Headline, method: str, reference: str) -> dict | None:
    """The paired Dice difference ``method`` - ``reference`` of a headline table, None where it has not run."""
    if reference == "full" and method == "tcurlora":
        c = head.vs_full
    else:
        c = head.contrasts.get(method, {}).get(reference)
    return c["dice"] if c else None


def converged(head: Headline) -> str:
    """``yes`` where at most half of the runs are best at their last validation, else ``no``, with the count; ``-``
    before any run."""
    still, total = head.still_improving
    if not total:
        return "-"
    return f"{'yes' if 2 * still <= total else 'no'} ({still} of {total} still improving)"


def fill(sentence: str, heads: Mapping[str, Headline]) -> str:
    """A hand-written sentence with each ``{preset:method-reference}`` replaced by its CI."""
    def number(match: re.Match) -> str:
        preset, method, reference = match.groups()
        c = difference(heads[preset], method, reference)
        return ci(c, star=False) if c else "not run yet"

    return PLACEHOLDER.sub(number, " ".join(sentence.split()))


def section(protocol: Protocol, heads: Mapping[str, Headline]) -> list[str]:
    """The Answer section: one row per preset (the primary one first, in bold), then the sentences."""
    primary = protocol.primary
    method, references = primary["method"], primary["references"]
    steps = protocol.steps_per_epoch()
    order = [primary["preset"], *(p for p in protocol.presets if p != primary["preset"])]
    body = []
    for preset in order:
        head, spec = heads[preset], protocol.presets[preset]
        cells = [ci(c) if (c := difference(head, method, ref)) else "-" for ref in references]
        widths = head.half_widths
        name = f"`{preset}`"
        if preset == primary["preset"]:
            name = f"**{name} (primary)**"
            if c := difference(head, method, references[0]):
                cells[0] = f"**{ci(c, star=False)}**" + (" *" if c["excludes_zero"] else "")
        body.append([name, spec.setting, f"{spec.epochs * steps} ({spec.epochs})", len(head.seeds) or "-", *cells,
                     f"{statistics.median(widths):.4f}" if widths else "-", converged(head)])
    names = [NAMES[method] + " - " + NAMES[ref] for ref in references]
    return ["## Answer: does tCURLoRA beat LoRA?", "",
            f"Primary comparison (declared in `conf/compare/protocol.yaml`): preset `{primary['preset']}`, "
            f"{names[0]}, then {', '.join(names[1:])}, at {primary['steps']} steps. Test Dice differences, paired over "
            "(test subject, seed), with 95% two-way bootstrap CIs (`*`: the CI excludes 0).", "",
            *table(["preset", "setting", "steps (epochs)", "seeds", *names, "median CI half-width", "converged"], body,
                   right=(2, 3)),
            "", "Median CI half-width: over every paired Dice difference of the preset's table (aimed at: "
            f"{protocol.ci_target:g}). Converged: at most half of the runs best at their last validation. Each row is "
            "the headline table of that preset below.", "",
            *[fill(s, heads) for s in protocol.answer], ""]
