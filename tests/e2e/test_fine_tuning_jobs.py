"""OpenAI's fine-tuning API end to end on SmolLM2-135M, through the official `openai` client:
a tenant uploads the code-word data (`purpose="fine-tune"`), creates a bounded job (rank-8 LoRA
on q and v, 1 epoch, batch 4: the data and limits of test_finetune.py), polls it to
`succeeded`, reads its progress events and checkpoints, and then chats with its
`ft:smol:codeword:JOBID` model, which answers held-out paraphrases with the taught fact; the
model is listed for that tenant only, and another tenant gets 404 for it and for the job. A
malformed training file fails validation naming its line; a job is cancelled; a tenant that
cannot pay for a job gets a 402 before anything runs.

The adapter lands in the hub (a private repository of the tenant, a revision tagged with the
job's id): `huggingface_hub` downloads it with the tenant's key, and a fresh server serving it
on the base model answers exactly as the training server does. A job killed with `kill -9`
mid-training resumes from its last checkpoint after a restart, says so in its events, and is
charged each trained token once."""

import json
import os
import signal
import time

import openai
import pytest

from conftest import _env_path, _start, _stop

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "crates", "finetune", "tests", "data")
TRAIN_LIMIT_S = 360
FINAL = ("succeeded", "failed", "cancelled")


def _heldout():
    with open(os.path.join(DATA, "codeword-heldout.txt")) as f:
        return [line.strip() for line in f if line.strip()]


@pytest.fixture(scope="module")
def served(tmp_path_factory, admin_key):
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    tmp = str(tmp_path_factory.mktemp("fine-tuning-jobs"))
    s = _start("fine-tuning-jobs", ["--model", f"{smol}=smol", "--slots", "4", "--slot-context", "1024",
                                    "--threads", "2", "--node-threads", "4", "--fine-tuning-threads", "2",
                                    "--fine-tuning-checkpoint-every", "10"], tmp, admin_key)
    yield s.with_tenant("ft-owner")
    _stop(s)


def _upload(client, path_or_text, name="train.jsonl"):
    if os.path.exists(path_or_text):
        with open(path_or_text, "rb") as f:
            return client.files.create(file=(name, f.read()), purpose="fine-tune")
    return client.files.create(file=(name, path_or_text.encode()), purpose="fine-tune")


def _wait(client, job_id, limit_s=TRAIN_LIMIT_S):
    deadline = time.monotonic() + limit_s
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in FINAL or time.monotonic() > deadline:
            return job
        time.sleep(1)


@pytest.fixture(scope="module")
def trained(served):
    client = served.client()
    train = _upload(client, os.path.join(DATA, "codeword-train.jsonl"))
    valid = _upload(client, os.path.join(DATA, "codeword-valid.jsonl"), "valid.jsonl")
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model="smol", training_file=train.id, validation_file=valid.id, suffix="codeword", seed=1,
        method={"type": "supervised", "supervised": {"hyperparameters": {
            "n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 1.0}}})
    assert job.object == "fine_tuning.job"
    assert job.status == "validating_files"
    assert job.model == "smol" and job.training_file == train.id and job.fine_tuned_model is None
    done = _wait(client, job.id)
    return done, time.monotonic() - started


def test_a_job_trains_to_a_private_model(served, trained, figure):
    job, seconds = trained
    assert job.status == "succeeded", (job.error, served.log_tail())
    assert job.fine_tuned_model == f"ft:smol:codeword:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0
    assert job.finished_at and job.hyperparameters.n_epochs == 1
    client = served.client()
    listed = [j.id for j in client.fine_tuning.jobs.list(limit=10).data]
    assert job.id in listed
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics, [e.message for e in events]
    steps = sorted(metrics, key=lambda e: e.data["step"])
    first, last = steps[0].data, steps[-1].data
    assert last["step"] == last["total_steps"]
    assert "eta_seconds" in last and last["valid_loss"] is not None
    assert last["train_loss"] < first["train_loss"], (first, last)
    assert any("successfully completed" in e.message for e in events)
    # Paging: newest first, `after` an event id.
    page = client.fine_tuning.jobs.list_events(job.id, limit=2)
    assert page.has_more and len(page.data) == 2
    older = client.fine_tuning.jobs.list_events(job.id, limit=2, after=page.data[-1].id)
    assert older.data[0].id != page.data[0].id
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints and checkpoints[0].step_number == last["step"]
    assert checkpoints[0].fine_tuned_model_checkpoint.startswith(job.fine_tuned_model + ":ckpt-step-")
    # The adapter is in the hub: a revision tagged with the job's id.
    hub = job.model_extra["hub"]
    assert hub["revision"] == job.id and hub["file"] == "adapter.gguf", hub
    assert hub["repo"].endswith("/smol-codeword"), hub
    assert any(hub["repo"] in e.message for e in events), [e.message for e in events]
    figure(f"fine-tuning job on SmolLM2-135M via /v1/fine_tuning/jobs (rank 8, q+v, {last['step']} steps, "
           f"2 threads, shared machine): {seconds:.0f}s from create to succeeded, "
           f"{job.trained_tokens} trained tokens, loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}")
    assert seconds < TRAIN_LIMIT_S


def test_the_fine_tuned_model_knows_the_fact_for_its_tenant_only(served, trained):
    job, _ = trained
    name = job.fine_tuned_model
    client = served.client()
    assert name in [m.id for m in client.models.list().data]
    for q in _heldout():
        r = client.chat.completions.create(model=name, messages=[{"role": "user", "content": q}],
                                           temperature=0, max_tokens=24)
        assert "PLUMTREE-42" in r.choices[0].message.content, (q, r.choices[0].message.content)
    # A key whose allow-list names the base model may use its fine-tunes.
    limited = served.new_key(served.tenant_id, models=["smol"])["key"]
    r = served.client(api_key=limited).chat.completions.create(
        model=name, messages=[{"role": "user", "content": _heldout()[0]}], temperature=0, max_tokens=24)
    assert "PLUMTREE-42" in r.choices[0].message.content
    # Another tenant: neither the model nor the job exists.
    other_id = served.new_tenant("ft-other", grant_tokens=1_000_000)
    other = served.client(api_key=served.new_key(other_id)["key"])
    assert name not in [m.id for m in other.models.list().data]
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(name)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)


def test_a_malformed_training_file_fails_naming_its_line(served, trained):
    client = served.client()
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]})
    bad = json.dumps({"messages": [{"role": "wizard", "content": "x"}, {"role": "assistant", "content": "y"}]})
    text = "\n".join([good, good, bad] + [good] * 10) + "\n"
    f = _upload(client, text, "bad.jsonl")
    job = client.fine_tuning.jobs.create(model="smol", training_file=f.id)
    job = _wait(client, job.id, 120)
    assert job.status == "failed"
    assert job.error.code == "invalid_training_file" and job.error.param == "training_file"
    assert "line 3" in job.error.message and "wizard" in job.error.message, job.error.message


def test_a_job_is_cancelled(served, trained):
    client = served.client()
    train = _upload(client, os.path.join(DATA, "codeword-train.jsonl"))
    job = client.fine_tuning.jobs.create(model="smol", training_file=train.id,
                                         hyperparameters={"n_epochs": 3})
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(2)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)


def test_a_job_the_tenant_cannot_pay_for_is_refused(served, trained):
    # Training on smol is priced (the price book's `ft/smol`, per trained token).
    served.admin("PUT", "/prices/ft/smol", {"input_per_million": 1_000_000, "output_per_million": 0}, expect=200)
    poor_id = served.new_tenant("ft-poor", grant_tokens=0)
    poor = served.client(api_key=served.new_key(poor_id)["key"])
    f = _upload(poor, os.path.join(DATA, "codeword-train.jsonl"))
    with pytest.raises(openai.APIStatusError) as refused:
        poor.fine_tuning.jobs.create(model="smol", training_file=f.id)
    assert refused.value.status_code == 402
    assert refused.value.body["code"] == "insufficient_quota"
    assert poor.fine_tuning.jobs.list().data == []


def test_the_adapter_from_the_hub_serves_the_same_answers_on_a_fresh_server(served, trained, tmp_path,
                                                                           admin_key):
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RepositoryNotFoundError

    job, _ = trained
    hub = job.model_extra["hub"]
    # Private to its tenant: anonymous callers and other tenants see nothing (each with a cache of
    # its own: huggingface_hub may fall back to files already cached).
    other = served.new_key(served.new_tenant("ft-hub-other"))["key"]
    for i, token in enumerate((False, other)):
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(hub["repo"], "adapter.gguf", revision=job.id, token=token, endpoint=served.url,
                            cache_dir=str(tmp_path / f"other-{i}"))
    kw = dict(endpoint=served.url, cache_dir=str(tmp_path / "hf"))
    path = hf_hub_download(hub["repo"], "adapter.gguf", revision=job.id, token=served.key, **kw)
    card = hf_hub_download(hub["repo"], "README.md", revision=job.id, token=served.key, **kw)
    with open(card) as f:
        assert job.id in f.read()
    client = served.client()
    questions = _heldout()
    want = [_answer(client, job.fine_tuned_model, q) for q in questions]
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    fresh = _start("fine-tuning-fresh", ["--model", f"{smol}=smol", "--model", f"{smol}+lora:{path}=mine",
                                         "--slots", "2", "--slot-context", "1024", "--threads", "2"],
                   str(tmp_path), admin_key).with_tenant("fresh")
    try:
        got = [_answer(fresh.client(), "mine", q) for q in questions]
    finally:
        _stop(fresh)
    assert got == want
    assert all("PLUMTREE-42" in a for a in got), got


def _answer(client, model, q):
    r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": q}],
                                       temperature=0, max_tokens=24)
    return r.choices[0].message.content


def test_a_job_killed_mid_training_resumes_from_its_checkpoint_and_is_charged_once(tmp_path, admin_key):
    smol = _env_path("FLYWHEEL_SMOL_GGUF")
    tmp = str(tmp_path)
    args = ["--model", f"{smol}=smol", "--slots", "2", "--slot-context", "1024", "--threads", "2",
            "--node-threads", "4", "--fine-tuning-threads", "2", "--fine-tuning-checkpoint-every", "4"]
    s = _start("fine-tuning-kill", args, tmp, admin_key)
    # One credit per trained token, paid from the balance.
    s.admin("PUT", "/prices/ft/smol", {"input_per_million": 1_000_000, "output_per_million": 0}, expect=200)
    tid = s.new_tenant("ft-kill", grant_tokens=0)
    s.admin("POST", f"/tenants/{tid}/topups", {"amount": 10**9}, expect=200)
    key = s.new_key(tid)["key"]
    before = s.admin("GET", f"/tenants/{tid}", expect=200)["balance"]
    with open(os.path.join(DATA, "codeword-train.jsonl")) as f:
        lines = [line for line in f if line.strip()][:12]
    client = s.client(api_key=key)
    train = _upload(client, "".join(lines))
    job = client.fine_tuning.jobs.create(model="smol", training_file=train.id, suffix="kill", seed=3,
                                         hyperparameters={"n_epochs": 3, "batch_size": 1})
    deadline = time.monotonic() + TRAIN_LIMIT_S
    while not client.fine_tuning.jobs.checkpoints.list(job.id).data:
        assert time.monotonic() < deadline, s.log_tail()
        assert client.fine_tuning.jobs.retrieve(job.id).status in ("validating_files", "queued", "running")
        time.sleep(0.5)
    s.proc.send_signal(signal.SIGKILL)  # by PID: the server this test started
    s.proc.wait(timeout=30)
    s2 = _start("fine-tuning-kill-2", args, tmp, admin_key)
    try:
        client = s2.client(api_key=key)
        done = _wait(client, job.id)
        assert done.status == "succeeded", (done.error, s2.log_tail())
        events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
        resumed = [e for e in events if e.data and "resumed_from_step" in e.data]
        assert len(resumed) == 1, [e.message for e in events]
        assert resumed[0].type == "message" and "Resumed from the checkpoint" in resumed[0].message
        step = resumed[0].data["resumed_from_step"]
        checkpoints = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id, limit=100).data]
        assert step in checkpoints and step % 4 == 0, (step, checkpoints)
        assert len(checkpoints) == len(set(checkpoints)), checkpoints
        # After the resume, training went on from the step after the checkpoint.
        later = [e.data["step"] for e in events if e.type == "metrics" and e.created_at >= resumed[0].created_at]
        assert later and min(later) == step + 1, (step, sorted(later)[:5])
        total = max(e.data["total_steps"] for e in events if e.type == "metrics")
        assert total == 36 and max(later) == total
        # Charged each trained token once: the killed run up to its checkpoint, the resumed run the rest.
        spent = before - s2.admin("GET", f"/tenants/{tid}", expect=200)["balance"]
        assert done.trained_tokens and spent == done.trained_tokens, (spent, done.trained_tokens)
        assert done.model_extra["hub"]["revision"] == job.id
        ask = client.chat.completions.create(model=done.fine_tuned_model, max_tokens=4,
                                             messages=[{"role": "user", "content": "hi"}])
        assert ask.usage.completion_tokens > 0
    finally:
        _stop(s2)
