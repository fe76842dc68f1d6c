"""Can a rule that sees only the NFE, the SDE and the data dimension pick a solver within 1.1x of the best?

Reads the CSV written by ``benchmarks/fast_solvers.py`` (one row per option combination, problem, SDE and NFE) and
answers, for every (SDE, NFE) and every group of problems of the same data dimension, whether one option
combination meets the few-step target on all problems of the group at once: RMS error within ``--ratio`` of the
cell's best row and no more points switched to another component than that best row. A rule that chooses from the
NFE, the SDE and the dimension gives the same combination to every problem of a group, so a cell where no
combination qualifies is one where no such rule can meet the target.

Printed: for each group of two or more problems, a table of the number of qualifying combinations per SDE and NFE
(``0`` marks an infeasible cell), then the same for pairs of problems of different dimensions, as a measure of how
far apart their best combinations are.

    python benchmarks/fast_solver_rules.py [--csv benchmarks/results/fast_solvers_cpu.csv] [--ratio 1.1]
"""

from __future__ import annotations

import argparse
import collections
import csv
import itertools
import math

OPTION_COLUMNS = ("method", "order", "prediction", "corrector", "schedule", "lower_order_final")
DIMENSIONS = {"ring": 2, "uneven2d": 2, "mix64": 64, "mix128x8": 128, "gauss3x8x8": 192, "gauss3x32x32": 3072}

Cell = dict[tuple[str, ...], tuple[float, int]]  # option combination -> (rms, switches)


def read_cells(path: str) -> dict[tuple[str, str, int], Cell]:
    """``(problem, sde, nfe) -> {options: (rms, switches)}``; the default and tuned rows are left out (they repeat grid rows)."""
    cells: dict[tuple[str, str, int], Cell] = collections.defaultdict(dict)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            if row["is_default"] == "True" or row.get("is_tuned") == "True":
                continue
            rms = float(row["rms"])
            switches = 0 if row["switches"] == "NA" else int(row["switches"])
            options = tuple(row[c] for c in OPTION_COLUMNS)
            cells[(row["problem"], row["sde"], int(row["nfe"]))][options] = (rms if math.isfinite(rms) else math.inf,
                                                                              switches)
    return cells


def qualifying(cell: Cell, ratio: float) -> set[tuple[str, ...]]:
    """Combinations within ``ratio`` of the best RMS that switch no more points than the best row."""
    best_rms, best_switches = min(cell.values())
    return {k for k, (rms, switches) in cell.items() if rms <= ratio * best_rms and switches <= best_switches}


def table(cells: dict[tuple[str, str, int], Cell], problems: tuple[str, ...], ratio: float) -> tuple[str, int, int]:
    sdes = sorted({s for (_, s, _) in cells}, key=("VP", "subVP", "VE").index)
    nfes = sorted({n for (_, _, n) in cells})
    lines = ["  SDE    " + "".join(f"{n:>6d}" for n in nfes)]
    infeasible = total = 0
    for sde in sdes:
        counts = []
        for nfe in nfes:
            sets = [qualifying(cells[(p, sde, nfe)], ratio) for p in problems]
            common = len(set.intersection(*sets))
            counts.append(common)
            infeasible += common == 0
            total += 1
        lines.append(f"  {sde:6s} " + "".join(f"{c:>6d}" for c in counts))
    return "\n".join(lines), infeasible, total


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default="benchmarks/results/fast_solvers_cpu.csv")
    parser.add_argument("--ratio", type=float, default=1.1)
    args = parser.parse_args(argv)
    cells = read_cells(args.csv)
    present = sorted({p for (p, _, _) in cells}, key=lambda p: (DIMENSIONS.get(p, 0), p))
    groups = collections.defaultdict(list)
    for p in present:
        groups[DIMENSIONS.get(p)].append(p)
    print(f"combinations within {args.ratio}x of the best and no more switches, on every problem of the group")
    for dim, members in groups.items():
        if len(members) > 1:
            text, infeasible, total = table(cells, tuple(members), args.ratio)
            print(f"\nsame dimension {dim}: {' + '.join(members)}  (no combination in {infeasible} of {total} cells)")
            print(text)
    print("\npairs of different dimensions: cells with no common combination")
    for a, b in itertools.combinations(present, 2):
        if DIMENSIONS.get(a) != DIMENSIONS.get(b):
            _, infeasible, total = table(cells, (a, b), args.ratio)
            print(f"  {a:>12s} + {b:<12s} {infeasible:3d} of {total}")


if __name__ == "__main__":
    main()
