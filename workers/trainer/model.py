"""A tiny CTC acoustic model: two 1-D convolutions, one bidirectional GRU, a linear head.

The first convolution has stride 2, so the model emits one distribution over the
vocabulary every 20 ms: enough frames for English characters (about 15 a second)
and half the GRU work. It has roughly 0.4 M parameters; it proves that
training runs, not that it transcribes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from workers.trainer.features import N_MELS
from workers.trainer.text import VOCAB

_KERNEL = 5
_STRIDE = 2


@dataclass(frozen=True, slots=True)
class ModelConfig:
    n_mels: int = N_MELS
    conv_channels: int = 128
    hidden: int = 128
    vocab_size: int = len(VOCAB)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def output_frames(input_frames: int) -> int:
    """Frames the model emits for ``input_frames`` feature frames."""
    return (input_frames + 2 * (_KERNEL // 2) - _KERNEL) // _STRIDE + 1


class TinyCTC(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        channels = config.conv_channels
        self.conv1 = nn.Conv1d(config.n_mels, channels, _KERNEL, _STRIDE, padding=_KERNEL // 2)
        self.conv2 = nn.Conv1d(channels, channels, _KERNEL, 1, padding=_KERNEL // 2)
        self.gru = nn.GRU(channels, config.hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * config.hidden, config.vocab_size)

    def forward(
        self, features: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``(frames, batch, vocab)`` (CTCLoss's layout) and their lengths.

        ``features`` is ``(batch, frames, n_mels)``, zero-padded; ``lengths`` (on
        the CPU, as packing wants) holds each row's real frame count.
        """
        x = torch.relu(self.conv1(features.transpose(1, 2)))
        x = torch.relu(self.conv2(x)).transpose(1, 2)  # (batch, frames, channels)
        out_lengths = (lengths + 2 * (_KERNEL // 2) - _KERNEL) // _STRIDE + 1
        # Packing keeps the backward direction of the GRU from reading the padding.
        packed = pack_padded_sequence(x, out_lengths, batch_first=True, enforce_sorted=False)
        recurrent, _ = self.gru(packed)
        padded, _ = pad_packed_sequence(recurrent, batch_first=True)
        logits = self.head(padded)
        return logits.log_softmax(dim=-1).transpose(0, 1), out_lengths
