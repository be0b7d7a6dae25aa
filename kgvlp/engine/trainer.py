"""The training loop. It knows nothing about objectives: the schedule gives the step's
context (stage, lr, objective weights), then ``loss, logs = model(batch, ctx)``; backward;
step; ``model.after_step(ctx)``."""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch.utils.data import DataLoader

from kgvlp.config import LoadedExperiment, save_resolved
from kgvlp.engine.backend import DeepSpeedBackend, init_distributed, pick_device
from kgvlp.engine.checkpoint import load_weights_into
from kgvlp.engine.logging import MetricsLogger, progress_bar
from kgvlp.engine.sampler import EpochSeededDataset, ResumableSampler
from kgvlp.engine.schedule import Schedule
from kgvlp.engine.validation import EarlyStopping, Validator
from kgvlp.models.build import build_model


class NonFiniteLoss(RuntimeError):
    """A loss term became NaN/Inf; names the step, objective and term, and the last good checkpoint."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_weights: Path
    history: list[dict] = field(default_factory=list)   # the logged rows (rank 0)
    stopped_early: bool = False                         # early stopping ended it before max_steps


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def new_run_dir(out_dir: str, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(out_dir) / f"{name}-{stamp}"


def _rng_to_plain(state: dict) -> dict:
    """numpy/python RNG states as tensors/lists so the checkpoint loads with weights_only=True."""
    numpy_state = state["numpy"]
    plain = {"torch": state["torch"], "python": [state["python"][0], list(state["python"][1]), state["python"][2]],
             "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]]}
    if "cuda" in state:
        plain["cuda"] = state["cuda"]
    return plain


def _rng_from_plain(plain: dict) -> dict:
    numpy_state = (plain["numpy"][0], plain["numpy"][1].numpy().astype(np.uint32), *plain["numpy"][2:])
    python_state = (plain["python"][0], tuple(plain["python"][1]), plain["python"][2])
    state = {"torch": plain["torch"], "numpy": numpy_state, "python": python_state}
    if "cuda" in plain:
        state["cuda"] = plain["cuda"]
    return state


class Trainer:
    """A recipe: build the model (its objectives decide what a batch carries), then the data,
    the schedule and the DeepSpeed backend; ``train()`` loops forward, backward, step."""

    def __init__(self, experiment: LoadedExperiment, run_dir: Path | None = None,
                 resume: Path | None = None, dataset=None, val_dataset=None):
        cfg = self.cfg = experiment.config
        self.experiment = experiment
        self.device = pick_device(cfg.trainer.device, cfg.trainer.precision)
        init_distributed(self.device)
        self.rank, self.world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        seed_everything(cfg.seed)
        self.run_dir = self._shared_run_dir(run_dir, resume)
        if self.rank == 0:
            save_resolved(experiment.tree, self.run_dir / "config.yaml")

        model = build_model(cfg)
        if cfg.model.init_from:
            load_weights_into(model, cfg.model.init_from)
        data_cfg = dataclasses.replace(cfg.data, second_view=cfg.data.second_view or model.wants_second_view)
        self._build_data(data_cfg, dataset)
        self.schedule = Schedule.from_config(cfg, self._steps_per_epoch())

        self.backend = DeepSpeedBackend(model, cfg.trainer, cfg.data.batch_size, self.device)
        self.model = self.backend.module
        if cfg.trainer.compile:
            self.model.compile_for_training()
        self.logger = MetricsLogger(self.run_dir, enabled=self.rank == 0)
        self.step = 0
        self.micro_step = 0          # micro-batches consumed in the current epoch
        self.epoch = 0
        self.skipped_samples = 0
        self.last_checkpoint: Path | None = None
        validation = cfg.trainer.validation
        self.validator = (Validator(validation, data_cfg, self.collate, self.rank, self.world, val_dataset)
                          if validation.split is not None else None)
        self.stopping = EarlyStopping(validation.patience, validation.min_delta)
        if resume is not None:
            try:
                self._resume(Path(resume))
            except BaseException:   # a refused checkpoint: leave metrics.jsonl closed
                self.logger.close()
                raise

    def close(self) -> None:
        """Close the metrics files of a trainer built but not trained (``train`` closes them)."""
        self.logger.close()

    @property
    def max_steps(self) -> int:
        return self.schedule.max_steps

    def _shared_run_dir(self, run_dir: Path | None, resume: Path | None) -> Path:
        """Every rank must agree on the folder: rank 0 picks it, the others receive it."""
        if run_dir is None:
            run_dir = Path(resume) if resume else new_run_dir(self.cfg.out_dir, self.cfg.name)
        shared = [str(run_dir)]
        torch.distributed.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
        if self.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir

    def _build_data(self, data_cfg, dataset) -> None:
        from kgvlp.data.collate import Collator
        from kgvlp.models.text import load_tokenizer
        text_cfg = self.cfg.model.text
        self.tokenizer = load_tokenizer(text_cfg)
        if dataset is None:
            from kgvlp.data import build_pretrain_dataset
            if self.rank == 0:
                dataset = build_pretrain_dataset(data_cfg, train=True)  # generates SynthCXR once
            torch.distributed.barrier()
            if self.rank != 0:
                dataset = build_pretrain_dataset(data_cfg, train=True)
        self.dataset = EpochSeededDataset(dataset, self.cfg.seed)
        self.sampler = ResumableSampler(len(dataset), data_cfg.batch_size, self.rank, self.world, self.cfg.seed)
        self.collate = Collator(self.tokenizer, text_cfg.max_length)

    def _steps_per_epoch(self) -> int:
        steps = self.sampler.batches_per_epoch // self.cfg.trainer.grad_accum
        if steps == 0:
            raise ValueError(f"an epoch has fewer batches ({self.sampler.batches_per_epoch}) than "
                             f"trainer.grad_accum ({self.cfg.trainer.grad_accum})")
        return steps

    # -- state -------------------------------------------------------------------------
    def _client_state(self) -> dict:
        return {"kgvlp": {"step": self.step, "epoch": self.epoch, "micro_step": self.micro_step,
                          "skipped_samples": self.skipped_samples, "rng": _rng_to_plain(rng_state()),
                          "early_stopping": self.stopping.state_dict()}}

    def _resume(self, run_dir: Path) -> None:
        checkpoints = run_dir / "checkpoints"
        if not (checkpoints / "latest").is_file():
            raise FileNotFoundError(f"--resume {run_dir}: no checkpoints/latest in that run folder")
        state = self.backend.load(checkpoints)["kgvlp"]
        self.step, self.epoch, self.micro_step = state["step"], state["epoch"], state["micro_step"]
        self.skipped_samples = state["skipped_samples"]
        if "early_stopping" in state:   # checkpoints written before validation existed have none
            self.stopping.load_state_dict(state["early_stopping"])
        set_rng_state(_rng_from_plain(state["rng"]))
        self.last_checkpoint = checkpoints / (checkpoints / "latest").read_text().strip()

    def save_checkpoint(self) -> Path:
        self.last_checkpoint = self.backend.save(self.run_dir / "checkpoints", self.step, self._client_state(),
                                                 keep=self.cfg.trainer.keep_checkpoints)
        return self.last_checkpoint

    # -- loop --------------------------------------------------------------------------
    def _loader(self) -> DataLoader:
        self.dataset.epoch = self.epoch
        self.sampler.set_position(self.epoch, self.micro_step)
        workers = self.cfg.data.num_workers
        return DataLoader(self.dataset, batch_size=self.cfg.data.batch_size, sampler=self.sampler,
                          collate_fn=self.collate, num_workers=workers, drop_last=True,
                          pin_memory=self.device.type == "cuda", persistent_workers=False,
                          prefetch_factor=4 if workers > 0 else None,
                          # Its own generator: creating the iterator must not draw from the
                          # global RNG, or a resumed run's dropout stream would shift.
                          generator=torch.Generator().manual_seed(self.cfg.seed * 7_919 + self.epoch))

    def _flush(self, window: "LogWindow") -> dict[str, float]:
        """One device→host transfer per log window; raises NonFiniteLoss on a bad term."""
        rows = window.rows
        if not rows:
            return {}
        # The keys every step logged: an objective skipped at some steps of the window (weight
        # 0 in its stage) logs only its weighted 0 there, so its raw terms wait for a full window.
        keys = [key for key in rows[0][1] if all(key in logs for _, logs in rows)]
        values = torch.stack([torch.stack([logs[k].float() for k in keys]) for _, logs in rows])
        if self.world > 1:  # log the mean over ranks (each rank's terms cover its own rows)
            torch.distributed.all_reduce(values)
            values /= self.world
        values = values.cpu()
        finite = torch.isfinite(values)
        if self.cfg.trainer.stop_on_nonfinite and not bool(finite.all()):
            row, col = [int(i) for i in (~finite).nonzero()[0]]
            step = rows[row][0]
            bad = next((k for k in keys if k.startswith("loss/") and k != "loss/total"
                        and not math.isfinite(float(values[row, keys.index(k)]))), keys[col])
            _, objective, term = (bad.split("/") + ["", ""])[:3]
            raise NonFiniteLoss(f"non-finite loss at step {step}: objective {objective!r}, term {term!r} "
                                f"({bad} = {float(values[row, keys.index(bad)])}); last good checkpoint: "
                                f"{self.last_checkpoint or 'none (no checkpoint was written yet)'}")
        mean = dict(zip(keys, values.mean(0).tolist()))
        mean["pairs_per_s"] = window.pairs / max(window.elapsed, 1e-9)
        mean["lr"] = window.lr
        mean["skipped_samples"] = float(self.skipped_samples)
        self.logger.log(rows[-1][0], mean)
        window.clear()
        return mean

    def train(self) -> TrainResult:
        """Every ``grad_accum`` micro-batches: the schedule's context, then one optimizer step
        on all of them (the objectives see the whole configured batch, batch_size × world ×
        grad_accum: kgvlp/engine/accumulation.py); after it the model's ``after_step``, then
        logs, validation and checkpoints when due. Micro-batches left at an epoch's end join
        the next. Early stopping ends the loop before ``max_steps``."""
        window = LogWindow(pairs_per_step=self.cfg.data.batch_size * self.world * self.cfg.trainer.grad_accum)
        try:   # an aborted run (NaN, interrupt) still closes metrics.jsonl
            with progress_bar(self.cfg.trainer.progress and self.rank == 0) as bar:
                self._run_steps(window, bar)
            self._flush(window)
            if self.last_checkpoint is None or not self.last_checkpoint.name.endswith(f"{self.step:07d}"):
                self.save_checkpoint()
            final = self.export_final()
        finally:
            self.logger.close()
        return TrainResult(run_dir=self.run_dir, steps=self.step, final_weights=final, history=window.history,
                           stopped_early=self.stopping.should_stop)

    def _run_steps(self, window: "LogWindow", bar) -> None:
        accum = self.cfg.trainer.grad_accum
        task = bar.add_task(self.cfg.name, total=self.max_steps, completed=self.step, status="")
        pending: list = []
        while self.step < self.max_steps and not self.stopping.should_stop:
            window.restart_clock()
            for batch in self._loader():
                pending.append(batch)
                self.skipped_samples += batch.skipped
                self.micro_step += 1
                if len(pending) < accum:
                    continue
                ctx = self.schedule.at(self.step)
                fresh = self.schedule.resets_optimizer(self.step)
                if ctx.stage and ctx.stage != window.stage and self.rank == 0:
                    note = ", fresh optimizer state" if fresh else ""
                    bar.console.print(f"stage [bold]{ctx.stage}[/] from step {self.step}{note}")
                window.stage = ctx.stage
                if fresh:
                    self.backend.reset_optimizer()
                self.backend.set_lr(ctx.lr)
                loss, logs = self.backend.train_step(pending, ctx)
                pending = []
                self.model.after_step(ctx)
                self.step += 1
                self._record(window, logs, ctx, bar.console, lambda row: bar.update(
                    task, completed=self.step, status=_status(row)))
                if self.step >= self.max_steps or self.stopping.should_stop:
                    return
            else:
                self.epoch += 1
                self.micro_step = 0

    def _validate(self, ctx, console) -> None:
        """The validation loss after step ``self.step``, logged; the best weights exported to
        ``RUN/best/model.safetensors``; a note when early stopping ends the run."""
        loss = self.validator.loss(self.backend, ctx)
        improved = self.stopping.update(loss, self.step)
        self.logger.log(self.step, {"val_loss": loss, "val_best": self.stopping.best})
        if improved:
            self.export_weights("best")
        if self.stopping.should_stop and self.rank == 0:
            console.print(f"early stopping at step {self.step}: validation loss has not improved on "
                          f"{self.stopping.best:.4f} (step {self.stopping.best_step}) for "
                          f"{self.stopping.waited} validations")

    def _record(self, window: "LogWindow", logs: dict, ctx, console, show) -> None:
        """After optimizer step ``self.step``: keep its logs; flush and show every
        ``log_every`` steps (and at the last); validate when due; checkpoint every
        ``checkpoint_every``."""
        cfg = self.cfg.trainer
        window.add(self.step, logs, ctx.lr)
        if self.step % cfg.log_every == 0 or self.step == self.max_steps:
            window.lap()
            row = self._flush(window)
            window.history.append({"step": self.step, **row})
            show(row)
        if self.validator is not None and self.step % self.validator.every(self.schedule.steps_per_epoch) == 0:
            window.lap()
            self._validate(ctx, console)
            window.restart_clock()
        if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
            window.lap()
            self._flush(window)
            self.save_checkpoint()
            window.restart_clock()

    def export_final(self) -> Path:
        """``RUN/final/model.safetensors``: the full model in float32, for eval and export."""
        return self.export_weights("final")

    def export_weights(self, name: str) -> Path:
        """``RUN/<name>/model.safetensors`` (final, best), written atomically by rank 0."""
        state = self.backend.full_state_dict()
        path = self.run_dir / name / "model.safetensors"
        if self.rank == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp),
                      metadata={"step": str(self.step), "format": "kgvlp-vlpmodel"})
            tmp.replace(path)
        self.backend.barrier()
        return path


@dataclass
class LogWindow:
    """The optimizer steps since the last flush: their logs (kept on the device until the
    flush), the pairs trained and the seconds spent on them; and every flushed row."""
    pairs_per_step: int
    rows: list[tuple[int, dict]] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    pairs: int = 0
    elapsed: float = 0.0
    lr: float = 0.0
    stage: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def add(self, step: int, logs: dict, lr: float) -> None:
        self.rows.append((step, logs))
        self.pairs += self.pairs_per_step
        self.lr = lr

    def restart_clock(self) -> None:
        self.started = time.perf_counter()

    def lap(self) -> None:
        """Count the time since the clock (re)started, and restart it."""
        now = time.perf_counter()
        self.elapsed += now - self.started
        self.started = now

    def clear(self) -> None:
        self.rows.clear()
        self.pairs, self.elapsed = 0, 0.0


def _status(row: dict[str, float]) -> str:
    terms = " ".join(f"{k.removeprefix('loss/')}={v:.3f}" for k, v in row.items()
                     if k.startswith("loss/") and k != "loss/total")
    return f"loss={row.get('loss/total', float('nan')):.3f} {terms} {row.get('pairs_per_s', 0):.1f} pairs/s"
