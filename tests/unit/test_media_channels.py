"""Choosing one channel when decoding, counting channels, and telling dual mono apart."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.errors import RejectedInput
from pipeline.media import (
    channel_count,
    channels_carry_one_signal,
    decode_mono_16k,
    iter_mono_16k,
)
from tests.wav import wav_bytes

DATA = Path(__file__).resolve().parents[1] / "data"


def tone(seconds: float, hz: float, amplitude: float, rate: int) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")


def interleaved_wav(*channels: npt.NDArray[np.int16], rate: int) -> io.BytesIO:
    pcm = np.stack(channels, axis=1).reshape(-1).astype("<i2").tobytes()
    return io.BytesIO(wav_bytes(pcm, rate=rate, channels=len(channels)))


def dominant_hz(samples: npt.NDArray[np.float32]) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.fft.rfftfreq(samples.size, 1 / 16000)[int(np.argmax(spectrum))])


@pytest.mark.parametrize("rate", [16000, 44100, 8000])
def test_each_channel_decodes_to_its_own_signal_at_16k(rate: int) -> None:
    left, right = tone(2.0, 300, 0.25, rate), tone(2.0, 1000, 0.1, rate)

    source = interleaved_wav(left, right, rate=rate)
    first = decode_mono_16k(source, channel=0)
    source.seek(0)
    second = decode_mono_16k(source, channel=1)

    assert first.dtype == np.float32 and first.ndim == 1
    assert first.size == pytest.approx(32000, abs=64)
    assert second.size == first.size
    assert dominant_hz(first) == pytest.approx(300, abs=2)
    assert dominant_hz(second) == pytest.approx(1000, abs=2)
    assert float(np.abs(first).max()) == pytest.approx(0.25, rel=0.05)
    assert float(np.abs(second).max()) == pytest.approx(0.1, rel=0.05)


def test_no_channel_mixes_them_as_before() -> None:
    left, right = tone(1.0, 300, 0.25, 16000), tone(1.0, 1000, 0.1, 16000)
    source = interleaved_wav(left, right, rate=16000)

    mixed = decode_mono_16k(source)
    source.seek(0)
    first = decode_mono_16k(source, channel=0)
    source.seek(0)
    second = decode_mono_16k(source, channel=1)

    np.testing.assert_allclose(mixed, (first + second) / 2, atol=2 / 32768)


def test_the_third_of_three_channels() -> None:
    rate = 16000
    source = interleaved_wav(
        tone(1.0, 300, 0.2, rate), tone(1.0, 700, 0.2, rate), tone(1.0, 1500, 0.2, rate), rate=rate
    )

    assert channel_count(source) == 3
    assert dominant_hz(decode_mono_16k(source, channel=2)) == pytest.approx(1500, abs=2)


@pytest.mark.parametrize("channel", [2, -1])
def test_a_channel_the_stream_lacks_is_refused(channel: int) -> None:
    source = interleaved_wav(tone(0.5, 300, 0.2, 16000), tone(0.5, 700, 0.2, 16000), rate=16000)

    with pytest.raises(RejectedInput) as info:
        next(iter_mono_16k(source, channel=channel))
    assert info.value.code == "invalid"
    assert "2 channel" in info.value.reason


def test_channel_zero_of_mono_audio_is_the_audio() -> None:
    source = io.BytesIO(wav_bytes(tone(1.0, 440, 0.2, 16000).tobytes()))

    assert channel_count(source) == 1
    only = decode_mono_16k(source, channel=0)
    source.seek(0)
    np.testing.assert_array_equal(only, decode_mono_16k(source))


def test_channel_count_comes_from_the_stream_and_leaves_the_position() -> None:
    source = interleaved_wav(tone(0.5, 300, 0.2, 16000), tone(0.5, 700, 0.2, 16000), rate=16000)

    assert channel_count(source) == 2
    assert source.tell() == 0  # the decoder reads it next, from the start


def test_the_two_speakers_of_the_real_stereo_call_are_apart() -> None:
    """stereo_diarization.wav: the right speaker stops at ~2.3 s, the left talks to ~4.5 s."""
    with (DATA / "stereo_diarization.wav").open("rb") as source:
        left = decode_mono_16k(source, channel=0)
        source.seek(0)
        right = decode_mono_16k(source, channel=1)

    def rms(samples: npt.NDArray[np.float32]) -> float:
        return float(np.sqrt(np.square(samples[3 * 16000 : 4 * 16000]).mean()))

    assert left.size == right.size == pytest.approx(80000, abs=160)
    assert rms(left) > 0.02
    assert rms(right) < rms(left) / 20


def test_dual_mono_is_one_signal_and_real_stereo_is_not() -> None:
    speechlike = tone(1.0, 300, 0.2, 16000) + tone(1.0, 1100, 0.1, 16000)
    silent = np.zeros_like(speechlike)

    assert channels_carry_one_signal(interleaved_wav(speechlike, speechlike, rate=16000))
    assert not channels_carry_one_signal(
        interleaved_wav(speechlike, tone(1.0, 500, 0.2, 16000), rate=16000)
    )
    # A call where only one side spoke is two channels, not one signal.
    assert not channels_carry_one_signal(interleaved_wav(speechlike, silent, rate=16000))
    assert not channels_carry_one_signal(interleaved_wav(silent, speechlike, rate=16000))
    assert channels_carry_one_signal(io.BytesIO(wav_bytes(speechlike.tobytes())))


@pytest.mark.parametrize(
    ("name", "one_signal"),
    [("jfk.flac", True), ("hotwords.mp3", True), ("stereo_diarization.wav", False)],
)
def test_real_stereo_files(name: str, one_signal: bool) -> None:
    """jfk.flac and hotwords.mp3 are mono speech saved as two channels (lossy, for the mp3)."""
    with (DATA / name).open("rb") as source:
        assert channel_count(source) == 2
        assert channels_carry_one_signal(source) is one_signal
        assert source.tell() == 0
