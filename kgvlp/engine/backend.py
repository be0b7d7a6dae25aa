"""All DeepSpeed handling in one place: process group, engine, precision, step, checkpoints.

The trainer sees ``backward``/``step``/``save``/``load`` and never imports deepspeed.
"""
from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import get_args

import torch

from kgvlp.config.schema import Precision, TrainerConfig
from kgvlp.engine.accumulation import accumulate
from kgvlp.files import write_text_atomic


def pick_device(name: str | torch.device | None = "auto", precision: str | None = None) -> torch.device:
    """The device ``trainer.device`` (or eval's ``--device``) names — ``auto``/None: CUDA when
    visible, else CPU; with ``precision``, refuse (before any model or data is built) a
    precision DeepSpeed would refuse on it after both are built."""
    if name is None or name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif torch.device(name).type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} requested (trainer.device / --device) but no CUDA device is visible")
    else:
        device = torch.device(name)
    if precision is not None and precision not in supported_precisions(device):
        from kgvlp.config.loader import ConfigError
        raise ConfigError(f"trainer.precision={precision}: {describe_device(device)} cannot run it; "
                          f"it can run {', '.join(supported_precisions(device))}")
    return device


def _cpu_runs_fp16() -> bool:
    """DeepSpeed's CPU accelerator asks oneDNN (``is_fp16_supported``): AVX512-FP16 or AMX-FP16."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def supported_precisions(device: torch.device) -> tuple[str, ...]:
    """The ``trainer.precision`` values DeepSpeed 0.19's engine accepts on ``device`` (its
    ``_do_sanity_check`` asks the accelerator), without importing DeepSpeed."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        fp16 = major >= 7 or (major == 6 and os.environ.get("DS_ALLOW_DEPRECATED_FP16") == "1")
        bf16 = torch.cuda.is_bf16_supported()
    else:
        fp16, bf16 = _cpu_runs_fp16(), True
    able = {"fp32": True, "bf16": bf16, "bf16-weights": bf16, "fp16": fp16}
    return tuple(p for p in PRECISIONS if able[p])


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"this GPU ({torch.cuda.get_device_name(device)})"
    import platform
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), model)
    except OSError:
        pass
    return f"this CPU ({model})"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed(device: torch.device) -> None:
    """Join (or create, for a plain single process) the process group DeepSpeed uses.

    Launchers (deepspeed, torchrun, SLURM wrappers) set RANK/WORLD_SIZE/MASTER_*; a plain
    ``kgvlp train`` gets a one-rank group. CPU uses gloo, CUDA nccl. Nothing is compiled:
    see ``_no_deepspeed_builds``.
    """
    if device.type == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    _no_deepspeed_builds()
    import deepspeed
    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend="gloo" if device.type == "cpu" else "nccl",
                                   verbose=False)
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))


def _no_deepspeed_builds() -> None:
    """Keep DeepSpeed from JIT-compiling C++ ops for training.

    Its process-group wrapper (deepspeed/comm/torch.py, ``build_shm_op``) compiles the
    shared-memory all-reduce ``deepspeed_shm_comm`` on the CPU accelerator whenever
    ``deepspeed.ops.__compatible_ops__`` calls it buildable: minutes, a C++ compiler, and one
    lock shared by every environment of the user. gloo's all-reduce does the same job, so
    the op is marked unavailable (DeepSpeed caches that dict and reads it back). Any op that
    is still built goes to a cache of this environment, not the user-wide default.
    """
    prefix_cache = Path(sys.prefix) / "torch_extensions"
    if os.access(sys.prefix, os.W_OK) or prefix_cache.is_dir():
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(prefix_cache))
    import deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


PRECISIONS = get_args(Precision)
HALF_WEIGHTS = {"bf16-weights": torch.bfloat16, "fp16": torch.float16}   # DeepSpeed's own half modes


def deepspeed_config(trainer: TrainerConfig, micro_batch: int) -> dict:
    if trainer.precision not in PRECISIONS:
        raise ValueError(f"trainer.precision: expected {'|'.join(PRECISIONS)}, got {trainer.precision!r}")
    if trainer.zero_stage not in (0, 1, 2, 3):
        raise ValueError(f"trainer.zero_stage: expected 0, 1, 2 or 3, got {trainer.zero_stage}")
    # Half-precision weights: DeepSpeed (0.19) casts only parameters unless told the buffers'
    # dtype, and BatchNorm rejects bf16/fp16 weights beside fp32 running statistics. Buffers
    # follow the weights, except the momentum copies (EMAModule lists its shadow in
    # ``_keep_in_fp32_modules_strict``): an EMA with m near 1 in bf16 rounds its updates away.
    half = HALF_WEIGHTS.get(trainer.precision)
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        # trainer.grad_accum is kgvlp's own (kgvlp/engine/accumulation.py: the objectives see
        # all micro-batches at once); DeepSpeed sees one step of several backward calls.
        "gradient_accumulation_steps": 1,
        "gradient_clipping": trainer.grad_clip,
        "zero_optimization": {"stage": trainer.zero_stage},
        # "bf16" is torch.autocast over fp32 weights (see DeepSpeedBackend.forward): measured
        # on an H100, DeepSpeed's own bf16 optimizer spent 75 ms per step where fused AdamW on
        # fp32 weights takes 6. "bf16-weights" keeps DeepSpeed's bf16 mode (half the memory).
        "bf16": {"enabled": trainer.precision == "bf16-weights"},
        "torch_autocast": {"enabled": trainer.precision == "bf16", "dtype": "bfloat16"},
        "fp16": {"enabled": trainer.precision == "fp16", "initial_scale_power": 16},
        "data_types": {"buffer_dtype": str(half)} if half else {},    # "torch.bfloat16" etc.
        "zero_allow_untested_optimizer": True,   # torch AdamW (fused on CUDA)
        "steps_per_print": 10 ** 12,
        "wall_clock_breakdown": False,
    }


def _allow_deepspeed_checkpoint_types() -> None:
    """DeepSpeed's checkpoints hold a few of its own plain classes (loss scaler, enums) next
    to tensors; allow exactly those for ``torch.load(weights_only=True)``."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    torch.serialization.add_safe_globals([LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address])


def make_safe_checkpoint_engine():
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

    class SafeCheckpointEngine(TorchCheckpointEngine):
        """DeepSpeed's torch checkpoint engine, loading with ``weights_only=True``."""

        def load(self, path: str, map_location=None):
            from kgvlp.models.weights import torch_load_tensors
            return torch_load_tensors(path, map_location=map_location)

    _allow_deepspeed_checkpoint_types()
    return SafeCheckpointEngine()


def register_external_parameters(model: torch.nn.Module) -> None:
    """ZeRO-3 gathers a parameter only while its owning module's forward runs; modules that
    read a child's parameters outside it list them in ``external_parameters()`` (the ViT
    encoder: timm's class token and position embedding), and DeepSpeed gathers those around
    the listing module's forward. Without it a ZeRO-3 ViT step read size-0 partitions."""
    import deepspeed
    for module in model.modules():
        for param in getattr(module, "external_parameters", lambda: [])():
            deepspeed.zero.register_external_parameter(module, param)


class DeepSpeedBackend:
    def __init__(self, model: torch.nn.Module, trainer: TrainerConfig, micro_batch: int,
                 device: torch.device):
        import deepspeed
        self.device = device
        self.trainer = trainer
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer_kwargs = dict(lr=trainer.lr, betas=tuple(trainer.betas), weight_decay=trainer.weight_decay)
        if device.type == "cuda":
            optimizer_kwargs["fused"] = True
            # TF32 matmuls for whatever stays in fp32 (set per run, never at import).
            torch.backends.cuda.matmul.allow_tf32 = trainer.tf32
            torch.backends.cudnn.allow_tf32 = trainer.tf32
        optimizer = torch.optim.AdamW(params, **optimizer_kwargs)
        # The torch AdamW itself (DeepSpeed's ZeRO / bf16 wrappers step it on their fp32
        # partitions): its ``state`` is what a reset clears.
        self.adamw = optimizer
        self.engine, self.optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, config=deepspeed_config(trainer, micro_batch))
        self.engine.checkpoint_engine = make_safe_checkpoint_engine()
        if trainer.zero_stage == 3:
            register_external_parameters(self.engine.module)
        # Inputs in the weights' dtype; autocast (bf16) casts inside the ops instead.
        self.image_dtype = HALF_WEIGHTS.get(trainer.precision)

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def rank(self) -> int:
        return torch.distributed.get_rank()

    @property
    def world_size(self) -> int:
        return torch.distributed.get_world_size()

    def barrier(self) -> None:
        torch.distributed.barrier()

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def reset_optimizer(self) -> None:
        """A fresh optimizer state, as a newly built AdamW has (PRIOR's code builds one per
        stage): moments and step count go; AdamW re-creates them lazily at the next step, on
        whatever partitions ZeRO gave it. Hyperparameters and lr stay."""
        self.adamw.state.clear()

    def forward(self, batch, ctx):
        # bf16 autocast is applied by the engine (its torch_autocast section): an autocast
        # context opened here would be switched off inside DeepSpeed's forward.
        return self.engine(batch.to(self.device, self.image_dtype), ctx)

    def backward(self, loss: torch.Tensor, boundary: bool = True) -> None:
        """Backpropagate ``loss``; ``boundary`` False for all but the last backward of an
        optimizer step (ZeRO then reduces the accumulated gradients once, at the last)."""
        self.engine.set_gradient_accumulation_boundary(boundary)
        self.engine.backward(loss)

    def step(self) -> bool:
        """Optimizer step at the accumulation boundary; True when the weights changed."""
        boundary = self.engine.is_gradient_accumulation_boundary()
        self.engine.step()
        return boundary

    def train_step(self, batches: list, ctx) -> tuple[torch.Tensor, dict]:
        """Forward, backward and optimizer step over the micro-batches of one step: one
        batch directly; several through ``accumulate`` (the objectives see them all at once)."""
        if len(batches) == 1:
            loss, logs = self.forward(batches[0], ctx)
            self.backward(loss)
        else:
            self._clear_zero3_gradient_partitions()
            batches = [batch.to(self.device, self.image_dtype) for batch in batches]   # moved once
            loss, logs = accumulate(
                batches, encode=lambda batch: self.engine(batch, ctx, part="samples"),
                loss_of=lambda features: self.engine(features, ctx, part="loss"),
                backward=lambda tensor, last: self.backward(tensor, boundary=last),
                module=self.engine.module, device=self.device)
        self.step()
        return loss, logs

    def _clear_zero3_gradient_partitions(self) -> None:
        """ZeRO-3 copies (rather than adds) a gradient partition only in the first backward
        after ``zero_grad`` and counts backwards at the next forward; accumulation's first
        backward (the loss on the cached features) reaches only the heads, and the forward
        that follows moves the count on, so the encoders' partitions kept the previous
        step's gradients and were added to (2 ranks, ZeRO-3, grad_accum 2: step 3's loss
        off by 0.3). Zeroing the flat partition buffer first makes every backward add."""
        buffer = getattr(self.engine.optimizer, "grad_partitions_flat_buffer", None)
        if self.trainer.zero_stage == 3 and buffer is not None:
            buffer.zero_()

    # -- checkpoints -------------------------------------------------------------------
    def save(self, directory: Path, step: int, client_state: dict, keep: int) -> Path:
        """Write ``directory/step_XXXXXXX`` atomically: every rank writes into a temporary
        tag, rank 0 renames it once all are done and then points ``latest`` at it."""
        directory.mkdir(parents=True, exist_ok=True)
        tag = f"step_{step:07d}"
        tmp_tag = f"{tag}.tmp"
        if self.rank == 0 and (directory / tmp_tag).exists():
            shutil.rmtree(directory / tmp_tag)
        self.barrier()
        self.engine.save_checkpoint(str(directory), tag=tmp_tag, client_state=client_state,
                                    save_latest=False)
        self.barrier()
        if self.rank == 0:
            final = directory / tag
            if final.exists():
                shutil.rmtree(final)
            os.replace(directory / tmp_tag, final)
            write_text_atomic(directory / "latest", tag)
            for old in sorted(directory.glob("step_*"))[:-keep] if keep > 0 else []:
                if old.is_dir() and not old.name.endswith(".tmp"):
                    shutil.rmtree(old, ignore_errors=True)
        self.barrier()
        return directory / tag

    def load(self, directory: Path) -> dict:
        """Load the checkpoint ``latest`` points to (or ``directory`` itself if it is a tag
        folder); returns the client state."""
        directory = Path(directory)
        if (directory / "latest").is_file():
            root, tag = directory, (directory / "latest").read_text().strip()
        elif directory.name.startswith("step_"):
            root, tag = directory.parent, directory.name
        else:
            raise FileNotFoundError(f"{directory}: no 'latest' file and not a step_* checkpoint folder")
        path, client_state = self.engine.load_checkpoint(str(root), tag=tag, load_optimizer_states=True,
                                                         load_lr_scheduler_states=False)
        if path is None:
            raise FileNotFoundError(f"could not load checkpoint {root / tag}")
        return client_state

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """All module weights in float32 on CPU (gathered under ZeRO-3)."""
        module = self.engine.module
        if self.trainer.zero_stage == 3:
            import deepspeed
            with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
                return {k: v.detach().float().cpu().clone() for k, v in module.state_dict().items()}
        return {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
                for k, v in module.state_dict().items()}
