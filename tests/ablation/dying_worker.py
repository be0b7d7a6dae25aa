"""``python dying_worker.py GRID_DIR RUN_ID EXECUTOR``: kgvlp.ablation.worker, except that the
run named by $KGVLP_TEST_KILL_RUN kills itself with SIGKILL right after writing its step-2
checkpoint on its first attempt — a run killed mid-training, like an OOM kill or a lost node."""
import os
import signal
import sys

from kgvlp.ablation.state import read_status, run_dir
from kgvlp.ablation.worker import main
from kgvlp.engine import trainer as trainer_module

if __name__ == "__main__":
    grid_dir, run_id = sys.argv[1], sys.argv[2]
    first_attempt = not read_status(run_dir(grid_dir, run_id)).get("attempt")
    if run_id == os.environ.get("KGVLP_TEST_KILL_RUN") and first_attempt:
        original = trainer_module.Trainer.save_checkpoint

        def save_then_die(self):
            path = original(self)
            if self.step == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return path
        trainer_module.Trainer.save_checkpoint = save_then_die
    sys.exit(main(sys.argv[1:]))
