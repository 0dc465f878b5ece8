"""Training gives the same bytes with any number of DataLoader workers (data.num_workers is no
DVC param of the training stages): each sample's random augmentation has its own seed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from test_training import Blobs, config, new_model

from qsenn_core import training
from qsenn_core.training import fit


class NoisyBlobs(Blobs):
    """Blobs with a random flip and random noise drawn from torch's RNG, like a train transform."""

    def __getitem__(self, i: int):
        image, label, position = super().__getitem__(i)
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image + 0.3 * torch.randn_like(image), label, position


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_worker_count_does_not_change_the_trained_model(tmp_path: Path) -> None:
    for run, workers in (("main", 0), ("two", 2)):
        fit(new_model(), NoisyBlobs(12), Blobs(6), config(epochs=2, num_workers=workers),
            device=torch.device("cpu"), model_path=tmp_path / run / "model.pt",
            log_dir=tmp_path / run / "log")
    assert _sha(tmp_path / "main" / "model.pt") == _sha(tmp_path / "two" / "model.pt")


def test_sample_seeds_differ_by_epoch_and_index_and_leave_the_global_rng_alone() -> None:
    seeds = {training.sample_seed(3, e, i) for e in range(3) for i in range(50)}
    assert len(seeds) == 150
    samples = training.SeededSamples(NoisyBlobs(4))
    torch.manual_seed(0)
    before = torch.rand(3)
    torch.manual_seed(0)
    a = samples[(1, 77)][0]
    after = torch.rand(3)
    assert torch.equal(before, after)  # the sample's draws came from its own seed
    assert torch.equal(a, samples[(1, 77)][0]) and not torch.equal(a, samples[(1, 78)][0])


def test_sample_seeding_leaves_the_accelerator_generators_alone(monkeypatch) -> None:
    """Only the CPU generator is seeded per sample: fork_rng(devices=[]) restores only that one,
    so seeding CUDA too would reset the GPU's dropout stream at every sample (num_workers 0)."""
    reseeded: list[str] = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: reseeded.append("cuda"))
    monkeypatch.setattr(torch.cuda, "manual_seed", lambda seed: reseeded.append("cuda"))
    samples = training.SeededSamples(NoisyBlobs(4))
    image = samples[(2, 5)][0]
    assert reseeded == []
    torch.manual_seed(5)  # the same draws as seeding the whole process with the sample's seed
    assert torch.equal(image, NoisyBlobs(4)[2][0])
