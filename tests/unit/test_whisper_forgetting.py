"""Which Whisper parameters train, and the L2-SP anchor against forgetting."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from workers.trainer.whisper.cli import build_parser
from workers.trainer.whisper.forgetting import (
    Anchor,
    LayerChoiceError,
    encoder_trains,
    select_trainable,
    top_blocks,
)
from workers.trainer.whisper.train import FitConfig


@pytest.fixture(scope="module")
def model() -> WhisperForConditionalGeneration:
    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=8,
        d_model=16,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=16,
        max_target_positions=16,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        decoder_start_token_id=2,
    )
    return WhisperForConditionalGeneration(config)


def _trainable(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_top_blocks_reads_the_choice() -> None:
    assert top_blocks("all") is None
    assert top_blocks("decoder") is None
    assert top_blocks("decoder-top-2") == 2
    for bad in ("decoder-top-0", "decoder-top-", "top-2", "encoder", ""):
        with pytest.raises(LayerChoiceError):
            top_blocks(bad)


def test_decoder_top_n_trains_only_the_top_blocks(model: WhisperForConditionalGeneration) -> None:
    select_trainable(model, "decoder-top-2", freeze_embeddings=False)
    names = _trainable(model)
    assert names, "something must train"
    assert all(
        n.startswith(
            ("model.decoder.layers.1.", "model.decoder.layers.2.", "model.decoder.layer_norm.")
        )
        for n in names
    ), names
    assert any(n.startswith("model.decoder.layers.1.") for n in names)
    assert not encoder_trains(model)
    assert not model.model.decoder.embed_tokens.weight.requires_grad


def test_decoder_and_all(model: WhisperForConditionalGeneration) -> None:
    select_trainable(model, "decoder", freeze_embeddings=True)
    assert not encoder_trains(model)
    assert not model.model.decoder.embed_tokens.weight.requires_grad
    assert model.model.decoder.layers[0].fc1.weight.requires_grad
    select_trainable(model, "all", freeze_embeddings=False)
    assert encoder_trains(model)
    assert model.model.decoder.embed_tokens.weight.requires_grad


def test_more_blocks_than_the_decoder_has_is_refused(
    model: WhisperForConditionalGeneration,
) -> None:
    with pytest.raises(LayerChoiceError, match="only 3 blocks"):
        select_trainable(model, "decoder-top-4", freeze_embeddings=False)


def test_freeze_encoder_folds_into_the_layers() -> None:
    assert FitConfig(freeze_encoder=True).layers == "decoder"
    assert FitConfig().layers == "all"
    assert FitConfig(freeze_encoder=True, train_layers="decoder-top-1").layers == "decoder-top-1"


def test_anchor_penalty_is_the_weighted_squared_distance() -> None:
    p = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    q = torch.nn.Parameter(torch.tensor([[3.0]]))
    anchor = Anchor([p, q], weight=0.5)
    penalty = anchor.penalty()
    assert penalty is not None and penalty.item() == 0.0
    with torch.no_grad():
        p.add_(torch.tensor([1.0, -2.0]))
        q.sub_(3.0)
    penalty = anchor.penalty()
    assert penalty is not None
    assert penalty.item() == pytest.approx(0.5 * (1 + 4 + 9))
    assert anchor.distance() == pytest.approx(14**0.5)
    penalty.backward()  # type: ignore[no-untyped-call]
    assert p.grad is not None and p.grad.tolist() == pytest.approx([1.0, -2.0])


def test_anchor_weight_zero_keeps_nothing() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    anchor = Anchor([p], weight=0.0)
    assert anchor.penalty() is None
    assert anchor.distance() == 0.0
    with pytest.raises(ValueError):
        Anchor([p], weight=-1.0)


def test_anchor_holds_a_parameter_between_start_and_task_optimum() -> None:
    """Minimising (p - 1)^2 + w (p - 0)^2 from p = 0 ends at 1 / (1 + w), not at 1."""
    for weight, expected in ((0.0, 1.0), (1.0, 0.5), (3.0, 0.25)):
        p = torch.nn.Parameter(torch.zeros(1))
        anchor = Anchor([p], weight=weight)
        optimizer = torch.optim.SGD([p], lr=0.05)
        for _ in range(500):
            loss = (p - 1.0).pow(2).sum()
            penalty = anchor.penalty()
            optimizer.zero_grad()
            (loss if penalty is None else loss + penalty).backward()  # type: ignore[no-untyped-call]
            optimizer.step()
        assert p.item() == pytest.approx(expected, abs=1e-3)


def test_cli_refuses_bad_choices(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--train-manifest", "t.jsonl", "--base-model", "base", "--out", "o"]
    args = build_parser().parse_args(
        [*base, "--train-layers", "decoder-top-2", "--anchor-weight", "3"]
    )
    assert (args.train_layers, args.anchor_weight) == ("decoder-top-2", 3.0)
    for bad in (["--train-layers", "decoder-top-x"], ["--anchor-weight", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, *bad])
    assert "decoder-top-N" in capsys.readouterr().err
