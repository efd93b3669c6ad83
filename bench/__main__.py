"""`make bench`: throughput and latency, each printed beside a reference measured in the same run.

Not a test: nothing here asserts a time. Run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import append, audit, fund, relay, taxcredit, voucher

SECTIONS = {
    "append": append.run,
    "relay": relay.run,
    "voucher": voucher.run,
    "taxcredit": taxcredit.run,
    "fund": fund.run,
    "audit": audit.run,
}


def main() -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("sections", nargs="*", help=f"some of: {', '.join(SECTIONS)}")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    chosen = args.sections or list(SECTIONS)
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    print(
        f"cluster-incentives bench, {platform.python_implementation()} {platform.python_version()}"
    )
    results: dict[str, Any] = {}
    for name in chosen:
        started = time.perf_counter()
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results[name] = runner.run(SECTIONS[name]())
        print(f"  ({name}: {time.perf_counter() - started:.1f} s)\n")
    beside_voucher(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def beside_voucher(results: dict[str, Any]) -> None:
    """The programme sections' ratios beside the voucher's measured in the same run: the fund's
    target is the voucher section's target, and this shows how far the fund (two committee
    votes and a capacity hold an application) stands from what the voucher reached."""
    if "voucher" not in results:
        return
    theirs = results["voucher"]["ratio"]
    for name in ("taxcredit", "fund"):
        if name in results:
            ratio = results[name]["ratio"]
            print(
                f"  {name}'s ratio {ratio:.3f} is {ratio / theirs:.2f} of the voucher's "
                f"{theirs:.3f} in this run"
            )


if __name__ == "__main__":
    sys.exit(main())
