"""Object storage: a Parquet export and a JSON-lines trail read from ``s3://`` (issue 17),
against moto's S3 in server mode (a real S3 API over HTTP, as MinIO or AWS would answer),
giving the scores and alerts of the same files read from disk.

The local engine reads a Parquet export at a URL with pyarrow's own S3 client (no extra);
the Dask engine's workers open JSON lines through fsspec, which needs the ``s3`` extra
(s3fs) and the ``dask`` extra. Needs ``moto[server]`` and boto3 (dev); each test skips with
its reason where what it needs is missing. (s3fs is not in ``dev``: its aiobotocore pins
botocore releases older than the boto3 the cloudwatch extra gets.)
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from analyzer.cli import main
from analyzer.synth import SynthConfig, generate, write_audit_log

BUCKET = "audit-trail"

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3_endpoint(moto_endpoint: str) -> Iterator[str]:
    """moto's S3 (conftest's server), with fake credentials and the endpoint in the
    environment where boto3 and s3fs look for them (``AWS_ENDPOINT_URL``, as a user points
    the tools at MinIO)."""
    pytest.importorskip("boto3", reason="the bucket is filled with boto3 (the cloudwatch "
                                        "extra)")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        env.setenv("AWS_ENDPOINT_URL", moto_endpoint)
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        yield moto_endpoint


@pytest.fixture(scope="module")
def trail(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic trail and its Parquet export on disk, both uploaded to the bucket (the
    trail as ``audit.jsonl``, the export under ``export/``)."""
    import boto3

    folder = tmp_path_factory.mktemp("s3trail")
    log = folder / "audit.jsonl"
    write_audit_log(generate(SynthConfig(users=10, days=8, attack_days=2, seed=11)).events,
                    log)
    assert main(["export", str(log), "--parquet", str(folder / "export")]) == 0
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(log), BUCKET, "audit.jsonl")
    uploaded = 0
    for path in (folder / "export").rglob("*"):
        if path.is_file():
            key = "export/" + path.relative_to(folder / "export").as_posix()
            client.upload_file(str(path), BUCKET, key)
            uploaded += 1
    assert uploaded >= 3, "the export should hold a manifest and several days"
    return folder


def _train_and_score(source: str, out: Path, *engine: str) -> tuple[bytes, list[str]]:
    """The scores file and the alert lines that ``train`` then ``score`` of ``source``
    write (the alerts' messages and entities: their ids and times differ by run)."""
    out.mkdir()
    model, scores, alerts = out / "model.joblib", out / "scores.csv", out / "alerts.jsonl"
    assert main(["train", source, "--model", str(model), *engine]) == 0
    assert main(["score", source, "--model", str(model), "--scores", str(scores),
                 "--audit-log", str(alerts), *engine]) == 0
    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    return scores.read_bytes(), [d["message"] for d in lines
                                 if d.get("event", {}).get("kind") == "alert"]


def test_a_parquet_export_in_s3_scores_as_the_same_export_on_disk(
        trail: Path, tmp_path: Path) -> None:
    local = _train_and_score(str(trail / "export"), tmp_path / "local")
    remote = _train_and_score(f"s3://{BUCKET}/export", tmp_path / "s3")
    assert remote[0] == local[0]
    assert local[1], "the synthetic attacks should alert"
    assert remote[1] == local[1]


def test_the_dask_engine_reads_a_jsonl_trail_and_an_export_from_s3(
        trail: Path, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed", reason="the Dask engine needs the "
                                      "dask extra (pip install 'audit-analyzer[dask]')")
    # the workers open JSON lines at a URL through fsspec, which needs s3fs for s3://
    s3fs = pytest.importorskip("s3fs", reason="JSON lines from s3:// on the Dask engine need "
                               "the s3 extra (pip install 'audit-analyzer[s3]')")
    s3fs.S3FileSystem.clear_instance_cache()  # no filesystem of another endpoint
    local = pd.read_csv(io.BytesIO(
        _train_and_score(str(trail / "audit.jsonl"), tmp_path / "local")[0]),
        keep_default_na=False)
    # the workers are processes started now: they inherit the endpoint and credentials
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster:
        on = ("--engine", "dask", "--scheduler", cluster.scheduler_address)
        jsonl = _train_and_score(f"s3://{BUCKET}/audit.jsonl", tmp_path / "jsonl", *on)
        export = _train_and_score(f"s3://{BUCKET}/export", tmp_path / "export", *on)
    for scores, _ in (jsonl, export):
        remote = pd.read_csv(io.BytesIO(scores), keep_default_na=False)
        assert len(remote) == len(local) > 100
        assert remote["entity"].tolist() == local["entity"].tolist()
        assert (remote["score"] - local["score"]).abs().max() <= 1e-9
    assert jsonl[1] and jsonl[1] == export[1]


def test_a_missing_object_is_one_error_line_naming_it(
        s3_endpoint: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/no-such-export"
    assert main(["score", url, "--scores", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0], err


def test_the_local_engine_says_how_to_read_json_lines_at_a_url(
        trail: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/audit.jsonl"
    assert main(["score", url, "--scores", str(tmp_path / "s.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and url in err[0] and "--engine dask" in err[0], err
