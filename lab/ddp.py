"""DistributedDataParallel as the runtime uses it: joining the process group, and a wrapper that
``Runtime.close`` can release so that the group, and gloo's threads, end with the runtime."""
from __future__ import annotations

import torch
import torch.distributed as dist


def init_process_group(backend: str, **kwargs) -> None:
    """``dist.init_process_group``, after importing ``torch.distributed.nn.functional``: that module binds
    ``group.WORLD`` as a default argument when it is first imported (DistributedDataParallel imports it
    through torch._dynamo), so imported after the group exists it would hold the group for ever."""
    import torch.distributed.nn.functional  # noqa: F401
    dist.init_process_group(backend=backend, **kwargs)


class ReleasableDDP(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that ``Runtime.close`` can release: it then drops the process group (and the
    reducer and logger that hold it) and forwards straight to its module, without all-reduce."""

    released = False

    def forward(self, *inputs, **kwargs):
        if self.released:
            return self.module(*inputs, **kwargs)
        return super().forward(*inputs, **kwargs)

    def release(self) -> None:
        self.released = True
        for name in ("reducer", "logger", "process_group"):
            self.__dict__.pop(name, None)
