"""Tests of the training loop: schedule, determinism, resume, empty splits, fine-tuning, DDP."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from qsenn_core import distributed as ddp
from qsenn_core import model_file, training
from qsenn_core.errors import DataError, ParamsError
from qsenn_core.params import IterationParams
from qsenn_core.presets import load_preset
from qsenn_core.sparse_layer import SparseLayer, attach_sparse_layer
from qsenn_core.training import FitConfig, fit

# --------------------------------------------------------------------------- tiny stand-ins


@dataclasses.dataclass
class Output:
    logits: Tensor
    feature_maps: Tensor
    features: Tensor


class TinyNet(nn.Module):
    """A few-parameter model with the QSENN interface (trunk, dropout, head, ModelOutput)."""

    def __init__(self, n_classes: int = 3, n_features: int = 6, dropout: float = 0.2) -> None:
        super().__init__()
        self.n_features = n_features
        self.trunk = nn.Sequential(nn.Conv2d(3, n_features, 3, padding=1),
                                   nn.BatchNorm2d(n_features), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(n_features, n_classes)

    def forward(self, x: Tensor) -> Output:
        maps = self.trunk(x)
        features = maps.mean(dim=(2, 3))
        return Output(self.head(self.dropout(features)), maps, features)

    def head_weight(self) -> Tensor:
        return self.head.weight

    def backbone_parameters(self):
        return self.trunk.parameters()

    def head_parameters(self):
        return self.head.parameters()


class Blobs(Dataset):
    """Images whose mean colour channel encodes the class; yields (image, label, position)."""

    def __init__(self, n: int, n_classes: int = 3, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % n_classes
        self.images = torch.randn(n, 3, 6, 6, generator=g) * 0.5
        self.images[torch.arange(n), self.labels] += 1.0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i]), i


def config(**changes) -> FitConfig:
    base = FitConfig(epochs=1, batch_size=4, lr_backbone=0.05, lr_head=0.1, lr_step=0,
                     lr_gamma=1.0, momentum=0.9, weight_decay=5e-4, beta=0.0, seed=3)
    return dataclasses.replace(base, **changes)


def new_model(seed: int = 0) -> TinyNet:
    training.seed_everything(seed)
    return TinyNet()


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_sha(directory: Path) -> str:
    """One hash over the relative paths and bytes of every file under ``directory``."""
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- schedule and config


def test_paper_schedule_and_finetune_lr() -> None:
    dense = config(epochs=150, lr_head=0.01, lr_backbone=5e-3, lr_step=30, lr_gamma=0.4)
    assert training.lr_at(0.01, dense, 29) == pytest.approx(0.01)
    assert training.lr_at(0.01, dense, 30) == pytest.approx(0.004)
    assert training.lr_at(0.01, dense, 149) == pytest.approx(0.01 * 0.4**4)
    assert training.final_lr(dense) == pytest.approx(0.01 * 0.4**5)
    assert training.lr_at(0.3, config(lr_step=0), 1000) == 0.3

    its = {str(i): IterationParams(prev="dense" if i == 1 else f"iter_{i - 1}", epochs=e,
                                   lr_step=s, lr_gamma=0.4)
           for i, e, s in ((1, 10, 0), (2, 10, 0), (3, 10, 0), (4, 40, 10))}
    repo = Path(__file__).resolve().parents[1]
    paper = load_preset(repo / "params" / "paper-cub-resnet50.yaml", repo / "params.yaml")
    params = dataclasses.replace(paper, iterations=its, final="iter_4")
    final = 0.01 * 0.4**5
    for i in range(1, 5):
        assert training.finetune_lr(params, str(i)) == pytest.approx(100 * final * 0.9 ** (i - 1))
    last = training.finetune_config(params, "4")
    assert (last.epochs, last.lr_step, last.lr_gamma, last.momentum) == (40, 10, 0.4, 0.95)
    assert last.lr_backbone == last.lr_head
    with pytest.raises(ParamsError, match="no iteration '9'"):
        training.finetune_lr(params, "9")
    with pytest.raises(ParamsError, match="batch_size"):
        config(batch_size=0)


def test_epoch_sampler_depends_only_on_seed_and_epoch() -> None:
    a, b = training.EpochShuffleSampler(20, seed=1), training.EpochShuffleSampler(20, seed=1)
    a.set_epoch(2)
    list(b)  # consuming another epoch first changes nothing
    b.set_epoch(2)
    assert list(a) == list(b) and sorted(a) == list(range(20))
    b.set_epoch(3)
    assert list(a) != list(b)


# --------------------------------------------------------------------------- fit


def test_fit_learns_and_logs_history(tmp_path: Path) -> None:
    model = new_model()
    result = fit(model, Blobs(24), Blobs(12, seed=1), config(epochs=4, lr_step=2, lr_gamma=0.5),
                 device=torch.device("cpu"), model_path=tmp_path / "m.pt",
                 log_dir=tmp_path / "log")
    h = result.history
    assert [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert [r["lr"] for r in h] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["test_accuracy"] > 50.0
    assert result.final_lrs == pytest.approx({"backbone": 0.0125, "head": 0.025})
    # the DVCLive log: one curve per reading, step = epoch; metrics.json = last epoch + epochs
    curves = tmp_path / "log" / "plots" / "metrics"
    assert sorted(p.name for p in curves.iterdir()) == [
        "lr.tsv", "test_accuracy.tsv", "train_accuracy.tsv", "train_ce.tsv", "train_fdl.tsv",
        "train_loss.tsv"]
    rows = (curves / "test_accuracy.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "test_accuracy"]
    assert [r.split("\t") for r in rows[1:]] == [
        [str(r["epoch"]), repr(r["test_accuracy"])] for r in h]
    summary = json.loads((tmp_path / "log" / "metrics.json").read_text())
    assert summary == {**{k: v for k, v in h[-1].items() if k != "epoch"}, "step": 4,
                       "epochs": 4}
    assert sorted(p.name for p in (tmp_path / "log").iterdir()) == ["metrics.json", "plots"]
    state = torch.load(tmp_path / "m.pt", weights_only=True)
    torch.testing.assert_close(state["head.weight"], model.head.weight.detach())


def test_same_seed_gives_identical_bytes(tmp_path: Path) -> None:
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        fit(new_model(), Blobs(10), Blobs(6), config(seed=seed), device=torch.device("cpu"),
            model_path=tmp_path / run / "model.pt", log_dir=tmp_path / run / "log")
    assert sha(tmp_path / "a" / "model.pt") == sha(tmp_path / "b" / "model.pt")
    assert tree_sha(tmp_path / "a" / "log") == tree_sha(tmp_path / "b" / "log")
    assert tree_sha(tmp_path / "a" / "log") != tree_sha(tmp_path / "c" / "log")
    assert sha(tmp_path / "a" / "model.pt") != sha(tmp_path / "c" / "model.pt")


def test_killed_run_resumes_and_matches_uninterrupted(tmp_path: Path) -> None:
    cfg = config(epochs=3, lr_step=1, lr_gamma=0.5)
    fit(new_model(), Blobs(12), Blobs(6), cfg, device=torch.device("cpu"),
        model_path=tmp_path / "full" / "model.pt", log_dir=tmp_path / "full" / "log")

    scratch = training.scratch_dir("train_dense", cfg, root=tmp_path / "scratch")

    def kill_after_first(epoch: int, record: dict) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), Blobs(12), Blobs(6), cfg, device=torch.device("cpu"),
            model_path=tmp_path / "resumed" / "model.pt",
            log_dir=tmp_path / "resumed" / "log",
            resume_dir=scratch, on_epoch_end=kill_after_first)
    assert (scratch / training.RESUME_FILE).is_file()
    assert not (tmp_path / "resumed" / "model.pt").exists()
    # the live log shows the finished epoch (dvc exp show reads it during a run)
    live = json.loads((tmp_path / "resumed" / "log" / "metrics.json").read_text())
    assert live["step"] == 1 and "epochs" not in live

    seen: list[int] = []
    # a freshly initialised model with another seed: everything must come from the checkpoint
    fit(new_model(seed=99), Blobs(12), Blobs(6), cfg, device=torch.device("cpu"),
        model_path=tmp_path / "resumed" / "model.pt", log_dir=tmp_path / "resumed" / "log",
        resume_dir=scratch, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [2, 3]
    # torch.save names the zip records after the file, so compare files of the same name
    assert sha(tmp_path / "resumed" / "model.pt") == sha(tmp_path / "full" / "model.pt")
    assert tree_sha(tmp_path / "resumed" / "log") == tree_sha(tmp_path / "full" / "log")
    assert not scratch.exists()


def test_checkpoint_of_other_config_is_ignored(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch"

    def stop(epoch: int, record: dict) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(new_model(), Blobs(8), Blobs(4), config(epochs=2), device=torch.device("cpu"),
            resume_dir=scratch, on_epoch_end=stop)
    seen: list[int] = []
    fit(new_model(), Blobs(8), Blobs(4), config(epochs=2, lr_head=0.2),
        device=torch.device("cpu"), resume_dir=scratch, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1, 2]


@pytest.mark.parametrize("empty", ["train", "test"])
def test_empty_split_is_one_line_error_and_writes_nothing(tmp_path: Path, empty: str) -> None:
    train, test = (Blobs(0), Blobs(4)) if empty == "train" else (Blobs(4), Blobs(0))
    with pytest.raises(DataError, match=f"{empty} split is empty") as err:
        fit(new_model(), train, test, config(), device=torch.device("cpu"),
            model_path=tmp_path / "m.pt", log_dir=tmp_path / "log",
            resume_dir=tmp_path / "scratch")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_scratch_dir_is_keyed_by_inputs_and_git_ignored(tmp_path: Path) -> None:
    data = tmp_path / "in.bin"
    data.write_bytes(b"one")
    root = tmp_path / "scratch"
    first = training.scratch_dir("train_dense", data, {"lr": 0.1}, root=root)
    assert first == training.scratch_dir("train_dense", data, {"lr": 0.1}, root=root)
    assert first.parent == root / "train_dense"
    assert first != training.scratch_dir("train_dense", data, {"lr": 0.2}, root=root)
    assert first != training.scratch_dir("finetune", data, {"lr": 0.1}, root=root)
    data.write_bytes(b"two")
    assert first != training.scratch_dir("train_dense", data, {"lr": 0.1}, root=root)
    assert (root / ".gitignore").read_text().strip() == "*"


def test_load_model_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="model file not found"):
        model_file.load_model(TinyNet(), tmp_path / "none.pt")
    torch.save({"head.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(DataError, match="cannot load") as err:
        model_file.load_model(TinyNet(), tmp_path / "bad.pt")
    assert "\n" not in str(err.value)
    model_file.save_model(model := new_model(), tmp_path / "ok.pt")
    other = model_file.load_model(TinyNet(), tmp_path / "ok.pt")
    torch.testing.assert_close(other.state_dict(), model.state_dict())


# --------------------------------------------------------------------------- sparse fine-tuning


@pytest.mark.parametrize("train_std", [True, False])
def test_finetune_keeps_sparse_layer_frozen(monkeypatch, train_std: bool) -> None:
    model = new_model()
    selection = torch.tensor([4, 0])
    layer = SparseLayer(selection, torch.tensor([[0.5, 0.0], [0.0, -0.5], [0.5, 0.5]]),
                        torch.zeros(3), torch.full((2,), 0.3), torch.full((2,), 0.5),
                        alpha=0.5, train_standardization=train_std)
    attach_sparse_layer(model, layer, dropout=0.1)
    frozen = {k: v.clone() for k, v in layer.state_dict().items()}
    trunk_before = [p.detach().clone() for p in model.trunk.parameters()]
    calls = []

    def fake_fdl(maps: Tensor, weight: Tensor, predicted: Tensor) -> Tensor:
        calls.append((maps.shape, weight.clone(), predicted.shape))
        return (maps.mean(dim=(2, 3)) @ weight.T).mean() * 0.0 + maps.mean()

    monkeypatch.setattr(training, "_diversity_loss", fake_fdl)
    fit(model, Blobs(8), Blobs(4), config(beta=0.5), device=torch.device("cpu"))

    assert model.dropout.p == 0.1
    for key in ("selection", "weight", "bias"):
        torch.testing.assert_close(layer.state_dict()[key], frozen[key])
    moved = not torch.equal(layer.mean.detach(), frozen["mean"])
    assert moved == train_std
    assert any(not torch.equal(a, b.detach()) for a, b in zip(trunk_before,
                                                                model.trunk.parameters(),
                                                                strict=True))
    # L_div saw the selected feature maps (2 of 6) and W^Q
    assert calls and calls[0][0][1] == 2
    torch.testing.assert_close(calls[0][1], frozen["weight"])


def test_dense_fdl_uses_all_maps_and_head_weight(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(training, "_diversity_loss",
                        lambda m, w, p: seen.append((m.shape[1], w.shape)) or m.mean())
    history = fit(new_model(), Blobs(8), Blobs(4), config(beta=1.0),
                  device=torch.device("cpu")).history
    assert seen[0] == (6, torch.Size([3, 6]))
    r = history[0]
    assert r["train_loss"] == pytest.approx(r["train_ce"] + 1.0 * r["train_fdl"])


def test_real_model_dense_then_sparse_finetune_with_fdl(tmp_path: Path) -> None:
    """build_model + the real L_div: dense training, then fine-tuning on an attached W^Q."""
    from qsenn_core.backbones import build_model

    class Pictures(Blobs):
        def __init__(self, n: int, seed: int = 0) -> None:
            super().__init__(n, seed=seed)
            self.images = self.images.repeat_interleave(6, dim=2).repeat_interleave(6, dim=3)

    training.seed_everything(0)
    model = build_model("small_cnn", 3, width=8, dropout=0.2)
    dense = fit(model, Pictures(8), Pictures(4, seed=1), config(beta=0.5),
                device=torch.device("cpu")).history[0]
    assert dense["train_fdl"] < 0  # L_div = -diversity
    assert dense["train_loss"] == pytest.approx(dense["train_ce"] + 0.5 * dense["train_fdl"])

    layer = SparseLayer(torch.tensor([1, 6, 3]), torch.eye(3) * 0.4, torch.zeros(3),
                        torch.zeros(3), torch.ones(3), alpha=0.4, train_standardization=True)
    attach_sparse_layer(model, layer, dropout=0.1)
    fit(model, Pictures(8), Pictures(4, seed=1), config(beta=0.5, lr_head=1e-3, lr_backbone=1e-3),
        device=torch.device("cpu"), model_path=tmp_path / "ft.pt")
    torch.testing.assert_close(model.head.weight, torch.eye(3) * 0.4)
    state = torch.load(tmp_path / "ft.pt", weights_only=True)
    assert torch.equal(state["head.selection"], torch.tensor([1, 6, 3]))
    assert not torch.equal(state["head.std"], torch.ones(3))
    # a fresh dense model loads the fine-tuned file, sparse layer included
    fresh = model_file.load_model(build_model("small_cnn", 3, width=8), tmp_path / "ft.pt")
    assert isinstance(fresh.head, SparseLayer) and fresh.head.alpha == pytest.approx(0.4)
    x = Pictures(2).images
    model.eval()
    fresh.eval()
    torch.testing.assert_close(fresh(x).logits, model(x).logits)


# --------------------------------------------------------------------------- DDP (gloo, 2 ranks)


DDP_SCRIPT = """
import sys
from pathlib import Path

import torch

sys.path.insert(0, sys.argv[1])
from test_training import Blobs, TinyNet, config  # noqa: E402

from qsenn_core import distributed as ddp  # noqa: E402
from qsenn_core import model_file, training  # noqa: E402

torch.set_num_threads(1)
out = Path(sys.argv[2])
rank = int(__import__("os").environ["RANK"])
training.seed_everything(rank)  # different inits: DDP must start every rank from rank 0's
model = TinyNet()
result = training.fit(model, Blobs(14), Blobs(7), config(epochs=1), device=torch.device("cpu"),
                      model_path=out / f"model{rank}.pt", log_dir=out / f"log{rank}",
                      resume_dir=out / "scratch")
torch.save({"world": ddp.world_size(), "state": model_file.model_state(model),
            "acc": result.history[0]["test_accuracy"]}, out / f"probe{rank}.pt")
ddp.cleanup_distributed()
"""


def test_ddp_two_gloo_processes_under_torchrun(tmp_path: Path, monkeypatch) -> None:
    assert ddp.maybe_relaunch(1, ["x.py"]) is None
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "r")
    assert ddp.maybe_relaunch(2, ["x.py"]) is None  # already under torchrun: no nesting
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.delenv("TORCHELASTIC_RUN_ID")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    script = tmp_path / "child.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()

    assert ddp.maybe_relaunch(2, [str(script), str(Path(__file__).parent), str(out)]) == 0

    # only rank 0 wrote outputs; the scratch folder is gone
    assert sorted(p.name for p in out.iterdir()) == [
        "log0", "model0.pt", "probe0.pt", "probe1.pt"]
    probes = [torch.load(out / f"probe{r}.pt", weights_only=True) for r in (0, 1)]
    assert probes[0]["world"] == probes[1]["world"] == 2
    # after training every rank holds the same parameters and buffers, and rank 0 saved them
    torch.testing.assert_close(probes[0]["state"], probes[1]["state"], rtol=0, atol=0)
    assert probes[0]["acc"] == probes[1]["acc"]
    saved = torch.load(out / "model0.pt", weights_only=True)
    torch.testing.assert_close(saved, probes[0]["state"], rtol=0, atol=0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
