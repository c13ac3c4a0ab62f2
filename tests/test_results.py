"""Results files: the machine record, the runs table read from a finished run, collect, render.

Every run folder here is synthetic, built in tmp_path with known numbers, so each figure in a
results file can be checked against the value it must hold.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from capfuse.results import markdown_for
from capfuse.results.presets import BEGIN, END, NOT_MEASURED, current_block, presets_block, presets_table
from capfuse.results.runs import run_timings, write_run_results
from capfuse.results.tables import file_stem, results_dir, write_results, write_safely
from capfuse.shift.confidence import estimate_line, line_on_test_like_rows, score_on_test_like_rows

REPO = Path(__file__).resolve().parents[1]
COMMIT = "0123456789abcdef0123456789abcdef01234567"

TIMING_COLUMNS = ["command", "started", "stage", "model", "fold", "depth", "wall_s", "cpu_s", "peak_rss_mb"]


def timing(command, stage, wall_s, rss, depth=0, model="", fold=None):
    return [command, "2026-12-01T10:00:00", stage, model, fold, depth, wall_s, wall_s, rss]


def make_run(root: Path, dataset: str = "demo", *, commit: str = COMMIT + "-dirty") -> Path:
    """runs/<dataset>/ of a finished `make all` (two models, a stack) with known numbers, and its manifest.

    timings.csv also holds an earlier run's infer and an ablation, which are not this run's time.
    """
    run = root / "runs" / dataset
    for name, f1, cv_map, minutes in (("caption_linear", 0.71, 0.74, 0.5), ("fusion_logit", 0.82, 0.85, 3.25)):
        (run / name).mkdir(parents=True)
        metrics = {"model": name, "kind": "net", "cv_mean_f1": f1, "cv_map": cv_map, "train_minutes": minutes}
        (run / name / "metrics.json").write_text(json.dumps(metrics))
    (run / "ensemble").mkdir()
    (run / "ensemble" / "oof_probs.csv").write_text(
        "ImageID,fold,1,2\n" + "".join(f"{i},0,0.1,0.9\n" for i in range(7))
    )
    rows = [
        timing("infer", "stack", 999.0, 9999.0),  # an earlier run
        timing("folds", "folds", 6.0, 300.0),
        timing("train", "train", 600.0, 2000.0),
        timing("train", "train caption_linear", 30.0, 1000.0, depth=1),
        timing("train", "fold", 10.0, 1000.0, depth=2, model="caption_linear", fold=0),
        timing("ablate", "ablate", 5000.0, 8000.0),  # between runs: not this one
        timing("folds", "folds", 3.0, 310.0),
        timing("train", "train", 1200.0, 2500.0),
        timing("stack", "stack", 77.0, 500.0),  # redone by infer: not counted
        timing("infer", "stack", 60.0, 2600.0),
        timing("infer", "thresholds", 24.0, 2600.0),
        timing("infer", "submit", 6.0, 2700.0),
        timing("report", "report", 50.0, 100.0),  # after the run
    ]
    pd.DataFrame(rows, columns=TIMING_COLUMNS).to_csv(run / "timings.csv", index=False)
    manifest = {
        "git_commit": commit,
        "dataset": dataset,
        "k": 5,
        "models": {"caption_linear": {}, "fusion_logit": {}},
        "second_level": {"kept": "weighted_blend"},
        "threshold": {"kind": "per_class"},
        "cv": {"mean_f1": 0.851, "map": 0.88},
        "cv_nested_mean_f1": 0.8432,
        "test_rows": 3,
        "timestamp": "20261201-103000",
    }
    (root / "submissions").mkdir(exist_ok=True)
    (root / "submissions" / f"{dataset}-latest.json").write_text(json.dumps(manifest))
    return run


def fake_machine(date="2026-12-02T09:00:00Z", slug="epyc-avx512bf16-2t", commit=COMMIT) -> dict:
    return {
        "slug": slug,
        "commit": commit,
        "date": date,
        "cpu": "AMD EPYC",
        "isa": "avx512-bf16",
        "torch_isa": "AVX512",
        "isa_cap": "",
        "bf16_native": True,
        "threads": 2,
        "cores": 2,
        "ram_gb": 23.5,
        "gpu": "none",
        "gpu_memory_gb": None,
        "gpu_driver": "",
        "python": "3.11.7",
        "torch": "2.4.0",
        "capfuse": "0.1.0",
    }


# -- the machine record ------------------------------------------------------------------------


def test_the_machine_record_of_this_machine_has_every_field():
    from capfuse.results.machine import ISA_WORDS, machine_record

    m = machine_record(REPO)
    fields = m.fields()
    for key in ("commit", "date", "cpu", "isa", "torch_isa", "threads", "cores", "ram_gb", "gpu", "python", "torch"):
        assert fields[key] not in (None, ""), key
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", m.commit)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m.date)
    assert m.isa.removesuffix(" (capped)") in ISA_WORDS
    assert m.threads >= 1 and m.cores >= 1 and m.ram_gb > 0
    assert isinstance(m.bf16_native, bool)
    assert re.fullmatch(r"[a-z0-9]+-[a-z0-9]+-\d+t|[a-z0-9]+x\d+", m.slug)


@pytest.mark.parametrize(
    ("flags", "env", "word"),
    [
        ({"avx2", "avx512f", "avx512_bf16"}, {}, "avx512-bf16"),
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, {}, "amx-bf16"),
        (
            {"avx2", "avx512f", "avx512_bf16", "amx_bf16"},
            {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"},
            "avx512-bf16 (capped)",
        ),
        (
            {"avx2", "avx512f", "avx512_bf16", "amx_bf16"},
            {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"},
            "amx-bf16 (capped)",
        ),
        ({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}, {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2 (capped)"),
        ({"avx2", "avx512f"}, {}, "avx512"),
        ({"avx2"}, {}, "avx2"),
        ({"neon"}, {}, "other"),
        ({"avx2", "avx512f", "avx512_bf16"}, {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2 (capped)"),
        ({"avx2", "avx512f", "avx512_bf16"}, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, "avx512 (capped)"),
        (
            {"avx2", "avx512f", "avx512_bf16"},
            {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx512"},
            "avx2 (capped)",
        ),
        ({"avx2"}, {"ATEN_CPU_CAPABILITY": "avx512"}, "avx2 (capped)"),  # a cap above the CPU lowers nothing
    ],
)
def test_the_instruction_set_word_reads_flags_and_caps(flags, env, word):
    from capfuse.results.machine import isa_word

    assert isa_word(flags, env) == word


def test_a_capped_environment_is_recorded_and_named(tmp_path, monkeypatch):
    from capfuse.results import machine

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: AMD EPYC 9654 96-Core Processor\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
    )
    monkeypatch.setattr(machine, "CPUINFO", cpuinfo)
    monkeypatch.setattr(machine, "_gpu", lambda: ("none", None, ""))
    m = machine.machine_record(tmp_path, commit=COMMIT, env={"ATEN_CPU_CAPABILITY": "avx2"})
    assert m.cpu == "AMD EPYC 9654 96-Core Processor"
    assert m.isa == "avx2 (capped)"
    assert m.isa_cap == "ATEN_CPU_CAPABILITY=avx2"
    assert m.slug == f"epyc-avx2capped-{m.threads}t"
    assert machine.machine_record(tmp_path, commit=COMMIT, env={}).slug == f"epyc-avx512bf16-{m.threads}t"
    # On a GPU machine the GPU names it, whatever the CPU.
    assert dataclasses.replace(m, gpu="NVIDIA H200 x1").slug == "h200x1"
    assert dataclasses.replace(m, gpu="NVIDIA GeForce RTX 4090 x2").slug == "rtx4090x2"


# -- the runs table ----------------------------------------------------------------------------


def test_a_runs_file_holds_the_figures_of_the_finished_run(tmp_path):
    run = make_run(tmp_path)
    manifest = json.loads((tmp_path / "submissions" / "demo-latest.json").read_text())
    written = write_run_results(
        tmp_path / "results", run, manifest, preset="default", machine=fake_machine(), command="capfuse infer"
    )
    assert written.csv.name == "2026-12-02_demo-default_epyc-avx512bf16-2t_0123456-dirty.csv"
    df = pd.read_csv(written.csv)
    assert set(df["commit"]) == {COMMIT + "+dirty"}  # the manifest's, not the machine's
    assert set(df["dataset"]) == {"demo"} and set(df["preset"]) == {"default"}
    assert set(df["train_rows"]) == {7} and set(df["test_rows"]) == {3}
    by = df.set_index(["kind", "name"])
    assert by.loc[("model", "fusion_logit"), "mean_f1"] == 0.82
    assert by.loc[("model", "fusion_logit"), "map"] == 0.85
    assert by.loc[("model", "caption_linear"), "minutes"] == 0.5
    assert by.loc[("second_level", "weighted_blend"), "nested_mean_f1"] == 0.8432
    assert by.loc[("second_level", "weighted_blend"), "mean_f1"] == 0.851
    # This run's commands only: folds 3 s, train 1200 s, infer 60 + 24 + 6 s.
    assert by.loc[("stage", "folds"), "minutes"] == 0.05
    assert by.loc[("stage", "train"), "minutes"] == 20.0
    assert by.loc[("stage", "stack"), "minutes"] == 1.0
    assert by.loc[("total", "all stages"), "minutes"] == round((3 + 1200 + 60 + 24 + 6) / 60, 3)
    assert by.loc[("total", "all stages"), "peak_rss_mb"] == 2700.0
    md = written.md.read_text()
    for text in ("AMD EPYC", "avx512-bf16", "torch threads", "capfuse infer", "weighted_blend", "0.8432"):
        assert text in md


def test_under_a_shift_warning_the_runs_file_and_the_summary_give_the_test_like_score(tmp_path):
    run = make_run(tmp_path)
    manifest = json.loads((tmp_path / "submissions" / "demo-latest.json").read_text())
    level = {
        "kept": "weighted_blend",
        "candidates": {"weighted_blend": {"nested_mean_f1": 0.8432, "like_nested_mean_f1": 0.8123}},
        "choice": {"score": "like_nested_mean_f1", "test_like": {"rows": 500, "share": 0.25}},
    }
    quiet = {**manifest, "second_level": level, "shift": {"warning": None}}
    warned = {**quiet, "shift": {"warning": "train/test shift: ..."}}
    assert (
        score_on_test_like_rows(quiet) is None and line_on_test_like_rows(quiet) is None
    )  # no warning: no such figure
    assert score_on_test_like_rows(warned) == (500, 0.8123)
    assert "500 training rows most like the test: 0.8123 nested" in line_on_test_like_rows(warned)
    # One line says which figure to read under a shift: the confidence estimate's, not this one.
    assert "read this one" not in line_on_test_like_rows(warned)
    kw = {"preset": "default", "machine": fake_machine(), "command": "capfuse infer"}
    df = pd.read_csv(write_run_results(tmp_path / "results", run, warned, **kw).csv).set_index(["kind", "name"])
    assert df.loc[("test_like", "weighted_blend"), "nested_mean_f1"] == 0.8123
    # The second level's own nested figure stays the one the presets table reads.
    assert df.loc[("second_level", "weighted_blend"), "nested_mean_f1"] == manifest["cv_nested_mean_f1"]


def test_the_confidence_estimate_of_the_test_score_is_a_row_and_a_line(tmp_path):
    run = make_run(tmp_path)
    manifest = json.loads((tmp_path / "submissions" / "demo-latest.json").read_text())
    expected = {"mean_f1": 0.8321, "nested_mean_f1": 0.8432, "confidence_oof": 0.83, "confidence_test": 0.8189}
    assert estimate_line(manifest) is None  # a manifest without one: no line, no row
    found = {**manifest, "expected_test": expected, "shift": {"warning": None}}
    assert "0.8321" in estimate_line(found) and "under the shift" not in estimate_line(found)
    warned = {**found, "shift": {"warning": "train/test shift: ..."}}
    assert "read this one under the shift" in estimate_line(warned)
    kw = {"preset": "default", "machine": fake_machine(), "command": "capfuse infer"}
    df = pd.read_csv(write_run_results(tmp_path / "results", run, warned, **kw).csv).set_index("kind")
    assert df.loc["expected_test", "nested_mean_f1"] == 0.8321
    assert "0.8189 on the test rows" in df.loc["expected_test", "detail"]


def test_the_run_is_found_in_timings_written_by_capfuse_all():
    rows = [timing("infer", "stack", 5.0, 1.0), timing("all", "folds", 1.0, 1.0), timing("all", "train", 2.0, 1.0)]
    picked = run_timings(pd.DataFrame(rows, columns=TIMING_COLUMNS))
    assert list(picked["stage"]) == ["folds", "train"]
    assert run_timings(pd.DataFrame([timing("train", "train", 1.0, 1.0)], columns=TIMING_COLUMNS)).empty


def test_collect_takes_the_commit_from_the_manifest(tmp_path):
    from capfuse.stages.results import collect

    run = make_run(tmp_path, commit="fedcba9876543210fedcba9876543210fedcba98")
    presets = tmp_path / "configs" / "presets"
    presets.mkdir(parents=True)
    (presets / "fast.yaml").write_text("models: [caption_linear, fusion_logit]\n")
    (presets / "best.yaml").write_text("models: [caption_linear]\n")
    csv = collect(run, tmp_path / "results")
    assert csv.parent == tmp_path / "results" / "runs"
    assert re.fullmatch(r"2026-12-01_demo-fast_[a-z0-9-]+_fedcba9\.csv", csv.name)  # dated by the run's submission
    df = pd.read_csv(csv)
    assert set(df["commit"]) == {"fedcba9876543210fedcba9876543210fedcba98"}
    assert set(df["preset"]) == {"fast"}  # the preset that trains exactly the run's models
    assert "collected on this host" in df["machine_fields"].iloc[0]
    assert "collected on this host" in csv.with_suffix(".md").read_text()


def test_collect_without_a_matching_preset_asks_for_one(tmp_path):
    from capfuse.stages.results import collect

    run = make_run(tmp_path)
    (tmp_path / "configs" / "presets").mkdir(parents=True)
    with pytest.raises(ValueError, match="--preset"):
        collect(run, tmp_path / "results")


def test_infer_writes_the_runs_file_after_its_timings(tmp_path, monkeypatch):
    """`capfuse infer --results DIR` files the run once the command has ended: its own stages
    reach timings.csv only then, and the results file counts them."""
    from capfuse.cli import main
    from capfuse.utils.log import stage

    make_run(tmp_path)

    def fake_infer(args, paths, cfg, quiet):  # the stage's work, less the fitting
        with stage("stack", paths.dataset):
            pass
        return 0

    monkeypatch.setattr("capfuse.stages.infer.cli", fake_infer)
    monkeypatch.delenv("CAPFUSE_RESULTS", raising=False)
    config = str(REPO / "configs" / "pipeline.yaml")
    args = ["infer", "--data", str(tmp_path / "data" / "demo"), "--root", str(tmp_path), "--config", config, "--quiet"]
    assert main(args) == 0
    assert not (tmp_path / "results").exists()  # neither --results nor $CAPFUSE_RESULTS: nothing written
    assert main([*args, "--results", str(tmp_path / "results")]) == 0
    (csv,) = (tmp_path / "results" / "runs").glob("*.csv")
    df = pd.read_csv(csv)
    assert df.loc[df["kind"] == "total", "detail"].iloc[0] == "infer"  # this command, read after it ended
    assert df.loc[df["kind"] == "total", "minutes"].iloc[0] < 0.1  # its stack alone, not the earlier rows
    assert set(df["preset"]) == {"pipeline"}  # no preset trains this run's models: the config's name


def test_a_results_folder_that_cannot_be_written_is_one_warning(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    frame = pd.DataFrame({"x": [1.0]})

    def write():
        return write_results(blocked, "bench", frame, fake_machine(), name="all", command="capfuse bench")

    with caplog.at_level(logging.WARNING, logger="capfuse"):
        assert write_safely(blocked / "bench", write) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not written" in warnings[0].getMessage()


def test_results_go_only_where_asked(monkeypatch, tmp_path):
    monkeypatch.delenv("CAPFUSE_RESULTS", raising=False)
    assert results_dir(None) is None
    assert results_dir("out") == Path("out")
    monkeypatch.setenv("CAPFUSE_RESULTS", str(tmp_path))
    assert results_dir(None) == tmp_path


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A write that fails half-way leaves the earlier file whole and no temporary file behind."""
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    machine = fake_machine()
    first = write_results(tmp_path, "bench", frame, machine, name="all", command="capfuse bench")
    before = first.csv.read_bytes()
    real = pd.DataFrame.to_csv

    def half(self, path, **kwargs):
        Path(path).write_text("commit,trunc")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", half)
    with pytest.raises(OSError):
        write_results(tmp_path, "bench", frame * 2, machine, name="all", command="capfuse bench")
    monkeypatch.setattr(pd.DataFrame, "to_csv", real)
    assert first.csv.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "bench").iterdir()) == sorted([first.csv.name, first.md.name])


# -- rendering ---------------------------------------------------------------------------------


def write_runs_file(
    root: Path, preset: str, dataset: str, slug: str, date: str, minutes: float, nested: float, overrides: str = ""
) -> Path:
    frame = pd.DataFrame(
        [
            {"kind": "second_level", "name": "stack", "nested_mean_f1": nested},
            {"kind": "total", "name": "all stages", "minutes": minutes, "peak_rss_mb": 4096.0},
        ]
    )
    facts = {"dataset": dataset, "preset": preset, "train_rows": 30000, "test_rows": 10000}
    facts |= {"overrides": overrides} if overrides else {}
    machine = fake_machine(date=date, slug=slug)
    written = write_results(
        root, "runs", frame, machine, name=f"{dataset}-{preset}", command="capfuse infer", facts=facts
    )
    return written.md


def test_render_takes_the_newest_file_per_preset_and_says_not_measured(tmp_path):
    results = tmp_path / "results"
    old = write_runs_file(results, "default", "large", "epyc-avx512bf16-2t", "2026-11-01T08:00:00Z", 50.0, 0.87)
    new = write_runs_file(results, "default", "large", "epyc-avx512bf16-2t", "2026-12-01T08:00:00Z", 48.25, 0.879)
    avx2 = write_runs_file(results, "default", "large", "epyc-avx2capped-2t", "2026-10-01T08:00:00Z", 70.5, 0.878)
    demo = write_runs_file(results, "best", "demo", "epyc-avx512bf16-2t", "2026-12-01T09:00:00Z", 30.0, 0.8631)
    table = presets_table(results, tmp_path)
    lines = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines() if line.startswith("| `")}
    assert set(lines) == {"fast", "default", "best"}
    assert "48 min 15 s, 4.0 GB" in lines["default"] and "50 min" not in lines["default"]
    assert "70 min 30 s" in lines["default"]  # the capped machine has its own column
    assert "0.8790" in lines["default"]  # nested CV on the 30k copy: the newest file of any machine
    assert lines["fast"].count(NOT_MEASURED) == 4
    assert "0.8631" in lines["best"] and lines["best"].count(NOT_MEASURED) == 3
    header = table.splitlines()[0]
    assert "epyc-avx2capped-2t" in header and "30,000 / 10,000 rows" in header
    sources = next(line for line in table.splitlines() if line.startswith("Sources:"))
    for md in (new, avx2, demo):
        assert f"](results/runs/{md.name})" in sources
    assert old.name not in table


def test_a_budgeted_run_is_a_row_of_its_own_timed_by_its_whole_command(tmp_path):
    results = tmp_path / "results"
    plain = write_runs_file(results, "default", "large", "epyc-avx512bf16-2t", "2026-12-01T08:00:00Z", 48.25, 0.879)
    frame = pd.DataFrame(
        [
            {"kind": "second_level", "name": "stack", "nested_mean_f1": 0.8711},
            {"kind": "total", "name": "all stages", "minutes": 17.0, "peak_rss_mb": 2048.0},
            {"kind": "total", "name": "command", "minutes": 19.5},
        ]
    )
    facts = {"dataset": "large", "preset": "default", "train_rows": 30000, "test_rows": 10000, "time_limit_s": 1200.0}
    machine = fake_machine(date="2026-12-02T08:00:00Z", slug="epyc-avx512bf16-2t")
    budgeted = write_results(
        results, "runs", frame, machine, name="large-default-budget1200s", command="capfuse infer", facts=facts
    ).md
    table = presets_table(results, tmp_path)
    lines = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| `")}
    # The preset's own row keeps the run without a budget; the budget has its row, timed by the
    # whole command (what the budget counts), not by its stages' sum.
    assert "48 min 15 s" in lines["`default`"] and "0.8790" in lines["`default`"]
    row = lines["`default`, `TIME_LIMIT=20m`"]
    assert "19 min 30 s" in row and "17 min" not in row and "0.8711" in row
    assert f"]({Path('results/runs') / plain.name})" in table and budgeted.name in table


def test_render_with_no_results_files_says_not_measured_everywhere(tmp_path):
    table = presets_table(tmp_path / "results", tmp_path)
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == 3 and all(line.count(NOT_MEASURED) == 3 for line in rows)
    assert "Sources" not in table


def test_capfuse_results_render_rewrites_the_readme_block(tmp_path):
    from capfuse.cli import main

    results = tmp_path / "results"
    write_runs_file(results, "fast", "demo", "epyc-avx512bf16-2t", "2026-12-01T08:00:00Z", 10.0, 0.8412)
    readme = tmp_path / "README.md"
    readme.write_text(f"# capfuse\n\nintro\n\n{BEGIN}\n| stale | table |\n{END}\n\nafter\n")
    args = ["results", "render", "--results", str(results), "--readme", str(readme)]
    assert main([*args, "--check"]) == 1
    assert main(args) == 0
    text = readme.read_text()
    assert text.startswith("# capfuse\n\nintro\n\n") and text.endswith("\n\nafter\n")
    assert "0.8412" in text and "stale" not in text
    assert main([*args, "--check"]) == 0


def test_the_readme_presets_block_is_what_render_writes(monkeypatch):
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert current_block(text) is not None, "README.md lost its <!-- results:presets --> block"
    monkeypatch.chdir(REPO)  # the README links results files relative to itself
    assert current_block(text) == presets_block(Path("results"), Path(".")), (
        "README.md's presets table differs from results/runs/: run `make results`"
    )


def test_markdown_for_lists_the_newest_file_first(tmp_path):
    a = write_runs_file(tmp_path, "fast", "demo", "epyc-avx512bf16-2t", "2026-11-01T08:00:00Z", 10.0, 0.81)
    b = write_runs_file(tmp_path, "fast", "demo", "epyc-avx512bf16-2t", "2026-12-01T08:00:00Z", 9.0, 0.82)
    c = write_runs_file(tmp_path, "best", "demo", "epyc-avx512bf16-2t", "2026-11-15T08:00:00Z", 30.0, 0.85)
    text = markdown_for("runs", tmp_path)
    positions = [text.index(md.read_text().splitlines()[0]) for md in (b, c, a)]
    assert positions == sorted(positions)
    newest = markdown_for("runs", tmp_path, newest_only=True)
    assert b.read_text().splitlines()[0] in newest and c.read_text().splitlines()[0] in newest
    assert a.read_text().splitlines()[0] not in newest
    assert "No results file" in markdown_for("bench", tmp_path)


def test_a_results_file_names_its_date_machine_and_commit():
    assert (
        file_stem("2026-12-01T08:00:00Z", "large-default", "h200x1", COMMIT)
        == "2026-12-01_large-default_h200x1_0123456"
    )
    assert file_stem("2026-12-01T08:00:00Z", None, "h200x1", COMMIT + "+dirty") == "2026-12-01_h200x1_0123456-dirty"


def test_bench_figures_become_rows_with_units():
    from capfuse.bench.figures import figure_rows

    r = {"img_s": {"onnx fp32": 120.0}, "cosine": {"onnx int8": 0.998}, "stack_s": 12.5, "shape": (1, 2), "ok": True}
    rows = {row["figure"]: (row["value"], row["unit"]) for row in figure_rows("embed", r)}
    assert rows == {
        "img_s.onnx fp32": (120.0, "images/s"),
        "cosine.onnx int8": (0.998, "cosine"),
        "stack_s": (12.5, "s"),
    }


def test_make_bench_files_every_figure_it_printed(tmp_path, monkeypatch):
    from capfuse.stages import bench

    measured = {"stack_s": 12.5, "thresholds_s": 3.25, "stack_oof_f1_class": 0.8123, "nested_global_threshold": 0.42}
    monkeypatch.setattr(
        bench,
        "bench_stack_thresholds",
        lambda **kwargs: dict(
            measured,
            features_s=0.5,
            nested_thresholds_s=1.0,
            blend_oof_f1_global=0.8,
            weighted_blend_oof_f1_global=0.81,
            stack_oof_f1_global=0.811,
            nested_nested=0.805,
            nested_global_nested=0.8,
        ),
    )
    assert bench.main(["--only", "stack", "--rows", "100", "--models", "2", "--results", str(tmp_path)]) == 0
    (csv,) = (tmp_path / "bench").glob("*_stack_*.csv")
    df = pd.read_csv(csv).set_index("figure")
    assert df.loc["stack_s", "value"] == 12.5 and df.loc["stack_s", "unit"] == "s"
    assert df.loc["nested_global_threshold", "unit"] == "threshold"
    assert set(df["rows"]) == {100} and set(df["models"]) == {2}  # the set-up the figures came from
    assert "images" not in df.columns  # an option the stack benchmark does not read


def test_make_ablate_files_its_table(tmp_path, monkeypatch):
    from capfuse.cli import main

    table = pd.DataFrame(
        [
            {
                "variant": "caption_linear",
                "group": "reference",
                "change": "-",
                "score": "CV",
                "mean_f1": 0.7,
                "map": 0.72,
                "gap_at_10": 0.5,
                "delta": 0.0,
                "minutes": 0.1,
            }
        ]
    )
    monkeypatch.setattr("capfuse.stages.ablate.run_ablate", lambda *args, **kwargs: table)
    data = tmp_path / "data" / "demo"
    config = str(REPO / "configs" / "ablation.yaml")
    args = ["ablate", "--data", str(data), "--root", str(tmp_path), "--config", config, "--quiet"]
    assert main([*args, "--results", str(tmp_path / "results")]) == 0
    (csv,) = (tmp_path / "results" / "ablation").glob("*.csv")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_ablation-demo_[a-z0-9-]+_([0-9a-f]{7}(-dirty)?|unknown)\.csv", csv.name)
    df = pd.read_csv(csv)
    assert df["mean_f1"].tolist() == [0.7] and set(df["dataset"]) == {"demo"}


def test_render_leaves_out_runs_of_other_configs(tmp_path):
    results = tmp_path / "results"
    write_runs_file(results, "pipeline", "large", "h200x1", "2026-12-01T08:00:00Z", 12.0, 0.9)
    table = presets_table(results, tmp_path)
    assert "h200x1" not in table and "pipeline" not in table and "0.9000" not in table


def test_a_run_with_set_values_is_a_variant_filed_apart_and_never_the_presets_figure(tmp_path):
    from capfuse.results.runs import variant_slug

    assert variant_slug(["folds.groups=auto"]) == "folds.groups-auto"
    assert variant_slug(["folds.k=3", "train.mix=mixup"]) == "folds.k-3-train.mix-mixup"
    long = variant_slug([f"models.m{i}.train.epochs=9" for i in range(9)])
    assert len(long) <= 60 and long != variant_slug([f"models.m{i}.train.epochs=8" for i in range(9)])
    results = tmp_path / "results"
    write_runs_file(results, "default", "demo", "epyc-avx512bf16-2t", "2026-12-01T08:00:00Z", 9.0, 0.85)
    write_runs_file(
        results, "default", "demo", "epyc-avx512bf16-2t", "2026-12-02T08:00:00Z", 9.0, 0.99, "folds.groups=auto"
    )
    table = presets_table(results, tmp_path)
    assert "0.8500" in table and "0.9900" not in table  # the newer file is a variant, not the preset


@pytest.mark.parametrize(
    ("env", "capped"),
    [
        ({}, False),
        ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, True),
        ({"ATEN_CPU_CAPABILITY": "avx2"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}, True),
        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, False),
        ({"ATEN_CPU_CAPABILITY": "avx512"}, False),
    ],
)
def test_an_imitated_cpu_without_bf16_trains_in_fp32_like_the_real_one(monkeypatch, env, capped):
    """Under a cap that keeps bf16 out of reach, capfuse must not autocast to bf16: a real AVX2
    CPU trains in fp32, and bf16 emulated in AVX2 kernels is a path no real machine takes."""
    from capfuse.models import finetune
    from capfuse.utils.isa import bf16_capped

    for var in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(var, raising=False)
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert bf16_capped(env) is capped
    monkeypatch.setattr(finetune.torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    assert finetune.cpu_has_bf16() is (not capped)


def test_two_runs_of_one_command_in_a_row_are_two_runs():
    """`make all` twice: the second run's figures are its own, not the sum of both."""
    from capfuse.results.runs import run_timings

    def rows(invocation: str, seconds: float) -> list[dict]:
        return [
            {"command": "all", "stage": stage, "depth": 0, "wall_s": seconds, "invocation": invocation}
            for stage in ("folds", "train", "stack")
        ]

    timings = pd.DataFrame(rows("2026-12-05T03:59:39.1", 100.0) + rows("2026-12-05T04:14:27.2", 7.0))
    last = run_timings(timings)
    assert list(last["wall_s"]) == [7.0, 7.0, 7.0]
    older = timings.drop(columns="invocation")  # a file from before the column: split by command name only
    assert len(run_timings(older)) == 6
