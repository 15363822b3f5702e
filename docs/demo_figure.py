"""The README's picture and sample report, regenerated from a real study (never drawn by hand):
the demo frontier sweep's compute-performance figure (the stream's panel, drawn by the same figure
path as `nevisbench plot`) and its `nevisbench report` site.

    nevisbench sweep experiment=demo_frontier sweep_dir=sweeps/demo_frontier   # the study: minutes on 2 CPU cores
    python docs/demo_figure.py sweeps/demo_frontier      # writes docs/images/demo_frontier.png, docs/sample-report/

The PNG must stay under 200 KB (it is committed); the script says its size and fails above it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_BYTES = 200_000
DPI = 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the demo frontier's sweep folder")
    parser.add_argument("--png", type=Path, default=HERE / "images" / "demo_frontier.png")
    parser.add_argument("--site", type=Path, default=HERE / "sample-report")
    args = parser.parse_args()

    from nevisbench.analysis import collect, compute_figure
    from nevisbench.analysis.site import build_site

    runs = collect([args.sweep])
    stream_only = [dataclasses.replace(run, sub_points={}) for run in runs]  # the stream's panel, not the sub-streams'
    figure = compute_figure(stream_only)
    args.png.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(args.png, dpi=DPI, metadata={"Software": None})  # no version stamp: the same study, the same bytes
    size = args.png.stat().st_size
    print(f"Wrote {args.png} ({size / 1000:.0f} KB, {len(runs)} runs)")
    if size > MAX_BYTES:
        sys.exit(f"{args.png} is {size} bytes, over the {MAX_BYTES} the README's picture may take: lower DPI")
    site = build_site([args.sweep], args.site)
    print(f"Wrote {site.index} ({site.pages} pages)")


if __name__ == "__main__":
    main()
