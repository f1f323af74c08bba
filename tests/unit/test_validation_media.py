"""validate() and the media helpers on real audio files and hostile look-alikes.

Bad inputs are built in tmp_path by each test; nothing generated is committed.
"""

from __future__ import annotations

import http.server
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import ValidationSettings
from pipeline.errors import RejectedInput
from pipeline.ingest.validation import validate
from pipeline.media import AudioInfo, IncompleteAudio, decode_mono_16k, open_container
from tests import wav

DATA = Path(__file__).resolve().parents[1] / "data"
JFK = DATA / "jfk.flac"


def run_validate(path: Path, name: str | None = None, **settings: object) -> AudioInfo:
    with path.open("rb") as source:
        return validate(
            source,
            name=name or path.name,
            size=path.stat().st_size,
            settings=ValidationSettings(**settings),  # type: ignore[arg-type]
        )


def rejection(path: Path, name: str | None = None, **settings: object) -> str:
    with pytest.raises(RejectedInput) as info:
        run_validate(path, name, **settings)
    reason = info.value.reason
    assert isinstance(reason, str) and len(reason) > 10
    assert str(info.value) == reason
    return reason.lower()


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    frames = int(seconds * rate)
    tone = (np.sin(np.arange(frames) * 2 * np.pi * 440 / rate) * 8000).astype("<i2")
    return wav.write_wav(path, tone.tobytes(), rate=rate)


def patch_data_size(path: Path, value: int) -> None:
    raw = bytearray(path.read_bytes())
    at = raw.index(b"data")
    raw[at + 4 : at + 8] = struct.pack("<I", value)
    path.write_bytes(bytes(raw))


@dataclass
class Server:
    port: int
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A tiny HTTP server on 127.0.0.1 that records every request path it receives."""
    server = Server(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            server.requests.append(self.path)
            self.send_response(404)
            self.end_headers()

        do_HEAD = do_GET

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def hls_playlist(port: int, local: Path) -> str:
    return (
        "#EXTM3U\n"
        "#EXT-X-VERSION:3\n"
        "#EXT-X-TARGETDURATION:10\n"
        "#EXT-X-MEDIA-SEQUENCE:0\n"
        "#EXTINF:10.0,\n"
        f"http://127.0.0.1:{port}/x.wav\n"
        "#EXTINF:10.0,\n"
        f"{local}\n"
        "#EXT-X-ENDLIST\n"
    )


def concat_playlist(port: int, local: Path) -> str:
    return f"ffconcat version 1.0\nfile '{local}'\nfile 'http://127.0.0.1:{port}/x.wav'\n"


# -- accepted input ---------------------------------------------------------


def test_real_flac_is_accepted_with_its_true_properties() -> None:
    info = run_validate(JFK)

    assert info.container == "flac"
    assert info.codec == "flac"
    assert info.sample_rate == 44100
    assert info.channels == 2
    assert info.duration_s == pytest.approx(11.0, abs=0.05)


@pytest.mark.parametrize(
    ("name", "container", "duration"),
    [
        ("hotwords.mp3", "mp3", 4.0),
        ("multilingual.mp3", "mp3", 59.9),
        ("stereo_diarization.wav", "wav", 5.0),
    ],
)
def test_other_sample_files_are_accepted(name: str, container: str, duration: float) -> None:
    info = run_validate(DATA / name)

    assert info.container == container
    assert info.duration_s == pytest.approx(duration, abs=0.1)


def test_validate_leaves_the_file_positioned_at_the_start() -> None:
    with JFK.open("rb") as source:
        source.seek(1234)
        validate(source, name="jfk.flac", size=JFK.stat().st_size, settings=ValidationSettings())
        assert source.tell() == 0


def test_extension_is_matched_case_insensitively() -> None:
    assert run_validate(JFK, name="JFK.FLAC").duration_s == pytest.approx(11.0, abs=0.05)


def test_small_generated_wav_is_accepted(tmp_path: Path) -> None:
    info = run_validate(write_wav(tmp_path / "tone.wav", seconds=1.0))

    assert (info.container, info.sample_rate, info.channels) == ("wav", 16000, 1)
    assert info.duration_s == pytest.approx(1.0, abs=0.01)


def test_wav_with_streaming_data_size_marker_is_accepted(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "stream.wav", seconds=1.0)
    patch_data_size(path, 0xFFFFFFFF)

    assert run_validate(path).duration_s == pytest.approx(1.0, abs=0.01)


def test_wav_with_zero_data_size_marker_is_accepted(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "stream0.wav", seconds=1.0)
    patch_data_size(path, 0)

    assert run_validate(path).duration_s == pytest.approx(1.0, abs=0.01)


# -- rejected input -----------------------------------------------------------


def test_empty_wav_is_rejected_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")

    assert "empty" in rejection(path)


def test_text_file_named_wav_is_rejected_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Meeting notes: this is plain text, not audio.\n" * 20)

    reason = rejection(path)
    assert "not a readable audio file" in reason or "not a supported" in reason


def test_flac_truncated_to_half_is_rejected_as_truncated(tmp_path: Path) -> None:
    raw = JFK.read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(raw[: len(raw) // 2])

    reason = rejection(path)
    assert "truncated" in reason
    assert "11.0 s" in reason


def test_wav_whose_header_claims_more_data_than_the_file_holds_is_rejected(
    tmp_path: Path,
) -> None:
    path = write_wav(tmp_path / "forged.wav", seconds=0.5)
    patch_data_size(path, 0x7FFFFFFF)

    reason = rejection(path)
    assert "header" in reason
    assert str(0x7FFFFFFF) in reason


def test_wav_cut_short_after_a_correct_header_is_rejected(tmp_path: Path) -> None:
    full = write_wav(tmp_path / "full.wav", seconds=1.0).read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(full[: len(full) // 2])

    reason = rejection(path)
    assert "truncated" in reason and "header" in reason


# -- incomplete: the header promises more than the file holds ------------------------
# The hot folder waits for the rest of such a file instead of rejecting it at once.


def incompleteness(path: Path) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        run_validate(path)
    return info.value


def test_wav_cut_short_after_a_correct_header_is_incomplete(tmp_path: Path) -> None:
    full = write_wav(tmp_path / "full.wav", seconds=1.0).read_bytes()
    path = tmp_path / "half.wav"
    path.write_bytes(full[: len(full) // 2])

    assert isinstance(incompleteness(path), IncompleteAudio)


def test_wav_cut_before_its_data_chunk_is_incomplete(tmp_path: Path) -> None:
    full = write_wav(tmp_path / "full.wav", seconds=1.0).read_bytes()
    path = tmp_path / "head.wav"
    path.write_bytes(full[:30])  # inside the fmt chunk

    error = incompleteness(path)
    assert isinstance(error, IncompleteAudio)
    assert str(len(full)) in error.reason


def test_flac_cut_in_half_is_incomplete(tmp_path: Path) -> None:
    raw = JFK.read_bytes()
    path = tmp_path / "half.flac"
    path.write_bytes(raw[: len(raw) // 2])

    assert isinstance(incompleteness(path), IncompleteAudio)


def test_flac_cut_inside_its_first_frame_is_incomplete_not_undecodable(tmp_path: Path) -> None:
    raw = JFK.read_bytes()
    path = tmp_path / "head.flac"
    path.write_bytes(raw[:10_000])  # STREAMINFO says 11 s; frames start at byte 8,363

    error = incompleteness(path)
    assert isinstance(error, IncompleteAudio) and error.code == "truncated"


def test_text_named_wav_is_rejected_but_not_as_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("Meeting notes: this is plain text, not audio.\n" * 20)

    assert not isinstance(incompleteness(path), IncompleteAudio)


def test_streaming_wav_cut_in_half_looks_complete(tmp_path: Path) -> None:
    """No length in the header: nothing in the bytes says more is coming.

    For such files the hot folder relies on the quiet period, on no process
    holding the file open for writing, and on comparing the file again after ingest.
    """
    full = write_wav(tmp_path / "full.wav", seconds=1.0)
    patch_data_size(full, 0xFFFFFFFF)
    raw = full.read_bytes()
    path = tmp_path / "half.wav"
    path.write_bytes(raw[: len(raw) // 2])

    assert run_validate(path).duration_s == pytest.approx(0.5, abs=0.02)


def test_hls_playlist_named_wav_is_rejected_without_any_network_request(
    tmp_path: Path, http_server: Server
) -> None:
    local = write_wav(tmp_path / "local.wav")
    path = tmp_path / "playlist.wav"
    path.write_text(hls_playlist(http_server.port, local))

    reason = rejection(path)

    assert "not a readable audio file" in reason or "playlist" in reason
    assert http_server.requests == []


def test_hls_playlist_behind_an_m3u8_handle_does_not_reach_the_network(
    tmp_path: Path, http_server: Server
) -> None:
    # The handle's own name ends in .m3u8, which makes FFmpeg's HLS probe bite when
    # no demuxer allow-list is given; only the allow-list keeps it off the network.
    local = write_wav(tmp_path / "local.wav")
    path = tmp_path / "upload.m3u8"
    path.write_text(hls_playlist(http_server.port, local))

    rejection(path, name="upload.wav")
    with path.open("rb") as source, pytest.raises(RejectedInput):
        open_container(source)

    assert http_server.requests == []


def test_ffconcat_playlist_named_wav_is_rejected_without_any_network_request(
    tmp_path: Path, http_server: Server
) -> None:
    local = write_wav(tmp_path / "local.wav")
    path = tmp_path / "concat.wav"
    path.write_text(concat_playlist(http_server.port, local))

    reason = rejection(path)

    assert "not a readable audio file" in reason or "playlist" in reason
    assert http_server.requests == []


def test_the_request_recorder_does_see_requests(http_server: Server) -> None:
    # Guards the two tests above: an empty request list must mean "no request".
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(f"http://127.0.0.1:{http_server.port}/probe", timeout=5)

    assert http_server.requests == ["/probe"]


def test_disallowed_extension_is_rejected_before_the_file_is_read(tmp_path: Path) -> None:
    class Unreadable:
        def __getattr__(self, attr: str) -> object:
            raise AssertionError(f"file was touched: {attr}")

    with pytest.raises(RejectedInput) as info:
        validate(Unreadable(), name="jfk.txt", size=1000, settings=ValidationSettings())  # type: ignore[arg-type]

    reason = info.value.reason.lower()
    assert ".txt" in reason and "not accepted" in reason
    assert "flac" in reason  # tells the user what would have been accepted


def test_name_without_extension_is_rejected() -> None:
    reason = rejection(JFK, name="recording")

    assert "no extension" in reason


def test_extension_allow_list_can_be_narrowed() -> None:
    reason = rejection(JFK, allowed_extensions=("wav",))

    assert ".flac" in reason and "not accepted" in reason


def test_file_over_max_bytes_is_rejected() -> None:
    size = JFK.stat().st_size

    reason = rejection(JFK, max_bytes=size - 1)

    assert "over the limit" in reason
    assert str(size) in reason and str(size - 1) in reason


def test_file_exactly_at_max_bytes_is_accepted() -> None:
    assert run_validate(JFK, max_bytes=JFK.stat().st_size).sample_rate == 44100


def test_audio_longer_than_max_duration_is_rejected() -> None:
    reason = rejection(JFK, max_duration_s=5.0)

    assert "long" in reason and "limit" in reason
    assert "11" in reason and "5" in reason


def test_audio_shorter_than_min_duration_is_rejected() -> None:
    reason = rejection(JFK, min_duration_s=12.0)

    assert "under the minimum" in reason
    assert "11.00" in reason and "12.00" in reason


# -- decoding -------------------------------------------------------------------


def test_decode_mono_16k_of_jfk_gives_eleven_seconds_of_normalised_float32() -> None:
    with JFK.open("rb") as source:
        samples = decode_mono_16k(source)

    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.shape[0] == pytest.approx(176_000, abs=160)
    assert float(samples.min()) >= -1.0 and float(samples.max()) <= 1.0
    assert float(np.abs(samples).max()) > 0.1  # real speech, not silence


def test_decode_mono_16k_downmixes_stereo_wav() -> None:
    with (DATA / "stereo_diarization.wav").open("rb") as source:
        samples = decode_mono_16k(source)

    assert samples.ndim == 1
    assert samples.shape[0] == pytest.approx(5 * 16000, abs=160)


def test_decode_mono_16k_resamples_a_generated_tone(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "tone8k.wav", seconds=2.0, rate=8000)

    with path.open("rb") as source:
        samples = decode_mono_16k(source)

    assert samples.shape[0] == pytest.approx(32_000, abs=64)
    assert float(np.abs(samples).max()) == pytest.approx(8000 / 32768, rel=0.05)


def test_decode_mono_16k_refuses_a_playlist(tmp_path: Path, http_server: Server) -> None:
    path = tmp_path / "playlist.wav"
    path.write_text(hls_playlist(http_server.port, tmp_path / "x.wav"))

    with path.open("rb") as source, pytest.raises(RejectedInput):
        decode_mono_16k(source)
    assert http_server.requests == []
