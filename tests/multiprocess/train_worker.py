"""One process of a data-parallel training run under torchrun (tests/test_parallel.py starts it).

argv: base data output steps until resume(0|1) record-dir. Writes <record-dir>/rank<k>.json with the batch
indices and losses this rank saw and how many model files it saved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)

from anodiff.train.trainer import TrainConfig, Trainer
from anodiff.weights import schema as weights


def main() -> None:
    base, data, output, steps, until, resume, record = sys.argv[1:8]
    saves: list[str] = []
    original = weights.DualFile.save

    def counting_save(self, path, *args, **kwargs):
        saves.append(str(path))
        return original(self, path, *args, **kwargs)

    weights.DualFile.save = counting_save  # this process only: counts who writes the model files
    config = TrainConfig(
        base=base,
        data=data,
        output=output,
        steps=int(steps),
        batch_size=2,
        resolution=32,
        rank=4,
        text_rank=2,
        checkpoint_every=2,
        preview_every=1000,
        progress=False,
        lr=1e-3,
        resume=resume == "1",
    )
    trainer = Trainer(config)
    batches = []
    draw = trainer.session.batch

    def recording_batch(g):
        out = draw(g)
        batches.append(out["index"].tolist() + out["flips"].flatten().tolist())
        return out

    trainer.session.batch = recording_batch
    try:
        trainer.run(until=int(until))
        result = {
            "rank": trainer.rank,
            "world": trainer.accelerator.num_processes,
            "batches": batches,
            "losses": trainer.losses,
            "saves": saves,
        }
    finally:
        trainer.close()
    Path(record).mkdir(parents=True, exist_ok=True)
    (Path(record) / f"rank{result['rank']}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
