"""How much memory a measurement takes, and the batch size that keeps it under a budget.

:func:`diffeosense.sensitivity.measure` streams: one batch of ``B`` probes goes through the
model as ``3B`` images (``x``, ``tau x``, ``x + eta``) and every tapped layer is reduced as
soon as it is produced. Its peak memory is therefore a fixed part plus ``B`` times a per-probe
part, both read off the layer shapes that the one-sample probe of the layer tap already
found (nothing is run to estimate them):

* fixed: :data:`WORKSPACE`, the parameters and buffers, plus per measured layer of ``n`` components per sample
  the float64 accumulators of its denominator (shift, running sums of the whole probe set and
  of the current block: ``4 n`` values, ``32 n`` bytes, and as much again for the
  channel-mean view); with ``statistic="component-median"`` also every probe's squared
  differences (``2 n`` float32 per probe and layer, kept to the end: ``8 n N`` bytes);
* per probe: the three perturbed copies of the input and their concatenation (``6 n_in``
  elements), plus, at the largest layer (``n_max`` components), the activations a forward
  pass keeps alive together for the three streams, up to four in a residual block (its input,
  two convolutions' outputs, the sum: ``12 n_max``): ``e (6 n_in + 12 n_max)`` bytes for
  elements of ``e`` bytes. The reductions walk each layer in chunks of probes into reused
  work buffers (four of at most ``CHUNK_BYTES`` each, or one probe of the largest layer; in
  the fixed part), so the differences and the shifted clean stream take nothing per probe.

Every layer of the forward pass counts for ``n_max``, measured or not (the model computes
them all). The estimate bounds the tensors that are alive together, not the allocator's
fragmentation or the kernels' own buffers: :data:`WORKSPACE` is added to the fixed part, and
the plan fills :data:`HEADROOM` of the budget. Checked against the peak resident memory of a
process measuring ResNet-18 (all layers, CPU, one thread, 64 px): the estimate is 533 MB for
8 probes per batch and 828 MB for 32; with glibc's mmap threshold fixed
(``MALLOC_MMAP_THRESHOLD_=131072``: freed buffers go back to the system, so the peak is what
the algorithm holds) the process grew by 551 and 808 MB; with the default allocator, whose
reused heap fragments, by 569 MB and, in three runs, 866 to 1059 MB at 32 probes (up to 1.28x
the estimate, about what the headroom leaves).

>>> from diffeosense.layers import Layer
>>> layers = [Layer("input", 0, "input", (3, 32, 32)), Layer("conv", 1, "conv", (64, 32, 32)),
...           Layer("output", 2, "output", (10,))]
>>> plan = plan_memory(layers, layers, param_bytes=0, element_bytes=4, n_probes=500)
>>> plan.per_probe  # 4 * (6 * 3072 + 12 * 65536)
3219456
>>> plan.fixed == WORKSPACE + 4 * 4 * 65536 + 32 * (3072 + 65536 + 10)  # buffers: one probe
True
>>> plan.batch_size(budget=2 ** 30, requested=128), plan.batch_size(budget=2 ** 28, requested=128)
(128, 24)
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass

import torch

__all__ = ["MemoryPlan", "plan_memory", "parse_bytes", "default_budget", "format_bytes",
           "HEADROOM", "AUTO_FRACTION", "WORKSPACE"]

#: Share of the budget the estimate may fill (the rest: allocator and kernel workspace).
HEADROOM = 0.8
#: ``max_memory="auto"``: this share of the memory the device has free now.
AUTO_FRACTION = 0.5
#: Bytes added to every estimate for tracing, kernel set-up and workspace buffers.
WORKSPACE = 128 * 2**20

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
          "tib": 2**40}


def parse_bytes(value: int | float | str) -> int:
    """A memory size: a number of bytes, or a string with a unit (binary multiples:
    ``"512MB"``, ``"4 GiB"``, ``"1.5g"``).

    >>> parse_bytes("4GB"), parse_bytes("512 MiB"), parse_bytes(1000)
    (4294967296, 536870912, 1000)
    """
    if isinstance(value, bool):
        raise ValueError(f"a memory size must be a number of bytes or a string like '4GB', "
                         f"got {value!r}")
    if isinstance(value, int | float):
        n = float(value)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        if not m or m[2].lower() not in _UNITS:
            raise ValueError(f"a memory size must be a number of bytes or a number with a "
                             f"unit (B, KB, MB, GB, TB; binary multiples), e.g. '4GB', got "
                             f"{value!r}")
        n = float(m[1]) * _UNITS[m[2].lower()]
    if not (n > 0 and math.isfinite(n)):
        raise ValueError(f"a memory size must be > 0, got {value!r}")
    return int(n)


def format_bytes(n: float) -> str:
    """``1.5 GB`` (binary multiples, 3 significant digits).

    >>> format_bytes(3 * 2**29), format_bytes(2048)
    ('1.5 GB', '2 KB')
    """
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def default_budget(device: torch.device) -> int:
    """``max_memory="auto"``: :data:`AUTO_FRACTION` of the memory ``device`` has free now
    (CUDA: ``torch.cuda.mem_get_info``; CPU: the available physical memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram()
    return int(AUTO_FRACTION * free)


def _available_ram() -> int:
    try:  # Linux: MemAvailable counts the page cache that can be reclaimed
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30  # unknown: assume a small machine


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated peak memory of a measurement: ``fixed + batch * per_probe`` bytes, and the
    budget it must fit (None: none given)."""

    fixed: int
    per_probe: int
    largest: str  # the layer with the most components per sample (sets per_probe)
    budget: int | None = None

    def peak(self, batch: int) -> int:
        return self.fixed + batch * self.per_probe

    def with_budget(self, budget: int) -> MemoryPlan:
        return dataclasses.replace(self, budget=int(budget))

    def summary(self, batch: int, n_probes: int, n_layers: int, first_seconds: float) -> str:
        """One line for the user before a long run: batch, estimated peak and budget, and
        the time estimated from the first batch (``first_seconds`` for ``batch`` probes)."""
        n_batches = math.ceil(n_probes / batch)
        budget = f" of max_memory {format_bytes(self.budget)}" if self.budget else ""
        return (f"measure: {n_probes} probes x {n_layers} layers in batches of {batch}, "
                f"estimated peak {format_bytes(self.peak(batch))}{budget}, about "
                f"{first_seconds * n_batches:.0f} s ({n_batches} batches)")

    def batch_size(self, budget: int, requested: int) -> int:
        """The largest batch ``<= requested`` whose estimated peak fits ``HEADROOM * budget``;
        ``ValueError`` when not even one probe does."""
        room = HEADROOM * budget - self.fixed
        fits = int(room // self.per_probe) if room > 0 else 0
        if fits < 1:
            raise ValueError(
                f"max_memory {format_bytes(budget)} is too small for this measurement: it "
                f"needs {format_bytes(self.fixed)} for the model and the layers' accumulators "
                f"plus {format_bytes(self.per_probe)} per probe (largest layer "
                f"{self.largest!r}), {format_bytes(self.peak(1) / HEADROOM)} with headroom for "
                f"one probe at a time; raise max_memory (--max-memory), measure fewer layers "
                f"(--layers), or use smaller inputs")
        return max(1, min(int(requested), fits))


def plan_memory(layers, chosen, *, param_bytes: int, element_bytes: int, n_probes: int,
                channels: bool = False, components: bool = False,
                chunk_bytes: int = 0) -> MemoryPlan:
    """The :class:`MemoryPlan` of measuring ``chosen`` (the measured layers) of a model
    whose forward pass produces ``layers`` (all of the tap's, input first, each with its
    per-sample ``shape``), with elements of ``element_bytes``, reduced in chunks of at most
    ``chunk_bytes`` per stream (module docstring)."""
    n_in = layers[0].size
    big = max(layers, key=lambda layer: layer.size)
    per_probe = element_bytes * (6 * n_in + 12 * big.size)
    # The reductions' work buffers: two differences, the shifted clean chunk and its column
    # sums, each at most a chunk (or one probe of the largest layer, in float32 or wider).
    row = max(element_bytes, 4) * big.size
    fixed = WORKSPACE + int(param_bytes) + 4 * max(int(chunk_bytes), row)
    for layer in chosen:
        fixed += 32 * layer.size * (2 if channels and len(layer.shape) >= 2 else 1)
        if components:
            fixed += 8 * layer.size * n_probes
    return MemoryPlan(fixed, per_probe, big.name)
