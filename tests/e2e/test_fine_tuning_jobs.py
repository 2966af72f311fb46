"""OpenAI's fine-tuning API end to end on SmolLM2-135M, through the official `openai` client:
a tenant uploads the code-word data (`purpose="fine-tune"`), creates a bounded job (rank-8 LoRA
on q and v, 1 epoch, batch 4: the data and limits of test_finetune.py), polls it to
`succeeded`, reads its progress events and checkpoints, and then chats with its
`ft:smol:codeword:JOBID` model, which answers held-out paraphrases with the taught fact; the
model is listed for that tenant only, and another tenant gets 404 for it and for the job. A
malformed training file fails validation naming its line; a job is cancelled; a tenant that
cannot pay for a job gets a 402 before anything runs."""

import json
import os
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
