"""`make chaos`: the chaos run, its report printed as a table and written as JSON.

Exit 0 when every check held. ``make chaos ARGS="--duration 60"`` for a shorter run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from chaos.run import Options, run


def main() -> int:
    parser = argparse.ArgumentParser(prog="make chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    parser.add_argument("--rate", type=float, default=2.0, help="applications/s per programme")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between kills")
    parser.add_argument("--broker-resets", type=int, default=1)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--state", type=Path, default=Path("var") / "chaos")
    parser.add_argument("--json", type=Path, default=None, help="default: <state>/report.json")
    parser.add_argument("--keep-databases", action="store_true")
    args = parser.parse_args()
    options = Options(
        duration=args.duration,
        rate=args.rate,
        kill_every=args.kill_every,
        broker_resets=args.broker_resets,
        seed=args.seed,
        state=args.state,
        keep_databases=args.keep_databases,
    )
    report = asyncio.run(run(options))
    target = args.json or args.state / "report.json"
    target.write_text(json.dumps(report, indent=2, default=str))
    print(table(report))
    print(f"\nreport: {target}")
    return 0 if report["ok"] else 1


def table(report: dict[str, Any]) -> str:
    figures = report["figures"]
    kills, resets = figures["recovery_after_kill_s"], figures["recovery_after_broker_reset_s"]
    rows = [
        ("applications accepted", _pairs(figures["applications"])),
        (
            "process kills (-9)",
            f"{figures['process_kills']} ({figures['killed_while_starting']} while starting)",
        ),
        ("broker resets", str(figures["broker_resets"])),
        ("recovery after a kill (s)", f"median {kills['median']}, max {kills['max']}"),
        ("recovery after a broker reset (s)", ", ".join(str(r) for r in resets) or "-"),
        ("requests", f"{figures['requests']:,}"),
        ("refused with 503 + Retry-After", _pairs(figures["refused_503"]) or "0"),
        ("connections to a dead replica", _pairs(figures["unreachable"]) or "0"),
        ("lost (accepted, not in the log)", str(figures["lost"])),
        ("run time (s)", str(figures["seconds"])),
    ]
    lines = [f"{label:<36} {value}" for label, value in rows]
    lines.append("")
    for name, check in report["checks"].items():
        verdict = "ok" if check["ok"] else f"FAILED ({check['findings_total']} findings)"
        lines.append(f"{name:<14} {verdict:<24} {check['what']}")
        lines += [f"    {finding}" for finding in check["findings"][:5]]
    lines.append("")
    lines.append("ALL CHECKS HELD" if report["ok"] else "SOME CHECKS FAILED")
    return "\n".join(lines)


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in values.items())


if __name__ == "__main__":
    sys.exit(main())
