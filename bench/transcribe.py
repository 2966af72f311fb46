"""Transcription speed: Flywheel's /v1/audio/transcriptions (Whisper base on candle, converted
by `flywheel convert`) vs faster-whisper (CTranslate2) on the same CTranslate2 weights, the same
audio and the same CPU threads, both greedy at temperature 0 with the language given and no
VAD, both computing in float32.

The audio: a ~60 s English paragraph spoken by espeak-ng (two 30-second windows and more).
Each side transcribes it `--runs` times after one warm-up; the figure is the best wall time,
from the request (Flywheel: one HTTP POST, decoding included; faster-whisper: `transcribe()`
from the file, decoding included, segments consumed) to the whole text. Real-time factor =
wall / audio seconds (lower is faster); ratio = faster-whisper's wall / Flywheel's (≥ 1: Flywheel
faster; the issue's goal is ≥ 0.8).

faster-whisper runs in its own cached venv (PyPI `faster-whisper==1.2.1`, `ctranslate2==4.8.5`).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
import wave

sys.path.insert(0, os.path.dirname(__file__))
from common import ADMIN_KEY, free_port, stop, wait_health  # noqa: E402

PARAGRAPH = (
    "The history of computing is a story of people trying to make machines do their thinking "
    "for them. Early mechanical calculators could only add and subtract, but they showed that "
    "arithmetic could be automated. In the nineteenth century, Charles Babbage designed an "
    "analytical engine that could be programmed with punched cards, and Ada Lovelace wrote what "
    "many consider the first computer program for it. A century later, electronic computers "
    "filled entire rooms and used thousands of vacuum tubes that often burned out. The invention "
    "of the transistor made computers smaller, faster and far more reliable. Integrated circuits "
    "then packed many transistors onto a single chip, and personal computers arrived in homes "
    "and offices around the world. Today a phone in your pocket is more powerful than the "
    "machines that guided astronauts to the moon, and researchers are teaching computers to "
    "understand speech, recognise images and translate between languages."
)

FASTER_WHISPER = r"""
import sys, time, json
from faster_whisper import WhisperModel
model_dir, path, threads, runs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
m = WhisperModel(model_dir, device="cpu", compute_type="float32", cpu_threads=threads)
times, text = [], ""
for i in range(runs + 1):
    t = time.perf_counter()
    segs, info = m.transcribe(path, language="en", beam_size=1, temperature=0.0, vad_filter=False)
    text = "".join(s.text for s in segs).strip()
    if i:
        times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "text": text}))
"""


def ensure_venv(venv):
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(py):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "faster-whisper==1.2.1",
                    "ctranslate2==4.8.5", "av==18.1.0"], check=True)
    return py


def transcribe_flywheel(port, path):
    boundary = uuid.uuid4().hex
    with open(path, "rb") as f:
        audio = f.read()
    parts = []
    for name, value in (("model", "whisper"), ("language", "en"), ("temperature", "0")):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + audio + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/transcriptions", data=b"".join(parts),
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                                          "Authorization": f"Bearer {ADMIN_KEY}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=900) as r:
        body = json.load(r)
    return time.perf_counter() - t, body["text"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--flywheel", required=True)
    ap.add_argument("--model", required=True, help="the converted directory Flywheel serves")
    ap.add_argument("--ct2", required=True, help="the CTranslate2 directory faster-whisper loads")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--venv", default=os.path.expanduser("~/.cache/flywheel/venv-bench-stt"))
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    work = tempfile.mkdtemp()
    wav = os.path.join(work, "paragraph.wav")
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", wav, PARAGRAPH], check=True)
    with wave.open(wav) as w:
        seconds = w.getnframes() / w.getframerate()
    print(f"[bench] audio: {seconds:.1f} s, threads: {a.threads}", file=sys.stderr)

    port = free_port()
    log = os.path.join(work, "flywheel.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLYWHEEL_")}
    env["FLYWHEEL_ADMIN_KEY"] = ADMIN_KEY
    proc = subprocess.Popen([a.flywheel, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(work, "fw-data"), "--model", f"{a.model}=whisper", "--slots", "1",
                             "--threads", str(a.threads)], stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    try:
        wait_health(port, proc, log, path="/ready")
        transcribe_flywheel(port, wav)  # warm-up
        ours = [transcribe_flywheel(port, wav) for _ in range(a.runs)]
    finally:
        stop(proc)
    py = ensure_venv(a.venv)
    out = subprocess.run([py, "-c", FASTER_WHISPER, a.ct2, wav, str(a.threads), str(a.runs)], check=True,
                         capture_output=True, text=True)
    theirs = json.loads(out.stdout.strip().splitlines()[-1])

    fw_best = min(t for t, _ in ours)
    ref_best = min(theirs["times"])
    results = {
        "audio_seconds": seconds,
        "threads": a.threads,
        "flywheel": {"best_s": fw_best, "rtf": fw_best / seconds, "runs_s": [t for t, _ in ours],
                     "text": ours[-1][1]},
        "faster_whisper": {"best_s": ref_best, "rtf": ref_best / seconds, "runs_s": theirs["times"],
                           "text": theirs["text"], "version": "faster-whisper 1.2.1, ctranslate2 4.8.5"},
        "ratio": ref_best / fw_best,
        "goal": 0.8,
    }
    with open(a.out, "w") as f:
        json.dump(results, f, indent=2)
    print("| engine | best wall s | real-time factor |")
    print("|---|---|---|")
    print(f"| Flywheel (candle) | {fw_best:.2f} | {fw_best / seconds:.3f} |")
    print(f"| faster-whisper (CTranslate2) | {ref_best:.2f} | {ref_best / seconds:.3f} |")
    print(f"speed ratio (faster-whisper time / Flywheel time): {results['ratio']:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
