"""`python -m bench plan --suite NAME --hours H`: which of the cells left fit in H hours here, as
`bench run` commands to start one after the other. Lower seeds first (seed 0 of every row before any
seed 1: a table with every row at one seed says more than one row at three), cells that reuse another's
training (CALRec's inference rows, rows sharing a stage I) with the cell that trains it, in the
suite's order. A group that does not fit is skipped for later ones that do, and named."""
from __future__ import annotations

from dataclasses import dataclass, field

from bench.execute.planned import PlannedCell, duration


@dataclass
class Group:
    cells: list[PlannedCell] = field(default_factory=list)

    @property
    def seconds(self) -> float | None:
        times = [p.seconds for p in self.cells]
        return None if None in times else sum(times)

    @property
    def seed(self) -> int:
        return min(p.cell.seed for p in self.cells)


def groups_left(cells: list[PlannedCell]) -> list[Group]:
    """The cells to run (not done, not being computed by another process now), grouped with the cell
    whose training they reuse, lower seeds first."""
    todo = [p for p in cells if not p.state.startswith("done") and "running now" not in p.state]
    groups: list[Group] = []
    of: dict[str, Group] = {}  # cell name -> its group
    for p in todo:
        group = of.get(p.after) if p.after else None
        if group is None:
            group = Group()
            groups.append(group)
        group.cells.append(p)
        of[p.cell.name] = group
    return sorted(groups, key=lambda g: g.seed)  # stable: the suite's order within a seed


def fit(cells: list[PlannedCell], hours: float) -> tuple[list[Group], list[Group]]:
    """(groups that fit in `hours`, one after another, in order; groups left out)."""
    budget, taken, left = hours * 3600, [], []
    for g in groups_left(cells):
        if g.seconds is not None and g.seconds <= budget:
            taken.append(g)
            budget -= g.seconds
        else:
            left.append(g)
    return taken, left


def command(run: str, g: Group, several_datasets: bool) -> str:
    """One `bench run` line per seed and dataset of a group (`run`: the command up to its filters), so no
    cell outside the group is picked up."""
    lines = []
    for key in dict.fromkeys((p.cell.dataset.key, p.cell.seed) for p in g.cells):
        models = ",".join(dict.fromkeys(p.cell.variant.key for p in g.cells if (p.cell.dataset.key, p.cell.seed) == key))
        lines.append(f"{run} --models {models} --seeds {key[1]}"
                     + (f" --datasets {key[0]}" if several_datasets else ""))
    return " && ".join(lines)


def sitting_markdown(run: str, cells: list[PlannedCell], hours: float) -> str:
    taken, left = fit(cells, hours)
    running = [p.cell.name for p in cells if "running now" in p.state]
    several = len({p.cell.dataset.key for p in cells}) > 1
    used = sum(g.seconds for g in taken)
    lines = [f"### What fits in {hours:g} h here ({duration(used)} of it estimated)", ""]
    lines += [f"{i}. `{command(run, g, several)}` ({duration(g.seconds)})" for i, g in enumerate(taken, 1)]
    if not taken:
        lines.append("Nothing left fits." if left else "Nothing left to run.")
    if left:
        names = "; ".join(", ".join(p.cell.name for p in g.cells) + f" ({duration(g.seconds)})" for g in left)
        lines += ["", f"- Left for later ({len(left)} groups): {names}."]
    lines.append("- Lower seeds first; cells that reuse another's training go with it; estimates as in the plan "
                 "above, for this machine. Run the commands one after another, not side by side: cells share the cores"
                 + (f"; start them after what another process is computing now ends ({', '.join(running)}), which the "
                    "hours do not count" if running else "") + ".")
    return "\n".join(lines) + "\n"
