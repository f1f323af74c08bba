"""Log-mel features with plain torch: 80 bands, 25 ms Hann window, 10 ms hop, 16 kHz.

The filterbank is the HTK-style triangular one (``torchaudio`` with
``mel_scale="htk", norm=None`` builds the same), so no audio library beyond
torch is needed. Each utterance is normalised to zero mean and unit variance per
band, which makes a tiny model train in a few steps regardless of recording level.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import torch

from workers.trainer.manifest import SAMPLE_RATE

N_MELS = 80
WIN_LENGTH = 400  # 25 ms at 16 kHz
HOP_LENGTH = 160  # 10 ms
N_FFT = 400
_LOG_FLOOR = 1e-10


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(
    *, n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE
) -> torch.Tensor:
    """Triangular filters of shape ``(n_fft // 2 + 1, n_mels)``, 0 Hz to Nyquist."""
    n_freqs = n_fft // 2 + 1
    freqs = np.linspace(0.0, sample_rate / 2, n_freqs)
    mel_points = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2)
    hz_points = 700.0 * (10.0 ** (mel_points / 2595.0) - 1.0)
    lower, centre, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (freqs[:, None] - lower[None, :]) / (centre - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - centre)[None, :]
    bank: npt.NDArray[np.float64] = np.clip(np.minimum(rising, falling), 0.0, None)
    return torch.from_numpy(bank.astype(np.float32))


def n_frames(n_samples: int) -> int:
    """Frames ``log_mel`` returns for ``n_samples`` (centred STFT)."""
    return 1 + n_samples // HOP_LENGTH


class LogMel:
    """Turns 16 kHz mono waveforms into normalised log-mel frames on one device."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._window = torch.hann_window(WIN_LENGTH, device=device)
        self._bank = mel_filterbank().to(device)

    def __call__(self, samples: npt.NDArray[np.float32]) -> torch.Tensor:
        """``(frames, N_MELS)`` float32 features of one utterance."""
        wave = torch.from_numpy(samples).to(self.device)
        spec = torch.stft(
            wave,
            n_fft=N_FFT,
            hop_length=HOP_LENGTH,
            win_length=WIN_LENGTH,
            window=self._window,
            center=True,
            # Zero padding works for clips shorter than half a window; reflect does not.
            pad_mode="constant",
            return_complex=True,
        )
        power = spec.abs().pow(2).transpose(0, 1)  # (frames, freqs)
        mel = torch.clamp(power @ self._bank, min=_LOG_FLOOR).log()
        mean = mel.mean(dim=0, keepdim=True)
        std = mel.std(dim=0, keepdim=True, unbiased=False)
        return (mel - mean) / (std + 1e-5)
