"""``python no_compiler_train.py RUN_DIR``: a 2-step single-process run and a 2-step run on
two gloo ranks, on the tiny engine model; prints the steps each reached as JSON. The test
runs it with compilers that always fail on PATH."""
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1])]   # tests/: engine.runs, kgvlp_tiny

from engine.runs import run_ranks, train  # noqa: E402

STEPS = ["trainer.max_steps=2", "data.batch_size=4"]

if __name__ == "__main__":
    out = Path(sys.argv[1])
    single = train(str(out / "single"), STEPS)
    ranks = run_ranks(2, out / "ranks", STEPS + ["data.batch_size=2"], "full")
    print(json.dumps({"single": [r["step"] for r in single], "ranks": [r["step"] for r in ranks]}))
