"""Check that an allocation fits before making it: a too-large request is one sentence, not a crash
minutes later (or a machine brought to its knees by swapping)."""
from __future__ import annotations

import os

import torch

from lab.errors import LabError


def available_memory(device: torch.device | str = "cpu") -> int:
    """Bytes that can be allocated on ``device`` now (MemAvailable on Linux hosts)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB"


def require_memory(needed: int, what: str, remedy: str, device: torch.device | str = "cpu") -> None:
    """Refuse, naming ``what`` and the ``remedy``, when ``needed`` bytes exceed what ``device`` has free."""
    free = available_memory(device)
    if needed > free:
        raise LabError(f"{what} needs about {gigabytes(needed)} ({needed:,} bytes) on {torch.device(device)} but only "
                       f"{gigabytes(free)} is available; {remedy}.")


def require_batch(n: int, bytes_per_item: int, flag: str, device: torch.device | str = "cpu") -> None:
    """Refuse ``flag n`` when n items of ``bytes_per_item`` (a generous estimate) cannot fit."""
    require_memory(n * bytes_per_item, f"{flag} {n:,}", f"lower {flag}", device)
