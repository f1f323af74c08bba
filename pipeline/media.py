"""Opening, probing and decoding audio with PyAV, safely.

Hostile files must not make FFmpeg reach beyond the one file it was given: an
HLS or concat playlist renamed ``.wav`` could otherwise fetch URLs or splice in
other local files. Every container is opened with a demuxer allow-list and with
nested I/O restricted to the ``file`` protocol, so such playlists fail to open.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Literal

import av
import numpy as np
import numpy.typing as npt

from pipeline.errors import RejectedInput

# FFmpeg demuxer names of the containers we accept (wav, flac, mp3, m4a/mp4,
# ogg/opus, webm/mkv, raw aac).
ALLOWED_DEMUXERS = ("wav", "flac", "mp3", "mov", "mp4", "m4a", "ogg", "matroska", "webm", "aac")

_OPEN_OPTIONS = {
    "format_whitelist": ",".join(ALLOWED_DEMUXERS),
    "protocol_whitelist": "file",
}

# A decodable stream shorter than this share of what its header claims is truncated.
_MIN_DECODED_SHARE = 0.9


class IncompleteAudio(RejectedInput):
    """The header promises more audio than the file holds: cut short, or still being written.

    The hot folder waits for more bytes before it rejects such a file; every other
    source holds complete objects, so for them this is a plain rejection.
    """


@dataclass(frozen=True, slots=True)
class AudioInfo:
    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float


def check_wav_header(source: BinaryIO, size: int) -> None:
    """Reject a WAV whose ``data`` chunk claims more bytes than the file holds.

    FFmpeg quietly trusts the file length instead, so a forged or truncated
    header would otherwise pass. Sizes 0 and 0xFFFFFFFF mean "unknown length"
    (streaming recorders write them) and are allowed. A file that ends before its
    ``data`` chunk while its RIFF size promises more is incomplete too.
    """
    start = source.tell()
    try:
        head = source.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return
        order: Literal["little", "big"] = "little" if head[:4] == b"RIFF" else "big"
        riff_size = int.from_bytes(head[4:8], order)
        promised = riff_size + 8 if riff_size not in (0, 0xFFFFFFFF) else None
        offset = 12
        for _ in range(64):
            chunk = source.read(8)
            if len(chunk) < 8:
                if promised is not None and promised > size:
                    raise _wav_cut_short(promised, size)
                return
            chunk_size = int.from_bytes(chunk[4:8], order)
            offset += 8
            if chunk[:4] == b"data":
                if chunk_size in (0, 0xFFFFFFFF):
                    return
                if offset + chunk_size > size + 1:
                    raise IncompleteAudio(
                        f"WAV header claims {chunk_size} bytes of audio but the file holds only"
                        f" {max(size - offset, 0)} (truncated or forged header)",
                        code="wav_header",
                    )
                return
            offset += chunk_size + (chunk_size & 1)
            if offset > size:
                if promised is not None and promised > size:
                    raise _wav_cut_short(promised, size)
                raise IncompleteAudio(
                    "WAV header is corrupt (a chunk runs past the end of the file)",
                    code="wav_header",
                )
            source.seek(offset)
    finally:
        source.seek(start)


def _wav_cut_short(promised: int, size: int) -> IncompleteAudio:
    return IncompleteAudio(
        f"WAV header promises {promised} bytes but the file ends after {size},"
        " before its audio data (truncated)",
        code="wav_header",
    )


def open_container(source: BinaryIO) -> Any:
    """Open ``source`` with the demuxer and protocol allow-lists; raise RejectedInput."""
    try:
        return av.open(source, mode="r", options=dict(_OPEN_OPTIONS), metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise RejectedInput(_describe_open_error(exc), code="not_audio") from exc


def _describe_open_error(exc: Exception) -> str:
    text = str(exc).lower()
    if "whitelist" in text or "not on" in text:
        return "not a supported audio container (playlists and other formats are refused)"
    return "not a readable audio file (FFmpeg cannot recognise its format)"


def probe(source: BinaryIO, *, max_duration_s: float) -> AudioInfo:
    """Check that ``source`` holds real, complete audio by decoding all of it.

    Decoding (without resampling) is cheap next to transcription and is the only
    way to catch truncated or corrupt files whose headers look fine.
    """
    with open_container(source) as container:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        sample_rate = int(ctx.sample_rate or 0)
        if sample_rate <= 0:
            raise RejectedInput("audio stream has no sample rate", code="not_audio")
        claimed = _claimed_within_limit(container, stream, max_duration_s)
        try:
            decoded = _decoded_seconds(container, stream, sample_rate, max_duration_s)
        except RejectedInput as exc:
            if exc.code != "undecodable" or not claimed:
                raise
            raise _truncated(claimed, 0.0) from exc  # cut inside its first frame
        info = AudioInfo(
            container=str(container.format.name),
            codec=str(ctx.name),
            sample_rate=sample_rate,
            channels=int(ctx.channels or 0),
            duration_s=decoded,
        )
    if decoded <= 0 and not claimed:
        raise RejectedInput("the file holds no decodable audio", code="undecodable")
    if claimed is not None and decoded < claimed * _MIN_DECODED_SHARE:
        raise _truncated(claimed, decoded)
    return info


def _truncated(claimed: float, decoded: float) -> IncompleteAudio:
    return IncompleteAudio(
        f"truncated or corrupt: the header promises {claimed:.1f} s"
        f" but only {decoded:.1f} s of audio can be decoded",
        code="truncated",
    )


@dataclass(frozen=True, slots=True)
class HeadInfo:
    """What the first bytes of a file tell about it (duration only if the header says)."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    duration_s: float | None


def probe_head(head: bytes, *, max_duration_s: float) -> HeadInfo:
    """Check that the start of a file is a supported container with an audio stream."""
    with open_container(io.BytesIO(head)) as container:
        stream = _audio_stream(container)
        ctx = stream.codec_context
        claimed = _claimed_within_limit(container, stream, max_duration_s)
        try:
            next(iter(container.decode(stream)))
        except StopIteration:
            raise RejectedInput("the file holds no decodable audio", code="undecodable") from None
        except av.error.FFmpegError as exc:
            raise RejectedInput(
                "audio data cannot be decoded (corrupt file)", code="undecodable"
            ) from exc
        return HeadInfo(
            container=str(container.format.name),
            codec=str(ctx.name),
            sample_rate=int(ctx.sample_rate or 0),
            channels=int(ctx.channels or 0),
            duration_s=claimed,
        )


def claimed_duration_s(source: BinaryIO) -> float | None:
    """What the container says the audio lasts, without decoding; None if it does not say."""
    start = source.tell()
    try:
        with open_container(source) as container:
            return _claimed_duration(container, _audio_stream(container))
    finally:
        source.seek(start)


def _audio_stream(container: Any) -> Any:
    """The first audio stream, or a rejection when the file has none."""
    stream = next((s for s in container.streams if s.type == "audio"), None)
    if stream is None:
        raise RejectedInput("no audio stream in the file", code="no_audio_stream")
    return stream


def _claimed_within_limit(container: Any, stream: Any, max_duration_s: float) -> float | None:
    """The duration the header claims, refused when it is over the limit."""
    claimed = _claimed_duration(container, stream)
    if claimed is not None and claimed > max_duration_s:
        raise RejectedInput(
            f"audio is {claimed:.1f} s long by its header, over the limit of {max_duration_s:g} s",
            code="too_long",
        )
    return claimed


def _claimed_duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration) / av.time_base
    return None


def _decoded_seconds(container: Any, stream: Any, sample_rate: int, max_duration_s: float) -> float:
    samples = 0
    limit = int(max_duration_s * sample_rate)
    try:
        for frame in container.decode(stream):
            samples += frame.samples
            if samples > limit:
                raise RejectedInput(
                    f"audio is longer than the limit of {max_duration_s:g} s", code="too_long"
                )
    except av.error.FFmpegError as exc:
        if samples == 0:
            raise RejectedInput(
                "audio data cannot be decoded (corrupt file)", code="undecodable"
            ) from exc
        # Keep what decoded; the share check decides whether the rest was missing.
    return samples / sample_rate


def decode_mono_16k(source: BinaryIO, *, channel: int | None = None) -> npt.NDArray[np.float32]:
    """Decode to the 16 kHz mono float32 samples Whisper expects (``iter_mono_16k``)."""
    chunks = list(iter_mono_16k(source, channel=channel))
    if not chunks:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(chunks)


def iter_mono_16k(
    source: BinaryIO, *, channel: int | None = None
) -> Iterator[npt.NDArray[np.float32]]:
    """Yield 16 kHz mono float32 chunks; memory per chunk is bounded.

    ``channel=None`` mixes all channels down (FFmpeg's downmix); ``channel=N`` takes
    channel N alone (0 = left), for recordings with one speaker per channel. A channel
    the stream does not have is a ``RejectedInput``.
    """
    with open_container(source) as container:
        stream = _audio_stream(container)
        if channel is None:
            resampler = av.AudioResampler(format="s16", layout="mono", rate=16000)
        else:
            _check_channel(channel, _channel_count(stream))
            # Planar keeps each channel in its own row; the layout stays the stream's.
            resampler = av.AudioResampler(format="s16p", rate=16000)

        def samples(frames: Any) -> Iterator[npt.NDArray[np.float32]]:
            for out in frames:
                pcm = out.to_ndarray()
                if channel is not None:
                    _check_channel(channel, pcm.shape[0])
                    pcm = pcm[channel]
                yield pcm.reshape(-1).astype(np.float32) / 32768.0

        try:
            for frame in container.decode(stream):
                yield from samples(resampler.resample(frame))
        except av.error.FFmpegError:
            # Like faster-whisper: keep the audio decoded so far when a tail is bad.
            pass
        yield from samples(resampler.resample(None))


def channel_count(source: BinaryIO) -> int:
    """How many channels the audio stream has, as its decoder reports (not the file name)."""
    start = source.tell()
    try:
        with open_container(source) as container:
            return _channel_count(_audio_stream(container))
    finally:
        source.seek(start)


def _channel_count(stream: Any) -> int:
    return int(stream.codec_context.channels or 0) or len(stream.layout.channels)


def _check_channel(channel: int, channels: int) -> None:
    if not 0 <= channel < channels:
        raise RejectedInput(f"audio has {channels} channel(s); there is no channel {channel}")


# Channels whose difference holds less than this share of their energy carry one signal.
_SAME_SIGNAL_SHARE = 1e-3


def channels_carry_one_signal(source: BinaryIO) -> bool:
    """Whether every channel holds the same signal (mono saved as stereo, "dual mono").

    Decodes the whole stream at its own rate (cheap next to transcription) and compares
    the energy of each channel's difference from the first with the energy of the
    first; lossy codecs leave a tiny difference, which the threshold allows.
    """
    start = source.tell()
    try:
        with open_container(source) as container:
            stream = _audio_stream(container)
            if _channel_count(stream) < 2:
                return True
            resampler = av.AudioResampler(format="fltp")
            signal = difference = 0.0
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        pcm = out.to_ndarray().astype(np.float64)
                        signal += float(np.square(pcm[0]).sum())
                        difference += float(np.square(pcm[1:] - pcm[0]).sum())
            except av.error.FFmpegError:
                pass  # judged on what decodes, as the transcription will be
            return difference <= _SAME_SIGNAL_SHARE * signal
    finally:
        source.seek(start)
