"""The execution core: plan → tasks → ledger → executor.

    spec + ledger ──plan──► wave of tasks (frozen, picklable: shard id, units, their slots)
    task + loaded stages ──execute──► draft records ──ledger.finalize──► records ──commit──► files + marker
    records / markers ──ledger──► counts, quotas met?, summary

* ``plan``: slots, units, tasks; ``plan_wave`` is a pure function of the ledger.
* ``ledger``: per-slot counts, quota decisions, surplus (in plan order).
* ``stages``: ``execute(task, stages)``, and its halves ``generate`` and ``score``.
* ``commit``: a shard's intent, files and marker, in that order.
* ``driver``: the ``Executor`` interface and the one ``Driver`` every executor runs under
  (replay, ledger in plan order, commits in a writer pool, progress, stats, stopping).
* ``local``: this machine's device (``LocalExecutor``); ``ray_executor``: a Ray actor pool.
* ``executors``: the executors by name (``--executor``), a table to register one in.
* ``autobatch``: ``--batch-size auto``.
"""

from dalle_data.execution.ledger import Ledger, SlotCounts
from dalle_data.execution.driver import Driver, ExecStats, Executor, Interrupted, Part, StageTimes
from dalle_data.execution.local import LocalExecutor
from dalle_data.execution.plan import CheckTask, SlotPlan, Task, Unit, check_tasks, plan_wave
from dalle_data.execution.stages import BatchSize, Draft, Stages, check, execute

__all__ = ["BatchSize", "CheckTask", "Draft", "Driver", "ExecStats", "Executor", "Interrupted", "Ledger",
           "LocalExecutor", "Part", "SlotCounts", "SlotPlan", "Stages", "StageTimes", "Task", "Unit", "check",
           "check_tasks", "execute", "plan_wave"]
