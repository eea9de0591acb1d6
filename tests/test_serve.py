"""Tests of ``keymodels serve``: the JSON API in-process, its numbers against the library's,
request batching, bad input (4xx JSON, never a traceback), path traversal and the command."""

from __future__ import annotations

import http.client
import io
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from keymodels.checkpoint import Checkpoint, save_checkpoint
from keymodels.cli import main
from keymodels.data import preprocess_images
from keymodels.explain import attend, explain, head_maps
from keymodels.runs import load_run, load_seq2seq
from keymodels.seq2seq.translate import translate
from keymodels.serve.app import create_app, running
from keymodels.serve.service import Batcher, ServerBusyError, run_names
from test_cli_explain import write_run
from test_seq2seq_cli import TINY

SECRET = "top-secret-contents-never-served"


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serve")
    image = write_run(root / "vit")
    (image / "samples").mkdir()
    rng = np.random.default_rng(0)
    (image / "samples" / "digit.png").write_bytes(png(rng.integers(0, 256, (8, 8), np.uint8)))
    (image / "metrics.csv").write_text("epoch,train_loss,val_acc\n1,2.0,0.5\n2,1.5,0.75\n")
    (root / "secret.txt").write_text(SECRET)  # beside the runs: must never be reachable

    transformer = root / "transformer"
    args = ["seq2seq", "train", *TINY, "--arch", "transformer", "--model", "transformer_tiny"]
    assert main([*args, "--epochs", "1", "--train-size", "200", "--out", str(transformer)]) == 0
    rnn = root / "rnn"
    args = ["seq2seq", "train", *TINY, "--model", "seq2seq_tiny_attn", "--epochs", "1"]
    assert main([*args, "--train-size", "200", "--out", str(rnn)]) == 0

    from keymodels import create_model

    cnn = root / "cnn"
    cnn.mkdir()
    model = create_model("resnet10_28")
    meta = {
        "model_name": "resnet10_28", "config": model.config.to_dict(),
        "class_names": [str(i) for i in range(10)], "mean": [0.5], "std": [0.25],
        "img_size": [28, 28], "in_chans": 1,
    }  # fmt: skip
    save_checkpoint(cnn / "best.safetensors", Checkpoint(model=model.state_dict(), meta=meta))
    return {"root": root, "vit": image, "transformer": transformer, "rnn": rnn, "cnn": cnn}


@pytest.fixture(scope="module")
def app(runs):
    # fp32 so that the server's numbers can be compared with the library's exactly
    folders = [runs["vit"], runs["transformer"], runs["rnn"], runs["cnn"]]
    return create_app(folders, precision="fp32", max_upload_bytes=200_000, max_pixels=1_000_000)


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


def digit() -> bytes:
    return png(np.random.default_rng(1).integers(0, 256, (8, 8), np.uint8))


def upload(data: bytes, name: str = "digit.png") -> dict:
    return {"image": (name, data, "image/png")}


def assert_json_error(response, status: int, *fragments: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "status"} and body["status"] == status
    assert "Traceback" not in body["error"]
    for fragment in fragments:
        assert fragment in body["error"], body["error"]
    return body["error"]


# -- the runs and their cards ---------------------------------------------------------------------


def test_runs_are_listed_by_folder_name_with_their_kind(client):
    runs = client.get("/api/runs").json()["runs"]
    assert [(r["name"], r["kind"]) for r in runs] == [
        ("vit", "image"), ("transformer", "translation"), ("rnn", "translation"),
        ("cnn", "image"),
    ]  # fmt: skip


def test_run_names_are_unique():
    assert run_names(["a/run", "b/run", "c/other", "d/run"]) == ["run", "run-2", "other", "run-3"]


def test_image_card(client, runs):
    card = client.get("/api/runs/vit").json()
    model, _ = load_run(runs["vit"])
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["grid"] == [4, 4] and card["layers"] == 2 and card["heads"] == 2
    assert card["classes"] == [str(i) for i in range(10)] and card["has_attention"]
    assert card["readout"] == "the class token's row" and card["precision"] == "fp32"
    assert card["curves"] == {
        "columns": ["epoch", "train_loss", "val_acc"],
        "rows": [[1, 2, 0.5], [2, 1.5, 0.75]],
    }
    assert card["samples"] == ["digit.png"]
    sample = client.get("/api/runs/vit/samples/digit.png")
    assert sample.headers["content-type"] == "image/png"
    assert sample.content == (runs["vit"] / "samples" / "digit.png").read_bytes()


def test_translation_cards(client):
    card = client.get("/api/runs/transformer").json()
    assert card["arch"] == "transformer" and card["layers"] == 2 and card["heads"] == 2
    assert len(card["examples"]) == 6 and all(card["examples"])  # the synthetic task's val split
    assert card["curves"]["columns"][0] == "epoch" and len(card["curves"]["rows"]) == 1
    rnn = client.get("/api/runs/rnn").json()
    assert rnn["arch"] == "rnn" and (rnn["layers"], rnn["heads"]) == (1, 1) and rnn["has_attention"]


# -- image models: the same numbers as the library ------------------------------------------------


def library_input(runs) -> tuple[torch.nn.Module, dict, torch.Tensor]:
    model, info = load_run(runs["vit"])
    return model, info, preprocess_images([Image.open(io.BytesIO(digit()))], info)


def test_predict_gives_the_library_probabilities_rollout_and_head_maps(client, runs):
    answer = client.post("/api/runs/vit/predict", files=upload(digit()), data={"top_k": "3"})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    model, _, x = library_input(runs)
    probs = model(x).softmax(-1)[0]
    top = probs.topk(3)
    assert [t["index"] for t in answer["top"]] == top.indices.tolist()
    np.testing.assert_allclose([t["prob"] for t in answer["top"]], top.values.tolist(), atol=1e-6)
    rollout = explain(model, x, "rollout").maps[0]
    np.testing.assert_allclose(answer["rollout"], rollout.numpy(), atol=1e-5)
    _, attentions, query = attend(model, x)
    heads = np.array(answer["heads"])
    assert heads.shape == (2, 2, 4, 4)
    for layer in range(2):
        expected = head_maps(attentions, (4, 4), layer, None, 1, "token", query)[0]
        np.testing.assert_allclose(heads[layer], expected.numpy(), atol=1e-5)
    picture = Image.open(io.BytesIO(__import__("base64").b64decode(answer["input"].split(",")[1])))
    assert picture.size == (8, 8)


def test_explain_methods_give_the_library_maps(client, runs):
    model, _, x = library_input(runs)
    _, attentions, _ = attend(model, x)

    def ask(**fields: str) -> np.ndarray:
        r = client.post("/api/runs/vit/explain", files=upload(digit()), data=fields)
        assert r.status_code == 200, r.text
        return np.array(r.json()["map"])

    np.testing.assert_allclose(ask(method="rollout"), explain(model, x).maps[0], atol=1e-5)
    heads = explain(model, x, "heads", layer=0, head=1).maps[0]
    expected_head = attentions[0][0, 1, 0, 1:].reshape(4, 4)  # the class token's row, by hand
    np.testing.assert_allclose(heads, expected_head / expected_head.sum(), atol=1e-6)
    np.testing.assert_allclose(ask(method="heads", layer="0", head="1"), expected_head, atol=1e-5)
    # patch 5 (row 1, column 1): that token's own row, its weights on the 16 patches; mean of heads
    row = attentions[-1][0, :, 1 + 5, 1:].mean(0).reshape(4, 4)
    np.testing.assert_allclose(ask(method="patch", layer="-1", head="", patch="5"), row, atol=1e-5)
    grad = explain(model, x, "grad-rollout", class_index=3).maps[0]
    r = client.post(
        "/api/runs/vit/explain",
        files=upload(digit()),
        data={"method": "grad-rollout", "class_index": "3"},
    )
    assert r.json()["class"] == "3"
    np.testing.assert_allclose(r.json()["map"], grad, atol=1e-5)


def test_a_cnn_run_predicts_but_has_no_maps(client):
    r = client.post("/api/runs/cnn/predict", files=upload(digit()))
    assert r.status_code == 200 and len(r.json()["top"]) == 5 and "rollout" not in r.json()
    assert client.get("/api/runs/cnn").json()["has_attention"] is False
    assert_json_error(
        client.post("/api/runs/cnn/explain", files=upload(digit())), 400, "no attention to show"
    )


# -- translation models ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["transformer", "rnn"])
def test_translate_gives_the_library_translation_and_alignment(client, runs, name):
    answer = client.post(
        f"/api/runs/{name}/translate", json={"text": "1 2 3 4", "beam": 3, "n_best": 2}
    )
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    expected = translate(load_seq2seq(runs[name]), ["1 2 3 4"], beam=3, n_best=2)[0]
    assert answer["translation"] == expected.text
    assert [h["text"] for h in answer["n_best"]] == [expected.text, expected.alternatives[0][0]]
    assert answer["source_tokens"] == ["1", "2", "3", "4", "<eos>"]
    attention = np.array(answer["attention"])
    assert attention.shape == (len(answer["target_tokens"]), 5)
    np.testing.assert_allclose(attention.sum(1), 1.0, atol=1e-4)  # each row: softmax over source
    if name == "rnn":
        assert answer["cross_attention"] is None
        return
    cross = np.array(answer["cross_attention"])  # [L, H, T, S], teacher-forced on the output
    assert cross.shape == (2, 2, *attention.shape)
    np.testing.assert_allclose(cross[-1].mean(0), attention, atol=1e-4)


# -- batching -------------------------------------------------------------------------------------


def test_batcher_runs_waiting_jobs_together_and_fails_only_the_bad_group():
    gate, calls = threading.Event(), []

    def handle(key, payloads):
        gate.wait()
        calls.append((key, list(payloads)))
        if key == "bad":
            raise ValueError("broken group")
        return [p * 10 for p in payloads]

    batcher = Batcher(handle, max_batch=8)
    first = batcher.submit("a", 0)  # the worker takes it and waits at the gate
    while batcher._queue.qsize():
        time.sleep(0.01)
    waiting = [batcher.submit("a", i) for i in (1, 2, 3)] + [batcher.submit("bad", 9)]
    waiting.append(batcher.submit("a", 4))
    gate.set()
    assert first.result(5) == 0 and [f.result(5) for f in waiting[:3]] == [10, 20, 30]
    assert waiting[4].result(5) == 40
    with pytest.raises(ValueError, match="broken group"):
        waiting[3].result(5)
    assert calls == [("a", [0]), ("a", [1, 2, 3, 4]), ("bad", [9])]
    batcher.close()
    with pytest.raises(ServerBusyError, match="worker has stopped"):
        batcher.submit("a", 5)


def test_concurrent_requests_are_batched_and_answer_as_alone(app, client):
    service = app.state.services["vit"]
    alone = client.post("/api/runs/vit/predict", files=upload(digit())).json()
    handle, gate, entered = service.batcher.handle, threading.Event(), threading.Event()

    def gated(key, payloads):
        entered.set()
        gate.wait()
        return handle(key, payloads)

    service.batcher.handle = gated
    sizes_before = len(service.batcher.batch_sizes)
    try:
        with ThreadPoolExecutor(6) as pool:

            def post():
                return pool.submit(client.post, "/api/runs/vit/predict", files=upload(digit()))

            try:
                futures = [post()]
                assert entered.wait(20)  # the worker holds the first request
                futures += [post() for _ in range(5)]
                deadline = time.monotonic() + 20
                while service.batcher._queue.qsize() < 5 and time.monotonic() < deadline:
                    time.sleep(0.01)
            finally:
                gate.set()  # never leave the pool's threads waiting, even when an assert failed
            answers = [f.result(20).json() for f in futures]
    finally:
        service.batcher.handle = handle
    sizes = list(service.batcher.batch_sizes)[sizes_before:]
    assert sizes == [1, 5]  # one ran alone while the other five waited, then together
    for answer in answers:
        assert [t["index"] for t in answer["top"]] == [t["index"] for t in alone["top"]]
        np.testing.assert_allclose(answer["rollout"], alone["rollout"], atol=1e-5)
        np.testing.assert_allclose(answer["heads"], alone["heads"], atol=1e-5)


# -- bad input: a 4xx JSON error that says what was wrong ------------------------------------------


def truncated_png() -> bytes:
    return png(np.full((64, 64), 7, np.uint8))[:60]


BAD_IMAGE_REQUESTS = [
    ("non-image upload", {"files": upload(b"hello, not an image")}, 400, "cannot decode image"),
    ("truncated png", {"files": upload(truncated_png())}, 400, "truncated"),
    ("empty file", {"files": upload(b"")}, 400, "empty"),
    ("nothing sent", {"data": {"top_k": "3"}}, 400, "send an image file"),
    ("unknown sample", {"data": {"sample": "nope.png"}}, 404, "no sample 'nope.png'"),
    ("sample outside", {"data": {"sample": "../../secret.txt"}}, 404, "no sample"),
    ("top_k 0", {"files": upload(digit()), "data": {"top_k": "0"}}, 400, "top_k must be 1..100"),
    ("top_k text", {"files": upload(digit()), "data": {"top_k": "three"}}, 400, "top_k must be a whole number"),
    ("over the pixel cap", {"files": upload(png(np.zeros((1100, 1000), np.uint8)))}, 400, "pixel cap"),
    ("over the upload cap", {"files": upload(b"\x89PNG" + bytes(300_000))}, 413, "over the server's limit"),
]  # fmt: skip


@pytest.mark.parametrize(
    "case, request_args, status, fragment",
    BAD_IMAGE_REQUESTS,
    ids=[c[0] for c in BAD_IMAGE_REQUESTS],
)
def test_bad_image_requests(client, case, request_args, status, fragment):
    assert_json_error(client.post("/api/runs/vit/predict", **request_args), status, fragment)


BAD_EXPLAIN_FIELDS = [
    ({"method": "heads", "layer": "2"}, "layer 2 is out of range: the model has 2 blocks"),
    ({"method": "heads", "layer": "-3"}, "layer -3 is out of range"),
    ({"method": "heads", "head": "5"}, "head 5 is out of range: the model has 2 heads"),
    ({"method": "patch"}, "needs a patch index, 0..15"),
    ({"method": "patch", "patch": "16"}, "patch 16 is out of range: the grid is 4×4"),
    ({"method": "grad-rollout", "class_index": "10"}, "class 10 is out of range: the model has 10 classes"),
    ({"method": "magic"}, "method must be one of rollout, heads, grad-rollout, patch"),
    ({"method": "heads", "layer": "1.5"}, "layer must be a whole number"),
]  # fmt: skip


@pytest.mark.parametrize("fields, fragment", BAD_EXPLAIN_FIELDS)
def test_bad_explain_fields(client, fields, fragment):
    r = client.post("/api/runs/vit/explain", files=upload(digit()), data=fields)
    assert_json_error(r, 400, fragment)


BAD_TRANSLATIONS = [
    ({"text": ""}, 400, "empty or whitespace-only"),
    ({"text": "   "}, 400, "empty or whitespace-only"),
    ({"text": "1 " * 1500}, 400, "more than the server's limit of 2,000"),
    ({"text": " ".join(["1"] * 300)}, 400, "more than this model's maximum"),
    ({"text": "1\x00 2"}, 400, "U+0000"),
    ({"text": "1 2", "beam": 0}, 422, "beam: Input should be greater than or equal to 1"),
    ({"text": "1 2", "beam": 2, "n_best": 3}, 400, "n_best must be 1..beam (2)"),
    ({"text": "1 2", "too_long": "drop"}, 422, "too_long"),
    ({"text": "1 2", "alpha": 1000}, 422, "alpha: Input should be less than or equal to 5"),
    ({"text": "1 2", "alpha": -1}, 422, "alpha: Input should be greater than or equal to 0"),
    ({"beam": 2}, 422, "text: Field required"),
    ({"text": 5}, 422, "text: Input should be a valid string"),
]


@pytest.mark.parametrize("body, status, fragment", BAD_TRANSLATIONS)
def test_bad_translation_requests(client, body, status, fragment):
    assert_json_error(client.post("/api/runs/transformer/translate", json=body), status, fragment)


def test_malformed_json_and_wrong_run_kind(client):
    r = client.post(
        "/api/runs/rnn/translate",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert_json_error(r, 422, "invalid request")
    assert_json_error(
        client.post("/api/runs/vit/translate", json={"text": "a"}), 400, "image model"
    )
    assert_json_error(
        client.post("/api/runs/rnn/predict", files=upload(digit())), 400, "translation model"
    )
    assert_json_error(
        client.get("/api/runs/nope"), 404, "no run named 'nope'; this server serves: vit"
    )
    assert_json_error(
        client.post("/api/runs/nope/predict", files=upload(digit())), 404, "no run named"
    )
    assert_json_error(client.get("/api/nothing"), 404, "no such page or API route")
    assert_json_error(client.delete("/api/runs/vit"), 405, "Method Not Allowed")


def test_decompression_bomb_at_the_default_pixel_cap(runs):
    from keymodels.serve.service import SERVE_MAX_PIXELS

    app = create_app([runs["vit"]], precision="fp32")  # the server's default caps
    bomb = io.BytesIO()
    Image.new("L", (5_000, 4_000)).save(bomb, format="PNG")  # 20 Mpx in ~20 kB
    assert 20_000_000 > SERVE_MAX_PIXELS and len(bomb.getvalue()) < 100_000
    r = TestClient(app).post("/api/runs/vit/predict", files=upload(bomb.getvalue(), "bomb.png"))
    assert_json_error(r, 400, "bomb.png", "pixel cap of 16,000,000")


def test_a_model_with_too_many_waiting_requests_answers_503(runs):
    from keymodels.serve.service import Batcher

    app = create_app([runs["vit"]], precision="fp32")
    service = app.state.services["vit"]
    gate, entered = threading.Event(), threading.Event()

    def held(key, jobs):
        entered.set()
        gate.wait()
        return [{} for _ in jobs]

    service.batcher.close()
    service.batcher = Batcher(held, max_batch=1, max_queue=2)
    client = TestClient(app)

    def post():
        return client.post("/api/runs/vit/predict", files=upload(digit()))

    with ThreadPoolExecutor(3) as pool:
        try:
            waiting = [pool.submit(post)]
            assert entered.wait(20)  # the worker holds the first request; the queue is empty
            waiting += [pool.submit(post) for _ in range(2)]
            deadline = time.monotonic() + 20
            while service.batcher._queue.qsize() < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert_json_error(post(), 503, "requests are waiting for this model (the limit is 2)")
        finally:
            gate.set()  # never leave the pool's threads waiting, even when an assert failed
        assert [f.result(20).status_code for f in waiting] == [200, 200, 200]


def test_a_sample_removed_after_start_is_a_404(runs, tmp_path):
    import shutil

    folder = shutil.copytree(runs["vit"], tmp_path / "vit")
    client = TestClient(create_app([folder], precision="fp32"))
    (folder / "samples" / "digit.png").unlink()
    r = client.post("/api/runs/vit/predict", data={"sample": "digit.png"})
    assert_json_error(r, 404, "sample 'digit.png' cannot be read")


def test_an_internal_error_is_a_json_500_without_traceback(app, monkeypatch):
    service = app.state.services["vit"]

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /home/user/model.py line 3")

    monkeypatch.setattr(service, "predict", broken)
    r = TestClient(app, raise_server_exceptions=False).post(
        "/api/runs/vit/predict", files=upload(digit())
    )
    error = assert_json_error(r, 500, "internal error (RuntimeError)")
    assert "secret internals" not in error


# -- nothing on disk is reachable but the runs' own samples ----------------------------------------

TRAVERSALS = [
    "/static/../secret.txt",
    "/static/..%2F..%2F..%2Fsecret.txt",
    "/static/%2e%2e/%2e%2e/app.py",
    "/static/..%5capp.py",
    "/api/runs/vit/samples/..%2F..%2Fsecret.txt",
    "/api/runs/vit/samples/%2e%2e%2fbest.safetensors",
    "/api/runs/vit/samples/..%2Fbest.safetensors",
    "/api/runs/..%2Fsecret.txt",
    "/api/runs/%2e%2e/samples/secret.txt",
    "/api/runs/vit/samples/%2Fetc%2Fpasswd",
    "/..%2F..%2Fsecret.txt",
    "/secret.txt",
    "/static/index.html/../../service.py",
]


@pytest.fixture(scope="module")
def server(app) -> Iterator[str]:
    with running(app) as url:
        yield url


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_path_traversal(server, path):
    # A raw request line, as an attacker's client sends it (HTTP libraries would normalise "../")
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read().decode(errors="replace")
    connection.close()
    assert response.status in (400, 404), (path, response.status, body)
    assert SECRET not in body and "import" not in body and "root:" not in body
    assert response.getheader("content-type") == "application/json"


def test_static_files_and_page(client):
    assert client.get("/").headers["content-type"].startswith("text/html")
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert_json_error(client.get("/static/index.html"), 404, "no static file")
    assert client.get("/openapi.json").json()["paths"]["/api/runs/{run}/translate"]


# -- the command ----------------------------------------------------------------------------------


def test_serve_command_binds_locally_and_warns_when_exposed(runs, monkeypatch, capsys, caplog):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    with caplog.at_level(logging.WARNING, logger="keymodels.serve"):
        assert main(["serve", str(runs["vit"]), "--precision", "fp32"]) == 0
        assert not caplog.records
        assert (
            main(
                [
                    "serve",
                    str(runs["vit"]),
                    "--host",
                    "0.0.0.0",
                    "--port",
                    "8000",
                    "--precision",
                    "fp32",
                ]
            )
            == 0
        )
    assert calls == [
        {"host": "127.0.0.1", "port": 7860, "log_level": "warning"},
        {"host": "0.0.0.0", "port": 8000, "log_level": "warning"},
    ]
    assert "anyone who can reach this machine" in caplog.text
    assert "serving vit at http://127.0.0.1:7860" in capsys.readouterr().out


def test_the_demo_prints_a_serve_command_for_its_runs(runs, monkeypatch, capsys):
    import uvicorn

    from keymodels.cli.demo import SERVED, serve_command

    command = serve_command(runs["root"]).split()
    assert command[1:] == ["serve", *(str(runs["root"] / run) for run in SERVED)]
    # the command works on runs of those kinds
    (runs["root"] / "seq2seq").mkdir(exist_ok=True)
    for source, name in ((runs["vit"], "vit-digits"), (runs["rnn"], "seq2seq/attention")):
        target = runs["root"] / name
        if not target.exists():
            target.symlink_to(source, target_is_directory=True)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    assert main([*command[1:], "--precision", "fp32"]) == 0
    assert "serving vit-digits, attention at http://127.0.0.1:7860" in capsys.readouterr().out


def test_a_tta_run_predicts_with_mirrors_and_maps_the_image_as_given(runs, tmp_path):
    from keymodels.checkpoint import load_checkpoint

    ckpt = load_checkpoint(runs["vit"] / "best.safetensors")
    ckpt.meta["recipe"] = {"tta": True, "augment": {"hflip": True}}  # as `train --tta` records
    save_checkpoint(tmp_path / "vit-tta" / "best.safetensors", ckpt)
    client = TestClient(create_app([tmp_path / "vit-tta"], precision="fp32"))
    assert client.get("/api/runs/vit-tta").json()["tta"] is True
    answer = client.post("/api/runs/vit-tta/predict", files=upload(digit()), data={"top_k": "3"})
    assert answer.status_code == 200, answer.text
    answer = answer.json()
    model, _, x = library_input(runs)
    with torch.no_grad():
        probs = ((model(x) + model(x.flip(-1))) / 2).softmax(-1)[0]
        assert (probs - model(x).softmax(-1)[0]).abs().max() > 1e-3  # the two readings differ
    top = probs.topk(3)
    assert [t["index"] for t in answer["top"]] == top.indices.tolist()
    np.testing.assert_allclose([t["prob"] for t in answer["top"]], top.values.tolist(), atol=1e-6)
    np.testing.assert_allclose(answer["rollout"], explain(model, x, "rollout").maps[0], atol=1e-5)
