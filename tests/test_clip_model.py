"""Tests of the open_clip factory, embeddings, captions and the from-scratch pre-training.

Nothing is downloaded: the paper's ViT-B-32 tags are only looked up in an empty or fake cache.
"""

from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from qsenn_core import clip_model as cm
from qsenn_core.alignment import attribute_prompts
from qsenn_core.errors import DataError, ParamsError, QsennError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, cm.Preprocess, cm.Tokenizer]:
    torch.manual_seed(0)
    return cm.create_clip(cm.TINY_MODEL, "")


def _write_images(folder, colours: list[tuple[int, int, int]], size: int = 64) -> list:
    rng = np.random.default_rng(0)
    paths = []
    for i, colour in enumerate(colours):
        pixels = np.full((size, size, 3), 128, dtype=np.uint8)
        y, x = rng.integers(0, size // 2, size=2)
        pixels[y:y + size // 2, x:x + size // 2] = colour
        path = folder / f"img_{i}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


# ---------------------------------------------------------------------------------- factory


def test_tiny_config_is_registered_and_usable(tiny) -> None:
    model, preprocess, tokenizer = tiny
    assert cm.TINY_MODEL in open_clip.list_models()
    cm.register_tiny_config()  # idempotent
    assert open_clip.list_models().count(cm.TINY_MODEL) == 1
    assert not model.training
    img = preprocess(Image.new("RGB", (100, 80), (200, 10, 10)))
    assert img.shape == (3, 64, 64)
    emb = cm.embed_texts(model, tokenizer, ["This is a photo of a red wing color of a bird."] * 3)
    assert emb.dtype == np.float32 and emb.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_load_from_local_checkpoint_file(tmp_path, tiny) -> None:
    model = tiny[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["logit_scale"] = torch.tensor(1.2345)
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    torch.manual_seed(123)  # a different random init, which the checkpoint must overwrite
    loaded, _, _ = cm.create_clip(cm.TINY_MODEL, str(path))
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, state[key], msg=key)
    # the open_clip convention {"state_dict": ...} with DDP "module." prefixes works too
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, wrapped)
    again, _, _ = cm.create_clip(cm.TINY_MODEL, str(wrapped))
    torch.testing.assert_close(again.logit_scale.detach(), state["logit_scale"])


def test_bad_checkpoint_is_one_clear_line(tmp_path, tiny) -> None:
    state = dict(tiny[0].state_dict())
    state.pop("text_projection")
    path = tmp_path / "broken.pt"
    torch.save(state, path)
    with pytest.raises(QsennError, match="cannot load checkpoint") as info:
        cm.create_clip(cm.TINY_MODEL, str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ParamsError, match="not found"):
        cm.create_clip(cm.TINY_MODEL, str(tmp_path / "missing.pt"))


def test_pretrained_tag_not_on_this_machine(tmp_path) -> None:
    with pytest.raises(QsennError, match="ViT-B-32/openai is not on this machine") as info:
        cm.create_clip("ViT-B-32", "openai", cache_dir=str(tmp_path))
    msg = str(info.value)
    assert "\n" not in msg and str(tmp_path) in msg
    assert "set clip.pretrained to its local path and clip.model to ViT-B-32-quickgelu" in msg
    with pytest.raises(ParamsError, match="neither a local checkpoint file nor a pretrained tag"):
        cm.create_clip("ViT-B-32", "no_such_tag", cache_dir=str(tmp_path))
    with pytest.raises(ParamsError, match="clip.model"):
        cm.create_clip("ViT-Q-99", "")


def test_cached_checkpoint_finds_a_hub_cache_entry(tmp_path) -> None:
    repo = tmp_path / "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    assert cm.cached_checkpoint("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path)) is None
    (snapshot / "open_clip_pytorch_model.bin").write_bytes(b"x")
    found = cm.cached_checkpoint("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path))
    assert found is not None and found.endswith("open_clip_pytorch_model.bin")
    (snapshot / "open_clip_model.safetensors").write_bytes(b"x")
    found = cm.cached_checkpoint("ViT-B-32", "laion2b_s34b_b79k", str(tmp_path))
    assert found is not None and found.endswith("open_clip_model.safetensors")


# ---------------------------------------------------------------------------------- embeddings


def test_embed_images_normalized_and_in_order(tmp_path, tiny) -> None:
    model, preprocess, _ = tiny
    paths = _write_images(tmp_path, [(255, 0, 0), (0, 0, 255), (0, 255, 0), (250, 250, 0)])
    emb = cm.embed_images(model, preprocess, paths, batch_size=3, progress=False)
    assert emb.dtype == np.float32 and emb.shape[0] == 4
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    single = cm.embed_images(model, preprocess, paths[2:3], batch_size=1, progress=False)
    np.testing.assert_allclose(single[0], emb[2], atol=1e-5)
    assert not np.allclose(emb[0], emb[1])
    with pytest.raises(DataError, match="missing.png"):
        cm.embed_images(model, preprocess, [tmp_path / "missing.png"], progress=False)


# ---------------------------------------------------------------------------------- captions

NAMES = ["has_bill_shape::dagger", "has_wing_color::blue", "has_wing_color::red",
         "has_breast_pattern::spotted", "has_size::small_(5_-_9_in)"]


def test_captions_from_attributes() -> None:
    present = np.array([[1, 1, 0, 1, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]] * 20)
    caps = cm.captions_from_attributes(NAMES, present, "bird", np.random.default_rng(0),
                                       max_attributes=3)
    again = cm.captions_from_attributes(NAMES, present, "bird", np.random.default_rng(0),
                                        max_attributes=3)
    assert caps == again and len(caps) == 60
    prompts = {p.text for p in attribute_prompts(NAMES, "bird")}
    phrases = [p.phrase for p in attribute_prompts(NAMES, "bird")]
    counts = set()
    for row, cap in zip(present, caps, strict=True):
        mentioned = [j for j, ph in enumerate(phrases) if f"a {ph}" in cap]
        assert all(row[j] for j in mentioned)  # only present attributes are named
        if not row.any():
            assert cap == "This is a photo of a bird."
            continue
        assert 1 <= len(mentioned) <= 3
        counts.add(len(mentioned))
        if len(mentioned) == 1:
            assert cap in prompts  # single attributes use the prompt template itself
        else:
            assert cap.startswith("This is a photo of a bird with a ") and " and a " in cap
    assert counts == {1, 2, 3}
    variants = cm.caption_variants(NAMES, present[:2], "bird", n_variants=4, seed=1)
    assert len(variants) == 2 and all(len(v) == 4 for v in variants)
    assert variants[1] == ["This is a photo of a red wing color of a bird."] * 4
    with pytest.raises(DataError, match="shape"):
        cm.captions_from_attributes(NAMES, present[:, :4], "bird", np.random.default_rng(0))


# ---------------------------------------------------------------------------------- pretraining


MICRO = "QSENN-Test-Micro"
MICRO_CONFIG = """{"embed_dim": 32,
 "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
"""


@pytest.fixture(scope="module")
def micro(tmp_path_factory) -> str:
    """A much smaller open_clip config than the tiny default, to keep the training test fast."""
    if MICRO not in open_clip.list_models():
        path = tmp_path_factory.mktemp("clip_cfg") / f"{MICRO}.json"
        path.write_text(MICRO_CONFIG)
        open_clip.add_model_config(path)
    return MICRO


def test_pretrain_learns_and_is_deterministic(tmp_path, micro) -> None:
    colours = {"red": (230, 20, 20), "blue": (20, 40, 230)}
    names = list(colours) * 8
    paths = _write_images(tmp_path, [colours[n] for n in names])
    captions = [[f"a {n} wing color", f"This is a photo of a {n} wing color of a bird."]
                for n in names]
    res = cm.pretrain_clip(paths, captions, model_name=micro, epochs=20, batch_size=8, lr=1e-3,
                           seed=0, progress=False)
    assert len(res.epoch_losses) == 20 and res.seconds_per_epoch > 0
    # from uniform logits (ln 8) towards the floor ln 4 of 4 identical captions per batch
    assert np.mean(res.epoch_losses[-3:]) < res.epoch_losses[0] - 0.4
    model, preprocess, tokenizer = cm.create_clip(micro, "")
    model.load_state_dict(res.state_dict)
    images = cm.embed_images(model, preprocess, paths, progress=False)
    texts = cm.embed_texts(model, tokenizer, ["This is a photo of a red wing color of a bird.",
                                              "This is a photo of a blue wing color of a bird."])
    predicted = (images @ texts.T).argmax(axis=1)
    truth = np.array([0 if n == "red" else 1 for n in names])
    assert (predicted == truth).mean() >= 0.9
    # same seed, same weights
    pixels = cm.load_image_tensors(paths, preprocess, progress=False)
    a = cm.pretrain_clip(pixels, captions, model_name=micro, epochs=1, batch_size=8, seed=3,
                         progress=False)
    b = cm.pretrain_clip(pixels, captions, model_name=micro, epochs=1, batch_size=8, seed=3,
                         progress=False)
    for key in a.state_dict:
        torch.testing.assert_close(a.state_dict[key], b.state_dict[key], rtol=0, atol=0)
    with pytest.raises(DataError, match="captions"):
        cm.pretrain_clip(pixels, captions[:-1], model_name=micro, epochs=1, batch_size=8,
                         progress=False)


def test_training_the_caption_rows_gives_the_bytes_of_the_whole_table(
        tmp_path, micro, monkeypatch: pytest.MonkeyPatch) -> None:
    colours = [(230, 20, 20), (20, 40, 230)] * 8
    paths = _write_images(tmp_path, colours)
    captions = [[f"a {n} wing color", f"a {n} crown of a bird"]
                for n in ("red", "blue") * 8]
    model, preprocess, tokenizer = cm.create_clip(micro, "")
    pixels = cm.load_image_tensors(paths, preprocess, progress=False)
    used = torch.unique(tokenizer([c for pair in captions for c in pair]))

    def train() -> dict[str, torch.Tensor]:
        return cm.pretrain_clip(pixels, captions, model_name=micro, epochs=2, batch_size=8,
                                seed=5, progress=False).state_dict

    rows = train()
    # the reference: every row of the vocabulary trained, as open_clip's own embedding does
    real = cm._CaptionRows
    monkeypatch.setattr(cm, "_CaptionRows", lambda table, _rows: real(
        table, torch.arange(table.num_embeddings)))
    whole = train()
    assert list(rows) == list(whole)
    for key in whole:
        assert torch.equal(rows[key], whole[key]), key
    torch.manual_seed(5)
    init = cm.create_clip(micro, "")[0].token_embedding.weight
    table = rows["token_embedding.weight"]
    assert table.shape == (49408, 32) and len(used) < 20
    unused = torch.ones(len(table), dtype=torch.bool)
    unused[used] = False
    assert torch.equal(table[unused], init[unused])  # never trained rows keep their init
    assert not torch.equal(table[used], init[used])
