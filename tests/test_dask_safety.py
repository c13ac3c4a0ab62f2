"""A Dask worker started from another checkout refuses the job instead of training a fold with
other code into the same run folders."""

from __future__ import annotations

import pytest

from capfuse.training.jobs import _on_dask_worker, code_identity


def test_a_worker_running_other_code_refuses_the_job():
    ran = []
    with pytest.raises(ValueError, match="start every worker from the same checkout"):
        _on_dask_worker("job", lambda job, threads: ran.append(job), {}, 1, code="0000000000000000")
    assert ran == []


def test_a_worker_running_the_same_code_runs_the_job():
    assert _on_dask_worker("job", lambda job, threads: (job, threads), {}, 1, code=code_identity()) == ("job", 1)


def test_the_identity_follows_the_source(tmp_path, monkeypatch):
    import capfuse.training.jobs as jobs

    before = code_identity()
    fake = tmp_path / "capfuse" / "training" / "jobs.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("# another checkout\n")
    monkeypatch.setattr(jobs, "__file__", str(fake))
    assert code_identity() != before
