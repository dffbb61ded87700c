"""``python -m tcurseg.compare run {headline,subjects,ranks,all}`` trains what the records lack;
``python -m tcurseg.compare report`` rebuilds the report from the records."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tcurseg.compare import runs
from tcurseg.compare.config import ALL_METHODS, load_protocol
from tcurseg.compare.records import load_records
from tcurseg.compare.report import build


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line and run it (from the repository root: the protocol's paths are relative to it)."""
    protocol = load_protocol()
    parser = argparse.ArgumentParser(prog="python -m tcurseg.compare", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train the runs of a table whose records are missing")
    run.add_argument("study", choices=("headline", "subjects", "ranks", "all"))
    run.add_argument("--preset", choices=tuple(protocol.presets),
                     help=f"headline: required; curves: default {protocol.curves.preset}")
    run.add_argument("--methods", nargs="+", choices=ALL_METHODS, help="headline: only these of the preset's methods")
    run.add_argument("--model", choices=tuple(protocol.experiments), default="unetr",
                     help="the network of a headline table (the curves run on UNETR)")
    report = commands.add_parser("report", help="rebuild the report from the records")
    report.add_argument("--no-plots", action="store_true", help="leave the PNG curves as they are")
    args = parser.parse_args(argv)

    if args.command == "report":
        build(load_records(protocol.records), protocol, protocol.report, plots=not args.no_plots)
        print(f"wrote {protocol.report}")
        return
    if args.study == "headline" and args.preset is None:
        parser.error("run headline needs --preset")
    if args.study == "headline":
        runs.headline(protocol, args.preset, args.methods, args.model)
    if args.study == "all":
        for preset in protocol.presets:
            runs.headline(protocol, preset)
    curve_preset = args.preset or protocol.curves.preset
    if args.study in ("subjects", "all"):
        runs.subjects_curve(protocol, curve_preset)
    if args.study in ("ranks", "all"):
        runs.ranks_curve(protocol, curve_preset)


if __name__ == "__main__":
    main()
