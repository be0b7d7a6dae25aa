"""Learning smoke test: a tiny ITA run through the real trainer must learn to retrieve.

16 image–report pairs, each image a bright square at one of 16 places on a 4×4 grid (plus
noise), each report naming its place in words ("opacity in the upper right zone"). The
trainer (DeepSpeed backend, schedule, ObjectiveSet, the model's encode path) trains ITA
for 25 steps on the whole set as one batch; then image→report retrieval on that batch must
be right for ≥ 8 of 16 images, 8× chance (1/16). Measured on a 2-core CPU: 16/16 after
training (3 runs, identical), 1/16 before it.

Why it can fail: anything that stops gradients reaching the encoders or the heads
(a detached feature, a zero loss weight, an optimizer that skips parameters, a schedule
stuck at lr 0, accumulation that never steps), a loss that no longer pairs image i with
report i, or a broken shared projection. It is seeded (trainer seed 0, fixed images), so a
failure is a behaviour change, not luck; the threshold sits far below the measured 16/16
so that thread-count rounding cannot flip it.
"""
from pathlib import Path

import torch

from kgvlp.config import load_experiment
from kgvlp.data.collate import Sample
from kgvlp.data.text import split_sentences
from kgvlp.eval.features import text_embeddings

ROWS = ["apical", "upper", "middle", "lower"]
COLUMNS = ["far right", "right", "left", "far left"]
SIZE, CELL = 32, 8
PAIRS = 16
THRESHOLD = 8          # of 16 correct top-1 retrievals; chance is 1


def report(index: int) -> list[str]:
    row, column = divmod(index, 4)
    return split_sentences(f"There is an opacity in the {ROWS[row]} {COLUMNS[column]} zone. Heart size is normal.")


def image(index: int) -> torch.Tensor:
    row, column = divmod(index, 4)
    picture = 0.2 * torch.randn(1, SIZE, SIZE, generator=torch.Generator().manual_seed(index))
    picture[:, row * CELL:(row + 1) * CELL, column * CELL:(column + 1) * CELL] += 2.0
    return picture


class PlacedSquares(torch.utils.data.Dataset):
    def __len__(self):
        return PAIRS

    def __getitem__(self, index):
        return Sample(image=image(index), sentences=report(index), index=index)


SMOKE = ["model.image.name=vit_test", f"model.image.image_size={SIZE}", "model.text.max_length=24",
         "model.text.num_layers=1", "model.text.dropout=0.0", "model.text.frozen_layers=-1",
         "model.text.global_pool=mean", "objectives.ita.weight=1",
         f"data.batch_size={PAIRS}", "data.num_workers=0", "data.augment.random_crop=false",
         "trainer.max_steps=25", "trainer.lr=1e-3", "trainer.warmup_ratio=0.1", "trainer.weight_decay=0",
         "trainer.log_every=10", "trainer.progress=false", "trainer.device=cpu", "seed=0"]


@torch.no_grad()
def correct_retrievals(model) -> int:
    model.eval()
    images = torch.stack([image(i) for i in range(PAIRS)])
    image_embed = model.projections.image(model.image_encoder(images).global_vector)
    text_embed = text_embeddings(model, [report(i) for i in range(PAIRS)], torch.device("cpu"), progress=False)
    similarity = torch.nn.functional.normalize(image_embed, dim=-1) @ torch.nn.functional.normalize(text_embed, dim=-1).T
    return int((similarity.argmax(dim=1) == torch.arange(PAIRS)).sum())


def test_ita_learns_to_retrieve_its_training_batch(tmp_path: Path):
    from kgvlp.engine.trainer import Trainer
    trainer = Trainer(load_experiment(None, SMOKE), run_dir=tmp_path / "run", dataset=PlacedSquares())
    before = correct_retrievals(trainer.model)
    trainer.model.train()

    trainer.train()
    after = correct_retrievals(trainer.model)

    assert before < THRESHOLD, f"untrained model already retrieves {before}/16: the test no longer measures learning"
    assert after >= THRESHOLD, f"after 25 ITA steps only {after}/16 images retrieve their report (chance 1/16)"
