"""A CTranslate2 Whisper directory as a trainable ``WhisperForConditionalGeneration``.

CTranslate2 stores the attention projections fused (``self_attention/linear_0``
is q, k and v stacked; ``attention/linear_1`` is the cross-attention's k and v)
with a zero bias where Whisper's key projection has none, layer norms as
``gamma``/``beta``, and the output projection as an alias of the token
embeddings. ``ctranslate2.converters.TransformersConverter`` does the reverse
of this mapping, so a directory read here and converted back holds the same
variables (float16 widened to float32 and narrowed again is exact).

The model's shape comes from the variables (layers, heads, widths, mel bins,
vocabulary); the special token ids from ``tokenizer.json``; suppressed tokens,
language ids and alignment heads from CTranslate2's ``config.json``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

from pipeline.errors import Ai2TextError
from workers.trainer.whisper.ct2 import Ct2Model, read_model
from workers.trainer.whisper.tokens import WhisperTokens

WHISPER_SPEC = "WhisperSpec"
_MULTILINGUAL_VOCABULARY = 51865
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")


class MappingError(Ai2TextError):
    """A CTranslate2 model that is not a Whisper model this mapping knows."""


@dataclass(frozen=True, slots=True)
class Trainable:
    model: WhisperForConditionalGeneration
    tokens: WhisperTokens
    ct2_config: dict[str, Any]
    """The base's CTranslate2 ``config.json`` (kept for the export)."""
    source: Path


def load_trainable(model_dir: Path) -> Trainable:
    """Read ``model_dir`` (``model.bin``, ``config.json``, ``tokenizer.json``) into torch."""
    ct2 = read_model(model_dir)
    if ct2.spec != WHISPER_SPEC:
        raise MappingError(f"{model_dir} holds a {ct2.spec}, not a Whisper model")
    try:
        ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MappingError(f"cannot read {model_dir / 'config.json'}: {exc}") from exc
    vocab_size = int(ct2.get("decoder/embeddings/weight").shape[0])
    multilingual = vocab_size >= _MULTILINGUAL_VOCABULARY
    tokens = WhisperTokens.from_model_dir(
        model_dir, lang_ids=list(ct2_config.get("lang_ids") or ()), multilingual=multilingual
    )
    config = whisper_config(ct2, ct2_config, tokens)
    model = WhisperForConditionalGeneration(config)
    state = hf_state_dict(ct2, config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # proj_out is tied to the token embeddings; nothing else may be left out.
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise MappingError(
            f"{model_dir}: weights do not fit the Whisper model built from its shapes"
            f" (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.tie_weights()
    model.generation_config = generation_config(config, ct2_config, tokens)
    return Trainable(model=model, tokens=tokens, ct2_config=ct2_config, source=model_dir)


def whisper_config(
    ct2: Ct2Model, ct2_config: dict[str, Any], tokens: WhisperTokens
) -> WhisperConfig:
    """The transformers config whose shapes are those of ``ct2``'s variables."""
    layers = {"encoder": set(), "decoder": set()}  # type: dict[str, set[int]]
    for name in ct2.variables:
        match = _LAYER.match(name)
        if match:
            layers[match.group(1)].add(int(match.group(2)))
    embeddings = ct2.get("decoder/embeddings/weight")
    return WhisperConfig(
        vocab_size=int(embeddings.shape[0]),
        d_model=int(embeddings.shape[1]),
        num_mel_bins=int(ct2.get("encoder/conv1/weight").shape[1]),
        encoder_layers=len(layers["encoder"]),
        decoder_layers=len(layers["decoder"]),
        encoder_attention_heads=int(ct2.get("encoder/num_heads")),
        decoder_attention_heads=int(ct2.get("decoder/num_heads")),
        encoder_ffn_dim=int(ct2.get("encoder/layer_0/ffn/linear_0/weight").shape[0]),
        decoder_ffn_dim=int(ct2.get("decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(ct2.get("encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(ct2.get("decoder/position_encodings/encodings").shape[0]),
        pad_token_id=tokens.eot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        scale_embedding=False,
        activation_function="gelu",
        tie_word_embeddings=True,
    )


def generation_config(
    config: WhisperConfig, ct2_config: dict[str, Any], tokens: WhisperTokens
) -> GenerationConfig:
    """What the converter reads back into CTranslate2's ``config.json``."""
    vocab = tokens.tokenizer.get_vocab(with_added_tokens=True)
    by_id = {index: token for token, index in vocab.items()}
    return GenerationConfig(  # type: ignore[no-untyped-call]
        decoder_start_token_id=tokens.sot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        pad_token_id=tokens.eot,
        suppress_tokens=list(ct2_config.get("suppress_ids") or []),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin") or []),
        alignment_heads=[list(pair) for pair in ct2_config.get("alignment_heads") or []],
        lang_to_id={by_id[i]: i for i in ct2_config.get("lang_ids") or [] if i in by_id},
        no_timestamps_token_id=tokens.notimestamps,
        is_multilingual=tokens.multilingual,
        max_length=config.max_target_positions,
    )


def hf_state_dict(ct2: Ct2Model, config: WhisperConfig) -> dict[str, torch.Tensor]:
    """``ct2``'s variables under transformers' names, as float32 tensors."""
    out: dict[str, torch.Tensor] = {}
    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        out[f"{hf}.embed_positions.weight"] = _t(ct2, f"{side}/position_encodings/encodings")
        _norm(out, ct2, f"{side}/layer_norm", f"{hf}.layer_norm")
        count = config.encoder_layers if side == "encoder" else config.decoder_layers
        for i in range(count):
            _layer(out, ct2, f"{side}/layer_{i}", f"{hf}.layers.{i}", config.d_model)
    for conv in ("conv1", "conv2"):
        out[f"model.encoder.{conv}.weight"] = _t(ct2, f"encoder/{conv}/weight")
        out[f"model.encoder.{conv}.bias"] = _t(ct2, f"encoder/{conv}/bias")
    out["model.decoder.embed_tokens.weight"] = _t(ct2, "decoder/embeddings/weight")
    return out


def _layer(out: dict[str, torch.Tensor], ct2: Ct2Model, scope: str, hf: str, width: int) -> None:
    q, k, v = _split(ct2, f"{scope}/self_attention/linear_0", 3, width)
    _attention(out, f"{hf}.self_attn", q, k, v, _linear(ct2, f"{scope}/self_attention/linear_1"))
    _norm(out, ct2, f"{scope}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
    if f"{scope}/attention/linear_0/weight" in ct2.variables:
        (q,) = _split(ct2, f"{scope}/attention/linear_0", 1, width)
        k, v = _split(ct2, f"{scope}/attention/linear_1", 2, width)
        _attention(out, f"{hf}.encoder_attn", q, k, v, _linear(ct2, f"{scope}/attention/linear_2"))
        _norm(out, ct2, f"{scope}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
    for ct2_name, hf_name in (("linear_0", "fc1"), ("linear_1", "fc2")):
        weight, bias = _linear(ct2, f"{scope}/ffn/{ct2_name}")
        out[f"{hf}.{hf_name}.weight"] = weight
        out[f"{hf}.{hf_name}.bias"] = bias
    _norm(out, ct2, f"{scope}/ffn/layer_norm", f"{hf}.final_layer_norm")


_Linear = tuple[torch.Tensor, torch.Tensor]


def _attention(
    out: dict[str, torch.Tensor], hf: str, q: _Linear, k: _Linear, v: _Linear, o: _Linear
) -> None:
    for name, (weight, bias) in (("q_proj", q), ("v_proj", v), ("out_proj", o)):
        out[f"{hf}.{name}.weight"] = weight
        out[f"{hf}.{name}.bias"] = bias
    # Whisper's key projection has no bias; CTranslate2 fused a zero one in its place.
    out[f"{hf}.k_proj.weight"] = k[0]


def _split(ct2: Ct2Model, scope: str, parts: int, width: int) -> list[_Linear]:
    weight, bias = _linear(ct2, scope)
    if weight.shape[0] != parts * width:
        raise MappingError(f"{scope}/weight has {weight.shape[0]} rows, expected {parts * width}")
    return list(zip(torch.split(weight, width), torch.split(bias, width), strict=True))


def _linear(ct2: Ct2Model, scope: str) -> _Linear:
    weight = _array(ct2, f"{scope}/weight")
    scale_name = f"{scope}/weight_scale"
    if scale_name in ct2.variables:  # int8 quantised: one scale per output row
        scale = _array(ct2, scale_name).astype(np.float32)
        weight = weight.astype(np.float32) / scale.reshape(-1, *([1] * (weight.ndim - 1)))
    return _tensor(weight), _t(ct2, f"{scope}/bias")


def _norm(out: dict[str, torch.Tensor], ct2: Ct2Model, scope: str, hf: str) -> None:
    out[f"{hf}.weight"] = _t(ct2, f"{scope}/gamma")
    out[f"{hf}.bias"] = _t(ct2, f"{scope}/beta")


def _array(ct2: Ct2Model, name: str) -> npt.NDArray[np.generic]:
    try:
        return ct2.get(name)
    except KeyError:
        raise MappingError(f"the model has no variable {name}") from None


def _t(ct2: Ct2Model, name: str) -> torch.Tensor:
    return _tensor(_array(ct2, name))


def _tensor(array: npt.NDArray[np.generic]) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))
