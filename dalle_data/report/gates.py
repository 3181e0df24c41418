"""``--fail-if`` gates: conditions on the report's figures that make CI fail with one line.

A gate is ``NAME`` or ``NAME<VALUE`` / ``NAME>VALUE``:

* ``short``              a class has fewer images than its quota;
* ``warnings``           the report has any warning;
* ``acceptance<X``       a class kept under X of what it generated (0..1);
* ``vendi<X``            a class's Vendi score (effective number of distinct images) is under X;
* ``diversity<X``        a class's mean pairwise cosine distance is under X (0..2);
* ``duplicates>X``       near-duplicates would set aside more than X of the kept images (0..1);
* ``images<N``           the dataset has fewer than N images;
* ``lookalike``          most kept images of a class look more like another entry of a wider
                         vocabulary than like their class (``analysis.lookalike``: a class the
                         model may not know how to draw).

Several gates may be given; the first that fails is reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from dalle_data.errors import SpecError

_GATE = re.compile(r"^\s*(?P<name>[a-z_-]+)\s*(?:(?P<op>[<>])\s*(?P<value>[0-9]*\.?[0-9]+)\s*)?$")


@dataclass(frozen=True)
class Gate:
    name: str
    op: str | None
    value: float | None

    def __str__(self) -> str:
        return self.name if self.op is None else f"{self.name}{self.op}{self.value:g}"


Check = Callable[[dict[str, Any], Gate], str | None]


def _short(fig: dict[str, Any], gate: Gate) -> str | None:
    short = [f"{label!r} has {row['kept']} of {row['target']}" for label, row in fig["classes"].items() if not row["met"]]
    return "; ".join(short) or None


def _warnings(fig: dict[str, Any], gate: Gate) -> str | None:
    warnings = fig["warnings"]
    return f"{len(warnings)} warning(s), the first: {warnings[0]}" if warnings else None


def _acceptance(fig: dict[str, Any], gate: Gate) -> str | None:
    low = [(label, row["acceptance"]) for label, row in fig["classes"].items()
           if row["generated"] and row["acceptance"] < gate.value]  # type: ignore[operator]
    return "; ".join(f"{label!r} kept {a:.0%} of what was generated" for label, a in low) or None


def _per_class(key: str, what: str) -> Check:
    def check(fig: dict[str, Any], gate: Gate) -> str | None:
        low = [(row["label"], row[key]) for row in fig["diversity"] if row[key] < gate.value]  # type: ignore[operator]
        if not fig["diversity"]:
            return "no embeddings to measure diversity with"
        return "; ".join(f"{label!r} has {what} {v:.3g}" for label, v in low) or None
    return check


def _duplicates(fig: dict[str, Any], gate: Gate) -> str | None:
    dup = fig["duplicates"]
    if dup["share"] > gate.value:  # type: ignore[operator]
        return f"{dup['set_aside']} near-duplicate image(s), {dup['share']:.1%} of {fig['images']}"
    return None


def _lookalike(fig: dict[str, Any], gate: Gate) -> str | None:
    looks = fig.get("look_alikes") or []
    return "; ".join(f"{x['label']!r}: {x['elsewhere']} of {x['images']} images look more like {x['nearest']!r}"
                     for x in looks) or None


def _images(fig: dict[str, Any], gate: Gate) -> str | None:
    return f"the dataset has {fig['images']} images" if fig["images"] < gate.value else None  # type: ignore[operator]


GATES: dict[str, tuple[str | None, Check]] = {
    "short": (None, _short),
    "warnings": (None, _warnings),
    "acceptance": ("<", _acceptance),
    "vendi": ("<", _per_class("vendi", "a Vendi score of")),
    "diversity": ("<", _per_class("mean_distance", "a mean pairwise distance of")),
    "duplicates": (">", _duplicates),
    "images": ("<", _images),
    "lookalike": (None, _lookalike),
}


def parse_gates(texts: Sequence[str]) -> list[Gate]:
    """Gates from ``--fail-if`` values (each may hold several, comma-separated); a SpecError names a bad one."""
    gates = []
    for text in texts:
        for part in (p for p in text.split(",") if p.strip()):
            match = _GATE.match(part)
            known = ", ".join(f"{n}{op or ''}{'X' if op else ''}" for n, (op, _) in GATES.items())
            if not match or match["name"] not in GATES:
                raise SpecError(f"--fail-if {part.strip()!r} is not a gate; use one of: {known}")
            name, op = match["name"], match["op"]
            wanted = GATES[name][0]
            if op != wanted:
                form = f"{name}{wanted}X" if wanted else name
                raise SpecError(f"--fail-if {part.strip()!r}: write it as {form}")
            gates.append(Gate(name, op, float(match["value"]) if match["value"] else None))
    return gates


def failed_gate(figures: dict[str, Any], gates: Sequence[Gate]) -> str | None:
    """One line naming the first gate that fails and why, or None when every gate passes."""
    for gate in gates:
        why = GATES[gate.name][1](figures, gate)
        if why:
            return f"--fail-if {gate}: {why}"
    return None
