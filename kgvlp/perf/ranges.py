"""Named profiler ranges around the parts of a training step, and the time split they give.

Steps open ``kgvlp/forward``, ``kgvlp/backward`` and ``kgvlp/optimizer`` themselves (cheap
when no profiler runs). ``step_ranges`` adds, for one profiled step only, ranges inside the
forward without touching model code: ``kgvlp/encode`` (VLPModel.encode, services included),
``kgvlp/encode/image`` and ``kgvlp/encode/text`` (not around a compiled module: a hook added to it
would recompile it), ``kgvlp/service/<name>`` and ``kgvlp/objective/<name>``.

``split_ms`` reads them back from a finished ``torch.profiler.profile``: device time where
the profiler recorded the range on a GPU stream, host time otherwise.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.autograd import DeviceType

PREFIX = "kgvlp/"


def _hook_range(module: nn.Module, name: str) -> list:
    """Forward pre/post hooks that open and close a ``record_function`` range."""
    opened: list = []

    def enter(*_):
        opened.append(torch.profiler.record_function(name).__enter__())

    def leave(*_):
        opened.pop().__exit__(None, None, None)
    return [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]


def _wrap_method(owner, attribute: str, name: str):
    """Shadow ``owner.attribute`` with an instance attribute that runs it inside a range."""
    method = getattr(owner, attribute)

    @functools.wraps(method)
    def ranged(*args, **kwargs):
        with torch.profiler.record_function(name):
            return method(*args, **kwargs)
    setattr(owner, attribute, ranged)
    return lambda: delattr(owner, attribute)


def _compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


@contextlib.contextmanager
def step_ranges(model: nn.Module):
    """Ranges inside ``model``'s forward (a VLPModel or the contrastive reference) while open."""
    handles, restore = [], []
    for attribute, name in (("image_encoder", "encode/image"), ("text_encoder", "encode/text")):
        encoder = getattr(model, attribute, None)
        if encoder is not None and not _compiled(encoder):
            handles += _hook_range(encoder, PREFIX + name)
    if hasattr(model, "encode"):
        restore.append(_wrap_method(model, "encode", PREFIX + "encode"))
    for name, service in getattr(model, "services", {}).items():
        restore.append(_wrap_method(service, "provide", f"{PREFIX}service/{name}"))
    objectives = getattr(getattr(model, "objectives", None), "objectives", {})
    for name, objective in objectives.items():
        handles += _hook_range(objective, f"{PREFIX}objective/{name}")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for undo in restore:
            undo()


def split_ms(prof) -> dict[str, float]:
    """Milliseconds in each ``kgvlp/`` range of a finished profile (prefix dropped): on a
    GPU the range's span on the device (the kernels it launched), else its host time."""
    host: dict[str, float] = {}
    device: dict[str, float] = {}
    for event in prof.events():
        if not event.name.startswith(PREFIX):
            continue
        name, elapsed = event.name[len(PREFIX):], event.time_range.elapsed_us() / 1e3
        side = host if event.device_type == DeviceType.CPU else device
        side[name] = side.get(name, 0.0) + elapsed
    return {name: device.get(name, ms) for name, ms in host.items()}
