"""``diffrestore batch``: resumable folder restoration, its manifest and torchrun sharding, real processes.

Why real processes: the promises are about crashes and concurrency (``kill -9`` mid-run loses and duplicates
nothing, several writers share one manifest, ranks split the images and produce what one process does), which
only show with separate processes. Tiny 16x16 images, SR x2, the stand-in ADM with 2 steps: ~1 s per image.
Torch runs one thread in every process here, so results are comparable bit for bit (torchrun's default).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffrestore.cli.main import main
from diffrestore.io.manifest import Manifest

GOOD = ("a.png", "b.png", "sub/c.png", "sub/d.png")
STATE = ".diffrestore-batch"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_args(refs_dir: Path) -> list[str]:
    return ["--task", "sr", "--scale", "2", "--model", str(refs_dir / "adm_small.safetensors"),
            "--config", str(refs_dir / "adm_small.json"), "--tile", "32", "--steps", "2", "--quiet"]


@pytest.fixture(scope="module")
def in_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 16x16 photos (two in a subfolder), one file that is not an image, one text file to ignore."""
    d = tmp_path_factory.mktemp("batch") / "in"
    (d / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in GOOD:
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(d / name)
    (d / "bad.png").write_bytes(b"this is not a png")
    (d / "notes.txt").write_text("not an input")
    return d


@pytest.fixture(scope="module")
def reference(in_dir: Path, model_args: list[str]) -> dict[str, object]:
    """One in-process run with OUT_DIR inside IN_DIR: the outputs every other run must reproduce."""
    out = in_dir / "restored"
    t0 = time.perf_counter()
    rc = main(["batch", str(in_dir), str(out), "--recursive", *model_args])
    return {"rc": rc, "out": out, "seconds": time.perf_counter() - t0,
            "images": {n: np.asarray(Image.open(out / n)) for n in GOOD}}


def _records(out: Path) -> list[dict]:
    return Manifest(out / STATE).records()


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _same_outputs(out: Path, reference: dict[str, object]) -> None:
    for n in GOOD:
        assert np.array_equal(np.asarray(Image.open(out / n)), reference["images"][n]), n  # type: ignore[index]


def test_bad_file_is_reported_and_skipped(reference: dict[str, object], in_dir: Path) -> None:
    out = reference["out"]
    assert reference["rc"] == 1  # finished, with one failure
    assert all((out / n).is_file() for n in GOOD)
    assert Image.open(out / "a.png").size == (32, 32)
    rows = (out / "batch_summary.csv").read_text().splitlines()
    assert rows[0].startswith("input,output,status,seconds,error")
    status = {r.split(",")[0]: r.split(",")[2] for r in rows[1:]}
    assert status == {"a.png": "done", "b.png": "done", "bad.png": "failed", "sub/c.png": "done",
                      "sub/d.png": "done"}
    assert "not an image" in next(r for r in rows if r.startswith("bad.png"))
    assert not (out / "restored").exists() and not (out / "bad.png").exists()  # outputs never re-ingested


def test_rerun_skips_done_and_redoes_changed(reference: dict[str, object], in_dir: Path,
                                             model_args: list[str], tmp_path: Path) -> None:
    out = reference["out"]
    n_before = len(_records(out))
    assert main(["batch", str(in_dir), str(out), "--recursive", *model_args]) == 1
    recs = _records(out)
    assert [r["input"] for r in recs[n_before:]] == ["bad.png"]  # only the failure was retried
    # a changed input is redone (on a copy of two inputs: the module's folder stays intact)
    copy = tmp_path / "in"
    copy.mkdir()
    for n in ("a.png", "b.png"):
        (copy / n).write_bytes((in_dir / n).read_bytes())
    assert main(["batch", str(copy), str(tmp_path / "o"), *model_args]) == 0
    (copy / "b.png").write_bytes((in_dir / "sub/c.png").read_bytes())  # an input changed: redone
    assert main(["batch", str(copy), str(tmp_path / "o"), *model_args]) == 0
    done = [r["input"] for r in _records(tmp_path / "o") if r["status"] == "done"]
    assert done == ["a.png", "b.png", "b.png"]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o" / "b.png")),
                          reference["images"]["sub/c.png"])  # type: ignore[index]


def test_refuses_to_overwrite_inputs(in_dir: Path, model_args: list[str],
                                     capsys: pytest.CaptureFixture) -> None:
    assert main(["batch", str(in_dir), str(in_dir), *model_args]) == 2
    assert main(["batch", str(in_dir / "sub"), str(in_dir), *model_args]) == 2  # IN_DIR inside OUT_DIR
    assert main(["batch", str(in_dir), str(in_dir / "x"), *model_args, "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("diffrestore: error:") for line in err)
    assert not (in_dir / "x").exists()


def _append_many(folder: str, writer: str, n: int) -> None:
    m = Manifest(folder, writer)
    for i in range(n):
        m.append({"input": f"{writer}-{i}", "status": "done", "pad": "x" * 500})


def test_manifest_several_writers_and_torn_tail(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(str(tmp_path), w, 40))
             for w in ("rank0", "rank0", "rank1")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    recs = Manifest(tmp_path).records()
    assert len(recs) == 120 and all(len(r["pad"]) == 500 for r in recs)
    f = tmp_path / "manifest.rank1.jsonl"
    with open(f, "ab") as fh:
        fh.write(b'{"input": "torn", "sta')  # a writer killed mid-line
    assert len(Manifest(tmp_path).records()) == 120
    assert f.read_bytes().endswith(b"}\n")  # removed on read
    with open(f, "ab") as fh:
        fh.write(b'{"input": "torn", "sta')
    Manifest(tmp_path, "rank1").append({"input": "after", "status": "done"})
    assert Manifest(tmp_path).latest()["after"]["status"] == "done"
    assert "torn" not in Manifest(tmp_path).latest()


def test_kill_9_then_rerun_loses_and_duplicates_nothing(reference: dict[str, object], in_dir: Path,
                                                        model_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "diffrestore", "batch", str(in_dir), str(out), "--recursive",
           "--pattern", "*.png", *model_args]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if any(r["status"] == "done" for r in _records(out)) if (out / STATE).is_dir() else False:
                break
            time.sleep(0.02)
        finished_early = proc.poll() is not None
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = _records(out)
    assert killed and not finished_early, "the batch was not killed mid-run"
    assert len([r for r in killed if r["status"] == "done"]) < len(GOOD)
    assert main(["batch", str(in_dir), str(out), "--recursive", "--pattern", "*.png", *model_args]) == 1
    done = [r["input"] for r in _records(out) if r["status"] == "done"]
    assert sorted(done) == sorted(GOOD)  # each input exactly once: none lost, none redone
    _same_outputs(out, reference)
    assert not list(out.rglob("*.tmp"))  # no half-written output left behind


def test_torchrun_two_ranks_match_one_process(reference: dict[str, object], in_dir: Path,
                                              model_args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "diffrestore", "batch", str(in_dir), str(out), "--recursive", "--pattern", "?.png",
           *model_args]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    _same_outputs(out, reference)
    recs = _records(out)
    assert sorted(p.name for p in (out / STATE).iterdir()) == ["manifest.rank0.jsonl", "manifest.rank1.jsonl"]
    done = [r for r in recs if r["status"] == "done"]
    assert sorted(r["input"] for r in done) == sorted(GOOD)
    assert {r["rank"] for r in done} == {0, 1}  # both ranks worked
    rows = (out / "batch_summary.csv").read_text().splitlines()
    assert len(rows) == 1 + len(GOOD)
    assert "batch: 4 restored" in r.stderr
