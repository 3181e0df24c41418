"""The run directory: its layout, its lock, its state, and reading a run back.

* ``layout``: every path of OUT (``Layout``);
* ``lock``: one process at a time changes OUT (``RunLock``);
* ``directory``: new / complete / short / unfinished, identity, ``--overwrite`` (``RunDir``);
* ``reader``: a run read back and checked (``open_run``).
"""

from dalle_data.rundir.directory import RunDir, State, describe_difference
from dalle_data.rundir.layout import Layout
from dalle_data.rundir.lock import RunLock, RunLocked
from dalle_data.rundir.reader import Run, labels_for, open_run, read_records

__all__ = ["Layout", "Run", "RunDir", "RunLock", "RunLocked", "State", "describe_difference", "labels_for",
           "open_run", "read_records"]
