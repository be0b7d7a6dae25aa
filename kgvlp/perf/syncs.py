"""Count the calls that would make the host wait for the GPU, on any device (CPU included).

On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` catches synchronising calls as they
happen. On a CPU nothing synchronises, so ``count_syncs()`` recognises the calls that
*would*: one mode sees the Python-level calls (``.item()``, ``.tolist()``, truth values and
``int()``/``float()`` of a tensor, ``.cpu()``, ``.numpy()``, ``.to("cpu")``, a host
tensor built in the step and moved ``.to(device)``), another the aten ops whose output size
or value the host must read (``nonzero``, boolean-mask indexing and index assignment,
``masked_select``, ``bincount``, ``unique``, ``repeat_interleave`` without an output
size, ``equal``), forward and backward; ``torch.cuda.synchronize`` is counted too.

Limits: a host read made inside an aten kernel (a C++ ``.item()``) is invisible to the
modes; the ops known to do so are listed by name (``bincount``, ``unique``, ``equal``, ...);
torch.multinomial no longer syncs (its checks are ``_assert_async``). DeepSpeed's optimizer
step is outside what the tests count: on a CPU its parameters' step counters and ZeRO's
partitions are host tensors, which this counter cannot tell from device ones. On a GPU,
``torch.cuda.set_sync_debug_mode("error")`` is the complete check.

Each event is recorded with the innermost kgvlp source line outside this module that made
it (``kgvlp/objectives/itm.py:131``), or ``<backward or caller>`` (the backward pass has no kgvlp frame), so a test can
both require zero and say where the syncs are.
"""
from __future__ import annotations

import collections
import contextlib
import sys
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

_PACKAGE = Path(__file__).resolve().parents[1]          # …/kgvlp
_THIS = Path(__file__).resolve()

# Python-level reads of a tensor's value into the host.
_HOST_READS = {"item", "tolist", "numpy", "__bool__", "__int__", "__float__", "__index__", "__format__"}
# aten ops whose output shape or value depends on the data (the host must wait for it).
_DATA_DEPENDENT = {"nonzero", "nonzero_numpy", "argwhere", "masked_select", "bincount", "unique",
                   "_unique", "_unique2", "unique_dim", "unique_consecutive", "equal", "is_nonzero",
                   "_local_scalar_dense"}
# Factory functions: with no device they build a tensor on the host.
_FACTORIES = {"tensor", "as_tensor", "ones", "zeros", "full", "empty", "arange", "linspace", "eye",
              "rand", "randn", "randint", "randperm", "from_numpy"}


@dataclass
class SyncCounts:
    """What would synchronise: ``events`` is one (kind, where) per call, in order."""
    events: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.events)

    def by_site(self) -> collections.Counter:
        return collections.Counter(f"{where} {kind}" for kind, where in self.events)

    def by_file(self) -> collections.Counter:
        return collections.Counter(where.rsplit(":", 1)[0] for _, where in self.events)

    def report(self) -> str:
        lines = [f"{count:3d}  {site}" for site, count in sorted(self.by_site().items())]
        return "\n".join([f"{self.total} host syncs"] + lines)


def _call_site() -> str:
    """The innermost frame in the kgvlp package (outside this file) of the current stack."""
    frame = sys._getframe(1)
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        try:
            inside = path.resolve() != _THIS and path.resolve().is_relative_to(_PACKAGE)
        except OSError:
            inside = False
        if inside:
            return f"kgvlp/{path.resolve().relative_to(_PACKAGE).as_posix()}:{frame.f_lineno}"
        frame = frame.f_back
    return "<backward or caller>"


def _tensors(args, kwargs) -> list[torch.Tensor]:
    flat, _ = tree_flatten((args, kwargs or {}))
    return [a for a in flat if isinstance(a, torch.Tensor)]


def _name(func) -> str:
    return getattr(func, "__name__", str(func))


class _TensorSet:
    """Tensors by identity, held weakly (a WeakSet compares tensors by value)."""

    def __init__(self):
        self._refs: dict[int, weakref.ref] = {}

    def __contains__(self, tensor: torch.Tensor) -> bool:
        ref = self._refs.get(id(tensor))
        return ref is not None and ref() is tensor

    def update(self, tensors) -> None:
        for tensor in tensors:
            self._refs[id(tensor)] = weakref.ref(tensor)


class _PythonCalls(TorchFunctionMode):
    """Python-level host reads, device copies, and host tensors made inside the step."""

    def __init__(self, counts: SyncCounts, state: dict):
        super().__init__()
        self.counts, self.state = counts, state
        self.host_made = _TensorSet()       # tensors built on the host in the step

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        inputs = _tensors(args, kwargs)
        kind = self._kind(name, args, kwargs, inputs)
        if kind:
            self.counts.events.append((kind, _call_site()))
        # Its own aten ops (the _local_scalar_dense of .item()) are this event; a CPU kernel's
        # value checks that its CUDA kernel leaves to device asserts are no event at all.
        quiet = bool(kind) or _checks_only_on_cpu(name, args, kwargs)
        self.state["depth"] += quiet
        try:
            out = func(*args, **kwargs)
        finally:
            self.state["depth"] -= quiet
        if kind != "host tensor copied to the device":
            self._track_host(name, kwargs, inputs, out)
        return out

    def _kind(self, name, args, kwargs, inputs) -> str | None:
        on_host = bool(inputs) and all(t in self.host_made for t in inputs)   # no device involved
        if name in _HOST_READS and not on_host:
            return f".{name}()"
        # On a CPU-only run every device is the host: ``.to(x.device)`` is taken for a no-op,
        # ``.cpu()`` and ``.to("cpu")`` written out for what they would be on a GPU.
        named_host = kwargs.get("device", args[1] if len(args) > 1 else None) == "cpu"
        if (name == "cpu" or (name == "to" and named_host)) and not on_host:
            return "copy to host"
        moved = inputs[-1] if name == "copy_" else inputs[0] if inputs else None
        if moved is not None and moved in self.host_made and (
                name in ("cuda", "copy_") or (name == "to" and _device_arg(args, kwargs) is not None)):
            return "host tensor copied to the device"
        return None

    def _track_host(self, name, kwargs, inputs, out) -> None:
        """A tensor built on the host, or computed only from such tensors, is a host tensor."""
        outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if name in _FACTORIES and kwargs.get("device") is None:
            self.host_made.update(outputs)
        elif inputs and all(t in self.host_made for t in inputs):
            self.host_made.update(outputs)


def _checks_only_on_cpu(name, args, kwargs) -> bool:
    """``F.one_hot(x, n)``: the CPU kernel reads x.min() and x.max() to check them, the CUDA
    kernel does not (aten/src/ATen/native/Onehot.cpp); without n both read x.max()."""
    classes = kwargs.get("num_classes", args[1] if len(args) > 1 else -1)
    return name == "one_hot" and classes >= 0


def _device_arg(args, kwargs) -> str | None:
    """The device type a ``Tensor.to(...)`` call names (``to(other)`` names other's), else None."""
    target = kwargs.get("device", args[1] if len(args) > 1 else None)
    if isinstance(target, torch.Tensor):
        return target.device.type
    if isinstance(target, (str, torch.device)):
        return torch.device(target).type
    return None


class _AtenOps(TorchDispatchMode):
    """Data-dependent aten ops (forward and backward)."""

    def __init__(self, counts: SyncCounts, state: dict):
        super().__init__()
        self.counts, self.state = counts, state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.state["depth"] == 0:
            kind = self._kind(func, args, kwargs)
            if kind:
                self.counts.events.append((kind, _call_site()))
        return func(*args, **kwargs)

    @staticmethod
    def _kind(func, args, kwargs) -> str | None:
        name = func.overloadpacket.__name__
        if name in _DATA_DEPENDENT:
            return name
        if name in ("index", "index_put", "index_put_", "_index_put_impl_"):
            indices = args[1] if len(args) > 1 else kwargs.get("indices", [])
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or []):
                return f"{name} with a boolean mask"
        if name == "repeat_interleave" and isinstance(args[0] if args else None, torch.Tensor) \
                and kwargs.get("output_size") is None and (len(args) < 2 or isinstance(args[1], torch.Tensor)):
            return "repeat_interleave without output_size"
        if name in ("_to_copy", "copy_") and _crosses_devices(args, kwargs):
            return "copy between host and device"
        return None


def _crosses_devices(args, kwargs) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    device = kwargs.get("device")
    devices = {t.device.type for t in tensors} | ({torch.device(device).type} if device is not None else set())
    return "cpu" in devices and len(devices) > 1


@contextlib.contextmanager
def count_syncs():
    """``with count_syncs() as counts: step()`` → ``counts.total``, ``counts.report()``."""
    counts, state = SyncCounts(), {"depth": 0}
    synchronize = torch.cuda.synchronize

    def counted_synchronize(*args, **kwargs):
        counts.events.append(("torch.cuda.synchronize", _call_site()))
        return synchronize(*args, **kwargs)

    torch.cuda.synchronize = counted_synchronize
    try:
        with _PythonCalls(counts, state), _AtenOps(counts, state):
            yield counts
    finally:
        torch.cuda.synchronize = synchronize
