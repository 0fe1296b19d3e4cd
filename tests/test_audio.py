"""Audio loading: every supported container in, mono float32 at 16 kHz out; bad files raise AudioError."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import soundfile

from asr.audio import SAMPLE_RATE, AudioError, RawFormat, audio_duration, load_audio, samples_first
from asr.errors import AsrError
from helpers import AN4, FSDD, SAMPLES, rms, run_cli

AN4_RAW = AN4 / "wav" / "an4_clstk" / "fash" / "an251-fash-b.raw"  # 32000 bytes: 1.0 s of 16-bit PCM
BIG_ENDIAN = RawFormat(sample_rate=16_000, byte_order="big")


def tone(rate: int, seconds: float, channels: int = 1, frequency: float = 440.0) -> np.ndarray:
    """A sine of amplitude 0.5, (frames, channels)."""
    t = np.arange(int(rate * seconds)) / rate
    wave = 0.5 * np.sin(2 * np.pi * frequency * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def assert_model_input(samples: np.ndarray, seconds: float, tolerance: float = 0.01) -> None:
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.flags["C_CONTIGUOUS"]
    assert abs(len(samples) - seconds * SAMPLE_RATE) <= tolerance * seconds * SAMPLE_RATE, len(samples)
    assert np.isfinite(samples).all()


def test_wav_8khz_is_resampled_to_16khz():
    path = FSDD / "recordings" / "7_george_0.wav"
    info = soundfile.info(path)
    assert info.samplerate == 8000
    samples = load_audio(path)
    assert_model_input(samples, info.frames / 8000)
    assert len(samples) == pytest.approx(2 * info.frames, abs=2)
    original, _ = soundfile.read(path, dtype="float32")
    assert rms(samples) == pytest.approx(rms(original), rel=0.05)


def test_flac_and_mp3_of_the_same_clip_agree():
    flac = load_audio(SAMPLES / "LJ001-0002.flac")
    mp3 = load_audio(SAMPLES / "LJ001-0002.mp3")
    seconds = soundfile.info(SAMPLES / "LJ001-0002.flac").duration  # 22.05 kHz source
    assert_model_input(flac, seconds)
    assert_model_input(mp3, seconds)
    assert abs(len(flac) - len(mp3)) <= 0.01 * len(flac)
    assert rms(mp3) == pytest.approx(rms(flac), rel=0.10)
    assert rms(flac) > 0.01  # real speech, not silence
    n = min(len(flac), len(mp3))
    assert np.corrcoef(flac[:n], mp3[:n])[0, 1] > 0.9


def test_ogg(tmp_path):
    path = tmp_path / "tone.ogg"
    soundfile.write(path, tone(22_050, 1.0), 22_050, format="OGG", subtype="VORBIS")
    samples = load_audio(path)
    assert_model_input(samples, 1.0, tolerance=0.02)
    assert rms(samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_nist_sphere(tmp_path):
    path = tmp_path / "clip.sph"
    reference = load_audio(AN4_RAW, raw=BIG_ENDIAN)
    soundfile.write(path, reference, SAMPLE_RATE, format="NIST", subtype="PCM_16")
    samples = load_audio(path)
    assert_model_input(samples, 1.0)
    np.testing.assert_allclose(samples, reference, atol=1 / 32768 + 1e-7)
    assert audio_duration(path) == pytest.approx(1.0)


def test_shorten_compressed_sphere_says_how_to_convert_it(tmp_path):
    fields = ["sample_count -i 16000", "sample_rate -i 16000", "channel_count -i 1", "sample_n_bytes -i 2",
              "sample_byte_format -s2 01", "sample_coding -s26 pcm,embedded-shorten-v2.00"]
    header = ("NIST_1A\n   1024\n" + "\n".join(fields) + "\nend_head\n").encode().ljust(1024)
    path = tmp_path / "sw02001.sph"
    path.write_bytes(header + b"ajkg" + bytes(range(256)) * 8)  # shorten's magic, then its stream
    with pytest.raises(AudioError, match=re.escape(f"{path}: NIST SPHERE audio compressed with shorten")) as error:
        load_audio(path)
    assert "sph2pipe" in str(error.value)


def test_raw_big_endian_needs_its_layout():
    big = load_audio(AN4_RAW, raw=BIG_ENDIAN)
    little = load_audio(AN4_RAW)  # .raw defaults to 16 kHz 16-bit little-endian
    assert_model_input(big, 1.0)
    assert len(big) == len(little) == 16_000
    assert rms(big) < 0.3, "big-endian AN4 decodes as noise"
    assert rms(little) > 0.2, "little-endian reading of big-endian PCM should be near full-scale noise"
    assert rms(big) < rms(little) / 10


def test_raw_layout_options(tmp_path):
    """An 8 kHz stereo 32-bit float raw file, described by RawFormat, is mixed and resampled."""
    path = tmp_path / "clip.pcm"
    soundfile.write(path, tone(8000, 0.5, channels=2), 8000, format="RAW", subtype="FLOAT", endian="LITTLE")
    layout = RawFormat(sample_rate=8000, subtype="FLOAT", channels=2)
    samples = load_audio(path, raw=layout)
    assert_model_input(samples, 0.5)
    assert rms(samples) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    assert audio_duration(path, raw=layout) == pytest.approx(0.5)


@pytest.mark.parametrize("bad", [dict(byte_order="middle"), dict(sample_rate=0), dict(channels=0),
                                 dict(subtype="PCM_7")])
def test_raw_format_rejects_nonsense(bad):
    with pytest.raises(AudioError):
        RawFormat(**bad)


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_48khz_is_mixed_to_mono(tmp_path, channels):
    path = tmp_path / f"{channels}ch.wav"
    data = tone(48_000, 0.5, channels)
    data[:, 1] *= -1  # channel 1 cancels channel 0, so a mono mix is the mean of the rest
    soundfile.write(path, data, 48_000, subtype="PCM_16")
    samples = load_audio(path)
    assert_model_input(samples, 0.5)
    expected = 0.5 / np.sqrt(2) * (channels - 2) / channels
    assert rms(samples) == pytest.approx(expected, rel=0.02, abs=1e-3)


@pytest.mark.parametrize("subtype", ["PCM_24", "FLOAT", "PCM_U8"])
def test_wav_sample_formats(tmp_path, subtype):
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, tone(16_000, 0.25), 16_000, subtype=subtype)
    samples = load_audio(path)
    assert_model_input(samples, 0.25)
    np.testing.assert_allclose(samples, tone(16_000, 0.25)[:, 0], atol=1e-2 if subtype == "PCM_U8" else 1e-4)


def test_float_wav_with_nan_is_cleaned(tmp_path):
    path = tmp_path / "nan.wav"
    data = tone(16_000, 0.1)
    data[10] = np.nan
    data[20] = np.inf
    soundfile.write(path, data, 16_000, subtype="FLOAT")
    samples = load_audio(path)
    assert np.isfinite(samples).all()
    assert samples[10] == 0.0 and samples[20] == 1.0


def truncated_flac(tmp_path, extra: int = 16):
    """The sample FLAC cut a few bytes past the end of its metadata blocks."""
    data = (SAMPLES / "LJ001-0002.flac").read_bytes()
    assert data[:4] == b"fLaC"
    offset = 4
    while True:
        header = data[offset]
        offset += 4 + int.from_bytes(data[offset + 1:offset + 4], "big")
        if header & 0x80:  # last metadata block
            break
    path = tmp_path / "truncated.flac"
    path.write_bytes(data[:offset + extra])
    return path


def text_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    return path


def empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    return path


@pytest.mark.parametrize("make_bad", [
    lambda tmp: tmp / "missing.wav",
    empty_file,
    lambda tmp: (tmp / "folder.wav").mkdir() or tmp / "folder.wav",
    text_wav,
    truncated_flac,
], ids=["missing", "empty", "directory", "text-as-wav", "truncated-flac"])
def test_unreadable_files_raise_audio_error_naming_the_path(tmp_path, make_bad):
    path = make_bad(tmp_path)
    with pytest.raises(AudioError) as error:
        load_audio(path)
    message = str(error.value)
    assert str(path) in message
    assert "\n" not in message
    assert isinstance(error.value, AsrError)


@pytest.mark.parametrize("make_bad", [lambda tmp: tmp / "missing.wav", empty_file, text_wav],
                         ids=["missing", "empty", "text-as-wav"])
def test_audio_duration_errors_name_the_path(tmp_path, make_bad):
    path = make_bad(tmp_path)
    with pytest.raises(AudioError, match=re.escape(str(path))):
        audio_duration(path)


def test_audio_duration_wav_and_raw(tmp_path):
    wav = FSDD / "recordings" / "7_george_0.wav"
    assert audio_duration(wav) == pytest.approx(soundfile.info(wav).frames / 8000)
    assert audio_duration(AN4_RAW) == pytest.approx(1.0)  # 32000 bytes of 16-bit samples at 16 kHz
    assert audio_duration(AN4_RAW, raw=RawFormat(sample_rate=8000)) == pytest.approx(2.0)
    copy = tmp_path / "clip.PCM"  # the raw suffix is matched case-insensitively
    shutil.copyfile(AN4_RAW, copy)
    assert audio_duration(copy) == pytest.approx(1.0)


def test_resampling_to_another_rate():
    samples = load_audio(FSDD / "recordings" / "7_george_0.wav", sample_rate=8000)
    assert len(samples) == soundfile.info(FSDD / "recordings" / "7_george_0.wav").frames


def test_cli_reads_a_file_whose_name_is_not_utf8(tmp_path):
    name = os.fsdecode(b"\xff\xfe.wav")  # as the shell passes $'\xff\xfe.wav'
    shutil.copyfile(FSDD / "recordings" / "7_george_0.wav", tmp_path / name)
    result = run_cli("transcribe", name, "--decoder", "greedy", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "seven"


@pytest.mark.parametrize("shape, expected", [((48_000,), (48_000,)), ((48_000, 2), (48_000, 2)),
                                             ((2, 48_000), (48_000, 2)), ((1, 300), (300, 1)), ((0, 2), (0,))])
def test_samples_first_takes_the_longer_axis_as_time(shape, expected):
    samples = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    oriented = samples_first(samples)
    assert oriented.shape == expected
    if len(shape) == 2 and 0 < shape[0] < shape[1]:
        assert np.array_equal(oriented, samples.T)


@pytest.mark.parametrize("shape, problem", [((2, 2), "2x2"), ((500, 400), "500x400"), ((2, 3, 48_000), "3-dimensional")])
def test_samples_first_refuses_a_layout_it_cannot_tell(shape, problem):
    with pytest.raises(AudioError, match=problem):
        samples_first(np.zeros(shape, dtype=np.float32))


def test_transcribe_takes_channels_first_arrays_as_librosa_returns_them():
    from asr.recognizer import load_model
    from asr.transcribe import transcribe

    recognizer = load_model(device="cpu")
    greedy = recognizer.decoder("greedy")
    samples, rate = soundfile.read(FSDD / "recordings" / "7_george_0.wav", dtype="float32")
    stereo = np.stack([samples, 0.5 * samples])  # (2, samples), as librosa.load(mono=False) gives
    expected = transcribe(recognizer, stereo.T, rate, greedy)
    assert expected.text == "seven"
    channels_first = transcribe(recognizer, stereo, rate, greedy)
    assert channels_first.text == expected.text and channels_first.duration == expected.duration
    with pytest.raises(AudioError, match="cannot tell samples from channels"):
        transcribe(recognizer, np.zeros((300, 300), dtype=np.float32), rate, greedy)


def crashed_recording(path, samples: np.ndarray, rate: int, subtype: str, tail: bool = True) -> None:
    """A WAV as a recorder that crashed leaves it: the RIFF and data sizes still 0, the samples after the header."""
    soundfile.write(path, samples, rate, subtype=subtype)
    data = bytearray(path.read_bytes())
    start = data.index(b"data") + 8
    data[4:8] = data[start - 4:start] = bytes(4)
    path.write_bytes(data if tail else data[:start])


@pytest.mark.parametrize("channels, rate, subtype", [(1, 16_000, "PCM_16"), (2, 48_000, "PCM_24"), (1, 8_000, "FLOAT")])
def test_a_wav_whose_sizes_were_never_written_is_read_to_its_end(tmp_path, channels, rate, subtype):
    path = tmp_path / "crashed.wav"
    samples = tone(rate, 1.5, channels)
    crashed_recording(path, samples, rate, subtype)
    assert soundfile.info(path).frames == 0  # what the header says
    assert audio_duration(path) == pytest.approx(1.5)
    loaded = load_audio(path)
    assert_model_input(loaded, 1.5)
    intact = tmp_path / "intact.wav"
    soundfile.write(intact, samples, rate, subtype=subtype)
    assert np.allclose(loaded, load_audio(intact), atol=1e-6)


def test_a_wav_with_a_chunk_before_its_unsized_data(tmp_path):
    path = tmp_path / "crashed.wav"
    soundfile.write(path, tone(16_000, 1.0), 16_000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    start = data.index(b"data")
    data[4:8] = data[start + 4:start + 8] = bytes(4)
    info = b"LIST" + (5).to_bytes(4, "little") + b"INFO!" + b"\0"  # an odd size, padded to even
    path.write_bytes(data[:start] + info + data[start:])
    assert_model_input(load_audio(path), 1.0)


def test_a_wav_header_with_nothing_after_it_is_empty(tmp_path):
    path = tmp_path / "header-only.wav"
    crashed_recording(path, tone(16_000, 1.0), 16_000, "PCM_16", tail=False)
    with pytest.raises(AudioError, match="contains no audio samples"):
        load_audio(path)
