"""Image-mode tests: keep torch on one CPU thread while they run.

The tiny pipelines are so small that a second intra-op thread buys nothing,
and on a 2-core machine that is also running something else, torch's two
threads wait on each other: one tiny image took 5 s instead of 0.06 s when
measured that way. One thread keeps these tests fast however busy the machine
is; the setting is restored after each module, so other tests are unaffected.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
