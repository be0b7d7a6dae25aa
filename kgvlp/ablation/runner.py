"""One run of a grid, train → eval, wherever it executes (a local subprocess, a SLURM task,
a Ray task). Everything it needs is in its own folder, so a requeued or retried call with
the same two arguments finds its checkpoint and resumes:

    run_one(GRID_DIR, RUN_ID)
        RUN/run.json      base experiment, overrides, eval spec, checkpoint policy
        RUN/checkpoints/latest present → resume from it; RUN/final + train_done → skip training
        RUN/results.json with this eval spec → skip evaluation
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from kgvlp.ablation.grid import CheckpointPolicy
from kgvlp.ablation.state import Heartbeat, read_json, read_status, run_dir, update_status, write_json

COUNT_METRICS = frozenset({"classes_scored", "mentions", "train_size", "epochs", "best_epoch"})


def runner_overrides(name: str) -> list[str]:
    """What every grid run sets on top of its own overrides (none of it is in the run id)."""
    return [f"name={name}", "trainer.progress=false", "trainer.keep_checkpoints=0", "eval.at_end=false"]


def eval_hash(eval_spec: dict) -> str:
    return hashlib.sha256(json.dumps(eval_spec, sort_keys=True).encode()).hexdigest()[:12]


# -- checkpoints: last + best -------------------------------------------------------------
def prune_checkpoints(directory: Path, policy: CheckpointPolicy, scores: dict[str, float]) -> list[str]:
    """Keep ``latest``, the newest ``keep_last`` and the ``keep_best`` best-scored step_*
    folders; delete the rest. Returns the kept tags."""
    import shutil
    tags = sorted(p.name for p in directory.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp"))
    latest = (directory / "latest").read_text().strip() if (directory / "latest").is_file() else None
    keep = set(tags[-policy.keep_last:]) if policy.keep_last > 0 else set()
    scored = [t for t in tags if t in scores]
    sign = 1.0 if policy.mode == "min" else -1.0
    keep |= set(sorted(scored, key=lambda t: (sign * scores[t], t))[:max(policy.keep_best, 0)])
    if latest:
        keep.add(latest)
    for tag in tags:
        if tag not in keep:
            shutil.rmtree(directory / tag, ignore_errors=True)
    return sorted(keep)


def _pruning_trainer(policy: CheckpointPolicy):
    from kgvlp.ablation.state import last_metrics
    from kgvlp.engine.trainer import Trainer

    class PruningTrainer(Trainer):
        """The engine's Trainer; after each checkpoint only last + best are kept."""

        def save_checkpoint(self):
            path = super().save_checkpoint()
            if self.rank == 0:
                directory = self.run_dir / "checkpoints"
                scores_path = directory / "scores.json"
                scores = read_json(scores_path)
                row = last_metrics(self.run_dir)
                if row.get("step") == self.step and policy.best_metric in row:
                    scores[path.name] = float(row[policy.best_metric])
                kept = prune_checkpoints(directory, policy, scores)
                write_json(scores_path, {t: v for t, v in scores.items() if t in kept})
            return path

    return PruningTrainer


# -- train and eval -----------------------------------------------------------------------
def _train(folder: Path, spec: dict, rank0: bool) -> dict:
    from kgvlp.config import load_experiment
    experiment = load_experiment(spec["base"], spec["overrides"] + runner_overrides(spec["name"]))
    resume = folder if (folder / "checkpoints" / "latest").is_file() else None
    trainer = _pruning_trainer(CheckpointPolicy(**spec["checkpoints"]))(experiment, run_dir=folder, resume=resume)
    if rank0:
        where = f"resuming from {trainer.last_checkpoint.name}" if resume else "starting"
        print(f"[kgvlp ablate] run {folder.name}: {where} at step {trainer.step}/{trainer.max_steps}", flush=True)
        update_status(folder, step=trainer.step, max_steps=trainer.max_steps,
                      resumed_from=trainer.step if resume else None)
    started = time.time()
    result = trainer.train()
    history = result.history
    return {"steps": result.steps, "train_s": time.time() - started,
            "final": history[-1] if history else {}}


def flatten_results(results) -> tuple[dict[str, float], dict[str, str]]:
    """TaskResults → {"task/metric[@fraction%][ (model)]": mean over eval seeds}, {task: skip reason}."""
    metrics: dict[str, list[float]] = {}
    skipped = {}
    for result in results:
        if result.skipped:
            skipped[result.task] = result.skipped
            continue
        for row in result.rows:
            suffix = f"@{row['fraction'] * 100:g}%" if row.get("fraction") is not None else ""
            model = "" if row.get("model", "trained") == "trained" else f" ({row['model']})"
            for key, value in row.items():
                if key in ("model", "fraction", "seed") or key in COUNT_METRICS:
                    continue
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    metrics.setdefault(f"{result.task}/{key}{suffix}{model}", []).append(float(value))
    return {k: sum(v) / len(v) for k, v in metrics.items()}, skipped


def _evaluate(folder: Path, spec: dict) -> dict:
    from kgvlp.eval import ProbeConfig, evaluate
    ev = spec["eval"]
    data_kwargs = {key: ev[key] for key in ("synth_n", "synth_seed") if ev.get(key) is not None}
    if ev.get("synth") is not None:   # the downstream set's knobs: the run's data.synth, then these
        from kgvlp.config import load_experiment
        run_knobs = asdict(load_experiment(spec["base"], spec["overrides"]).config.data.synth)
        data_kwargs["synth"] = {**run_knobs, **ev["synth"]}
    results = evaluate(folder, ev["data"], tasks=ev["tasks"], suite=ev["suite"], out_dir=folder / "eval",
                       fractions=ev["fractions"], seeds=ev["seeds"], baselines=ev["baselines"],
                       progress=False, probe=ProbeConfig(max_epochs=ev["max_epochs"]),
                       data_kwargs=data_kwargs)
    return dict(zip(("metrics", "skipped"), flatten_results(results)))


def _train_metrics(folder: Path) -> dict[str, float]:
    from kgvlp.ablation.state import last_metrics
    row = last_metrics(folder)
    # losses and the objectives' own metrics (e.g. metric/itm/acc) of the last logged window
    return {f"train/{k}": float(v) for k, v in row.items()
            if k.startswith(("loss/", "metric/")) and isinstance(v, (int, float))}


# -- the call every executor makes ----------------------------------------------------------
def run_one(grid_dir: str | Path, run_id: str, executor: str = "local") -> str:
    """Train (or resume) and evaluate one run; returns its final state (done | failed).
    A training or evaluation error marks the run failed with the error and never raises;
    an interruption (signal, Ctrl-C, requeue) leaves it resumable."""
    folder = run_dir(Path(grid_dir), run_id)
    spec = read_json(folder / "run.json")
    if not spec:
        raise FileNotFoundError(f"{folder}/run.json is missing: launch the grid with `kgvlp ablate` first")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    status = read_status(folder)
    if rank0:
        status = update_status(
            folder, state="running", attempt=int(status.get("attempt", 0)) + 1, host=socket.gethostname(),
            pid=os.getpid(), executor=executor, started=time.time(), error=None, finished=None,
            slurm_job=_slurm_job_id(), stage="train")
    try:
        with Heartbeat(folder) if rank0 else nullcontext():
            if not status.get("train_done"):
                summary = _train(folder, spec, rank0)
                if rank0:
                    status = update_status(folder, train_done=True, step=summary["steps"],
                                           train_s=summary["train_s"] + float(status.get("train_s") or 0))
            if not rank0:
                return "done"
            wanted = eval_hash(spec["eval"])
            results = read_json(folder / "results.json")
            if spec["eval"]["enabled"] and results.get("eval_hash") != wanted:
                update_status(folder, stage="eval")
                print(f"[kgvlp ablate] run {run_id}: evaluating", flush=True)
                started = time.time()
                results = {**_evaluate(folder, spec), "eval_hash": wanted, "eval_s": time.time() - started}
            results.setdefault("metrics", {})
            results["train"] = _train_metrics(folder)
            write_json(folder / "results.json", results)
        update_status(folder, state="done", finished=time.time(), stage=None)
        print(f"[kgvlp ablate] run {run_id}: done", flush=True)
        return "done"
    except (KeyboardInterrupt, SystemExit):
        # Requeued by SLURM (SlurmRun.checkpoint set 'queued'): leave it queued.
        if rank0 and read_status(folder).get("state") != "queued":
            update_status(folder, state="interrupted", finished=time.time())
        raise
    except Exception as err:  # noqa: BLE001 — a failed run must never stop the others
        traceback.print_exc()
        sys.stdout.flush()
        if rank0:
            stage = read_status(folder).get("stage") or "train"
            update_status(folder, state="failed", finished=time.time(),
                          error=f"{stage}: {type(err).__name__}: {err}".splitlines()[0][:500])
        return "failed"
    finally:
        _leave_process_group()


def _slurm_job_id() -> str | None:
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def _leave_process_group() -> None:
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
