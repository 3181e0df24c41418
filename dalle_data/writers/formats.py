"""The output formats, one record each, in one table.

``FORMATS`` maps a format's name (``--format``, ``formats:`` in a spec) to its
``Format`` record (``dalle_data.writers.base``): its writer, its folders
(from the ``Layout``), whether a dataset was written, the loader line the
summary prints, how ``verify`` checks and repairs it, how ``--from`` and
``probe`` read its images back, and where the Hub card points. Generation,
the summary, verify, probe, ``--from`` and the report ask this table instead
of testing format names.

Adding a format: write its module (a ``Writer`` and the functions its
``Format`` names; see ``parquet`` or ``imagefolder``), then ``register`` its
record, here for a built-in one. ``tests/writers/test_contract.py`` runs the
writer contract over every registered format.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dalle_data.config import FORMATS as SPEC_FORMATS, RunSpec
from dalle_data.records import Record
from dalle_data.rundir.layout import Layout, Where
from dalle_data.writers.base import Format
from dalle_data.writers.imagefolder import IMAGEFOLDER
from dalle_data.writers.parquet import PARQUET

__all__ = ["FORMATS", "Format", "formats_of", "outputs_of", "read_back", "register", "unregister"]

FORMATS: dict[str, Format] = {}


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the table (and its name to what a run spec accepts); returns it."""
    if fmt.name in FORMATS:
        raise ValueError(f"a format named {fmt.name!r} is registered already")
    FORMATS[fmt.name] = fmt
    if fmt.name not in SPEC_FORMATS:
        SPEC_FORMATS.append(fmt.name)
    return fmt


def unregister(name: str) -> None:
    """Remove a format registered at run time (tests, plug-ins)."""
    FORMATS.pop(name, None)
    if name in SPEC_FORMATS:
        SPEC_FORMATS.remove(name)


for _builtin in (PARQUET, IMAGEFOLDER):
    register(_builtin)


def formats_of(names: Iterable[str]) -> list[Format]:
    """The records of the formats a run asked for, in the table's order."""
    wanted = set(names)
    return [fmt for name, fmt in FORMATS.items() if name in wanted]


def read_back(layout: Layout, names: Iterable[str], records: Sequence[Record],
              where: Where) -> tuple[Format | None, list[tuple[str, bytes | None]]]:
    """The images of ``records`` in ``where`` from the first of a run's formats (by ``read_rank``) that holds
    any there: the format and (path, bytes or None) per record; (None, []) when none does."""
    for fmt in sorted(formats_of(names), key=lambda f: f.read_rank):
        images = fmt.read_images(layout, records, where)
        if images is not None:
            return fmt, images
    return None, []


def outputs_of(spec: RunSpec) -> tuple[dict[str, str], dict[str, str]]:
    """The dataset folders that exist, and for each requested format that does not, why."""
    layout = Layout(spec.out, spec.split)
    outputs: dict[str, str] = {}
    missing: dict[str, str] = {}
    for name in spec.formats:
        fmt = FORMATS[name]
        if fmt.exists(layout):
            outputs[name] = str(fmt.dirs(layout)["dataset"])
        else:
            missing[name] = f"no image was kept, so no {name} dataset was written"
    return outputs, missing
