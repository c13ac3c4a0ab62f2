"""Hostile input: text that matplotlib would read as math, secrets in a storage URL, decompression
bombs, paths the OS refuses, stray carriage returns, shell metacharacters in make variables and
progress bars in redirected logs. Each case ends in a one-line message or a faithful result,
never a traceback, a leaked password or an executed command."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from capfuse.data.csvio import read_split
from capfuse.data.images import UnsafePathError, check_image, load_array, resolve_image_path
from capfuse.data.validate import validate_dataset
from conftest import TINY_RUN_ARGS

REPO = Path(__file__).resolve().parents[1]

# Math text that does not parse (an unclosed \frac), and a pair of dollars that does but would
# silently drop them; both are ordinary captions and class names.
BROKEN_MATH = r"$\frac{1}{$"
DOLLARS = "costs $5 or $6"


# -- 1. captions and names with dollars are drawn as they are ------------------------------------
def _drawn(fig) -> list[str]:
    """Render ``fig`` (math text that does not parse raises here) and return the strings as shown."""
    from matplotlib import cbook
    from matplotlib.text import Text

    from capfuse.report.plots import figure_png

    figure_png(fig)
    shown = []
    for t in fig.findobj(Text):
        s = t.get_text()
        if not s:
            continue
        math = t.get_parse_math() and cbook.is_math_text(s)
        assert not math, f"{s!r} is drawn as math text"
        # Matplotlib shows an escaped dollar of plain text as a dollar.
        shown.append(s.replace(r"\$", "$") if t.get_parse_math() else s)
    return shown


def _assert_shown(fig, *expected: str) -> None:
    shown = _drawn(fig)
    for e in expected:
        assert any(e in s for s in shown), f"{e!r} not drawn literally; drawn: {shown}"


def test_plots_draw_dollar_signs_in_user_text_literally(tmp_path):
    from capfuse.report import plots

    names = [BROKEN_MATH, DOLLARS, "plain"]
    ids = [1, 2, 3]
    freq = pd.DataFrame({"id": ids, "name": names, "count": [5, 3, 1]})
    _assert_shown(plots.class_frequency_plot(freq), BROKEN_MATH, DOLLARS)

    labels = [f"{i} {n}" for i, n in zip(ids, names)]
    m = pd.DataFrame(np.arange(9.0).reshape(3, 3), index=labels, columns=labels)
    _assert_shown(plots.heatmap(m, f"title {BROKEN_MATH}"), BROKEN_MATH, DOLLARS, f"title {BROKEN_MATH}")

    words = pd.DataFrame({"word": [BROKEN_MATH, DOLLARS], "count": [4, 2]})
    _assert_shown(plots.bar_table_plot(words, "word", "count", "words"), BROKEN_MATH, DOLLARS)

    missing = tmp_path / "absent.jpg"  # an unreadable image still gets its caption drawn
    samples = pd.DataFrame({"ImageID": [f"{BROKEN_MATH}.jpg"], "caption": [DOLLARS], "labels": [BROKEN_MATH]})
    _assert_shown(plots.sample_grid(samples, lambda _: missing), f"{BROKEN_MATH}.jpg", DOLLARS, BROKEN_MATH)
    worst = pd.DataFrame(
        {"ImageID": ["x.jpg"], "f1": [0.0], "caption": [BROKEN_MATH], "truth": [DOLLARS], "predicted": ["$a$ (0.90)"]}
    )
    _assert_shown(plots.worst_examples_plot(worst, lambda _: missing), BROKEN_MATH, DOLLARS, "$a$ (0.90)")

    per_class = pd.DataFrame(
        {"id": ids, "name": names, "support": [3, 2, 1], "f1": [0.5, 0.6, 0.7], "ap": [0.4, 0.5, 0.6]}
    )
    _assert_shown(plots.per_class_f1_plot(per_class, f"F1: {DOLLARS}"), BROKEN_MATH, f"F1: {DOLLARS}")
    curves = pd.DataFrame(np.full((3, 3), 0.5), index=[0.2, 0.5, 0.8], columns=labels)
    _assert_shown(plots.class_threshold_plot(curves, 0.5), BROKEN_MATH, DOLLARS)
    curve = pd.DataFrame({"threshold": [0.2, 0.5, 0.8], "mean_f1": [0.5, 0.7, 0.6]})
    _assert_shown(
        plots.threshold_curve_plot(curve, {BROKEN_MATH: 0.4}, f"curve {DOLLARS}"), BROKEN_MATH, f"curve {DOLLARS}"
    )

    board = pd.DataFrame({"model": [BROKEN_MATH, DOLLARS], "cv_mean_f1": [0.8, 0.7], "cv_map": [0.85, 0.75]})
    _assert_shown(plots.leaderboard_plot(board), BROKEN_MATH, DOLLARS)
    stack = pd.DataFrame(
        {
            "candidate": [BROKEN_MATH, DOLLARS],
            "kept": [True, False],
            "cv_mean_f1": [0.8, 0.7],
            "nested_mean_f1": [0.78, 0.69],
        }
    )
    _assert_shown(plots.stacking_plot(stack), BROKEN_MATH, DOLLARS)
    rounds = pd.DataFrame({"base_model": [BROKEN_MATH, BROKEN_MATH], "round": [0, 1], "cv_mean_f1": [0.7, 0.72]})
    _assert_shown(plots.pseudo_rounds_plot(rounds), BROKEN_MATH)
    ratios = pd.DataFrame(
        {
            "model": [DOLLARS, DOLLARS],
            "percent": [10.0, 100.0],
            "cv_mean_f1_without": [0.5, 0.6],
            "cv_mean_f1_with": [0.52, 0.61],
        }
    )
    _assert_shown(plots.label_ratios_plot(ratios), DOLLARS)
    ablation = pd.DataFrame({"variant": [BROKEN_MATH, DOLLARS], "group": ["reference", "$g$"], "mean_f1": [0.8, 0.79]})
    _assert_shown(plots.ablation_plot(ablation), BROKEN_MATH, DOLLARS, "$g$")
    shares = pd.DataFrame(
        {"id": ids, "name": names, "predicted_share": [0.3, 0.2, 0.1], "train_prior": [0.25, 0.2, 0.15]}
    )
    _assert_shown(plots.submission_plot(shares, pd.Series({1: 5, 2: 3}), pd.Series({1: 6, 2: 2})), BROKEN_MATH)


@pytest.mark.slow
def test_report_renders_with_math_text_in_captions_and_class_names(tiny_run, tmp_path):
    from capfuse.cli import main

    run = tiny_run.copy(tmp_path / "project")
    classes = run.data / "classes.csv"
    lines = classes.read_text(encoding="utf-8").splitlines()
    hostile = [lines[0]] + [f"{ln.split(',', 1)[0]},{BROKEN_MATH} {ln.split(',', 1)[1]}" for ln in lines[1:]]
    classes.write_text("\n".join(hostile) + "\n", encoding="utf-8")
    train = run.data / "train.csv"
    rows = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join([rows[0]] + [f"{r} {DOLLARS} {BROKEN_MATH}" for r in rows[1:]]) + "\n", encoding="utf-8")
    args = ["--data", str(run.data), "--root", str(run.root), "--config", str(run.config), "--quiet"]
    assert main(["report", *args]) == 0
    page = (run.root / "runs" / "tiny" / "report" / "index.html").read_text(encoding="utf-8")
    assert "$\\frac{1}{$" in page  # the class names reach the page's tables too, escaped for HTML only


# -- 2. a storage URL's password is never written or logged -------------------------------------
SECRET_URL = "postgresql://user:s3cr3t-pw@db.example.org:5432/capfuse"
MASKED_URL = "postgresql://user:***@db.example.org:5432/capfuse"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (SECRET_URL, MASKED_URL),
        ("mysql+pymysql://u:p@ss:w/rd@h/db", "mysql+pymysql://u:***@h/db"),  # raw @ and / in the password
        (
            "postgresql://h/db?user=u&password=pw&sslmode=require",
            "postgresql://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgresql://user@host/db", "postgresql://user@host/db"),  # no password: unchanged
        ("sqlite:////abs/thresholds.db", "sqlite:////abs/thresholds.db"),
    ],
)
def test_storage_urls_are_shown_without_their_password(url, shown):
    from capfuse.utils.log import mask_url

    assert mask_url(url) == shown


@pytest.mark.slow
def test_storage_password_never_reaches_disk_or_logs(tiny_run, tmp_path, monkeypatch, caplog, capsys):
    import optuna

    from capfuse.cli import main

    run = tiny_run.copy(tmp_path / "project")
    given = []
    real = optuna.create_study

    def create_study(*, storage=None, **kw):  # no database server here: the study lives in memory
        given.append(storage)
        return real(storage=optuna.storages.InMemoryStorage(), **kw)

    monkeypatch.setattr(optuna, "create_study", create_study)
    code = main(
        [
            "infer",
            "--data",
            str(run.data),
            "--root",
            str(run.root),
            "--config",
            str(run.config),
            *TINY_RUN_ARGS,
            "--set",
            "threshold.trials=5",
            "--storage",
            SECRET_URL,
        ]
    )
    assert code == 0
    assert SECRET_URL in given and set(given) <= {SECRET_URL, None}  # Optuna gets the real URL (None: nested studies)
    out = capsys.readouterr()
    for where, text in (("log", caplog.text), ("stdout", out.out), ("stderr", out.err)):
        assert "s3cr3t" not in text, where
    for path in run.root.rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path
    summary = json.loads((run.root / "runs" / "tiny" / "ensemble" / "thresholds.json").read_text())
    assert summary["storage"] == MASKED_URL
    assert MASKED_URL in caplog.text


def test_storage_errors_name_the_url_without_its_password():
    from capfuse.ensemble.thresholds import fit_class_thresholds

    y = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6], [0.3, 0.9]])
    # Nothing listens on port 1, and the driver may not even be installed: either way it fails.
    url = "postgresql://user:s3cr3t-pw@127.0.0.1:1/db"
    with pytest.raises(ValueError) as err:
        fit_class_thresholds(y, p, n_trials=2, storage=url, study_name="s")
    assert "s3cr3t" not in str(err.value) and "postgresql://user:***@127.0.0.1:1/db" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # the traceback cannot show it either


def test_a_refused_study_names_the_storage_without_its_password(tmp_path, monkeypatch):
    import optuna

    from capfuse.ensemble.thresholds import fit_class_thresholds

    storage = optuna.storages.InMemoryStorage()  # one database standing in for the RDB server
    real = optuna.create_study
    monkeypatch.setattr(optuna, "create_study", lambda **kw: real(**{**kw, "storage": storage}))
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6], [0.3, 0.9]])
    fit_class_thresholds(y, p, n_trials=2, storage=SECRET_URL, study_name="s")
    with pytest.raises(ValueError, match="other probabilities") as err:
        fit_class_thresholds(y, 1 - p, n_trials=2, storage=SECRET_URL, study_name="s")
    assert "s3cr3t" not in str(err.value) and MASKED_URL in str(err.value)


# -- 3. decompression bombs and 16-bit images -----------------------------------------------------
def _png(path: Path, width: int, height: int, bit_depth: int = 8, colour: int = 0) -> Path:
    """A valid PNG of zeros built row by row, so the test never holds the image in memory."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3}[colour]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)
    z, parts = zlib.compressobj(9), []
    for _ in range(height):
        parts.append(z.compress(row))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_an_image_over_the_pixel_limit_is_refused_without_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    big = _png(tmp_path / "big.png", 10_000, 6_000)  # 60 Mpx: under Pillow's own limits, over ours
    with Image.open(big) as im:
        assert im.size == (10_000, 6_000)
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    ok, findings = check_image(big)
    assert not ok and [f[:2] for f in findings] == [("error", "image_too_large")]
    assert "60 Mpx" in findings[0][2] and "max_pixels" in findings[0][2]
    assert decoded == []  # the size comes from the header; the pixels are never read
    with pytest.raises(ValueError, match=r"big\.png: .*max_pixels"):  # loaders of unvalidated folders refuse it too
        load_array(big, 32, max_pixels=50_000_000)
    assert decoded == []  # the size comes from the header; the pixels are never read
    assert check_image(big, max_pixels=70_000_000)[0]  # the limit is a setting
    huge = _png(tmp_path / "huge.png", 20_000, 10_000)  # 200 Mpx: Pillow's own bomb error
    ok, findings = check_image(huge)
    assert not ok and findings[0][1] == "image_too_large"


def test_a_bomb_in_train_is_quarantined_and_in_test_is_flagged(tmp_path):
    data = tmp_path / "ds"
    (data / "data").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(data / "data" / "ok.jpg")
    _png(data / "data" / "bomb.png", 500, 400)
    _png(data / "data" / "bomb_test.png", 500, 400)
    (data / "train.csv").write_text("ImageID,Labels,Caption\nok.jpg,1,a red square\nbomb.png,2,nothing\n")
    (data / "test.csv").write_text("ImageID,Caption\nok.jpg,again\nbomb_test.png,a caption\n")
    result = validate_dataset(data, max_pixels=100_000)  # 200 000 px images against a 100 000 px limit
    assert list(result.quarantine["ImageID"]) == ["bomb.png"]
    assert list(result.quarantine["codes"]) == ["image_too_large"]
    assert list(result.test["image_ok"]) == [True, False]
    assert result.summary["errors"] == {"image_too_large": 2}
    # A cached verdict does not outlive a change of the limit.
    cache = tmp_path / "cache"
    assert validate_dataset(data, max_pixels=100_000, cache_dir=cache).summary["train_quarantined"] == 1
    assert validate_dataset(data, max_pixels=300_000, cache_dir=cache).summary["train_quarantined"] == 0


def test_the_pixel_limit_comes_from_the_config(tmp_path):
    from capfuse.config import load_config, resolve
    from capfuse.data.dataset import load_dataset
    from capfuse.paths import Paths

    cfg = load_config(REPO / "configs" / "pipeline.yaml")
    assert 10_000_000 <= resolve(cfg).data.max_pixels < Image.MAX_IMAGE_PIXELS
    data = tmp_path / "ds"
    (data / "data").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(data / "data" / "ok.jpg")
    _png(data / "data" / "bomb.png", 500, 400)
    (data / "train.csv").write_text("ImageID,Labels,Caption\nok.jpg,1,a\nbomb.png,2,b\n")
    (data / "test.csv").write_text("ImageID,Caption\nok.jpg,c\n")
    cfg.setdefault("data", {})["max_pixels"] = 100_000
    ds = load_dataset(Paths(data_dir=data, root=tmp_path), cfg, quiet=True)
    assert list(ds.val.quarantine["codes"]) == ["image_too_large"]


def test_sixteen_bit_images_are_shrunk_before_any_float_copy(tmp_path):
    from capfuse.report.plots import thumbnail

    grey = np.full((1500, 2000), 32768, np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(grey).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    for load in (lambda: load_array(path, 32), lambda: thumbnail(path, 48)):
        tracemalloc.start()
        try:
            arr = load()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        # A float64 copy of the full image alone would be 24 MB.
        assert peak < 4_000_000, f"peak {peak / 1e6:.1f} MB"
        assert arr is not None and abs(int(arr[0, 0, 0]) - 128) <= 1  # 32768 of 65535 is mid-grey, not white


# -- 4. paths the OS refuses are unsafe_path row errors -------------------------------------------
@pytest.fixture()
def path_dataset(tmp_path):
    data = tmp_path / "ds"
    (data / "data").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 200, 10)).save(data / "data" / "ok.jpg")
    os.symlink("loop.jpg", data / "data" / "loop.jpg")  # points at itself
    os.symlink("b.jpg", data / "data" / "a.jpg")
    os.symlink("a.jpg", data / "data" / "b.jpg")
    return data


LONG_NAME = "n" * 300 + ".jpg"  # one component over the 255-byte limit
LONG_PATH = "d/" * 2100 + "x.jpg"  # a path over PATH_MAX


@pytest.mark.parametrize("image_id", ["loop.jpg", "a.jpg", LONG_NAME, LONG_PATH, "x\x00.jpg"])
def test_ids_the_os_refuses_are_unsafe_paths(path_dataset, image_id):
    with pytest.raises(UnsafePathError) as err:
        resolve_image_path(path_dataset, image_id)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400  # one readable line


def test_path_errors_quarantine_train_rows_and_stop_on_test_rows(path_dataset):
    from capfuse.data.problems import DataError

    rows = "".join(f"{i},1,caption {k}\n" for k, i in enumerate(["loop.jpg", "a.jpg", LONG_NAME, LONG_PATH]))
    (path_dataset / "train.csv").write_text("ImageID,Labels,Caption\nok.jpg,1,fine\n" + rows)
    (path_dataset / "test.csv").write_text("ImageID,Caption\nok.jpg,fine\n")
    result = validate_dataset(path_dataset)
    assert list(result.train["ImageID"]) == ["ok.jpg"]
    assert list(result.quarantine["codes"]) == ["unsafe_path"] * 4
    assert list(result.quarantine["line"]) == [3, 4, 5, 6]
    # A test row must be predicted, so a test id the OS refuses stops validation with a clear message.
    (path_dataset / "test.csv").write_text("ImageID,Caption\nloop.jpg,x\n")
    with pytest.raises(DataError, match=r"test\.csv:2: 'loop\.jpg' \[unsafe_path\]"):
        validate_dataset(path_dataset)


# -- 5. a lone carriage return stays inside its caption ---------------------------------------------
def test_a_lone_carriage_return_does_not_start_a_row(tmp_path):
    odd = "a\rb\x0bc\x0cd\x1ce\x1df\x1eg\x85h\u2028i\u2029j"
    path = tmp_path / "train.csv"
    path.write_bytes(("ImageID,Labels,Caption\r\n1.jpg,1,first " + odd + " end\r\n2.jpg,2,second\n").encode())
    rows, problems = read_split(path, "train")
    assert problems == []
    assert [(r.line, r.image_id, r.caption) for r in rows] == [(2, "1.jpg", f"first {odd} end"), (3, "2.jpg", "second")]
    assert all(r.usable for r in rows)


def test_a_lone_carriage_return_in_the_unlabelled_and_classes_files(tmp_path):
    from capfuse.data.classes import read_classes_csv
    from capfuse.data.unlabelled import read_unlabelled_csv

    path = tmp_path / "unlabelled.csv"
    path.write_bytes(b"ImageID,Caption\r\nu1.jpg,a\rb\nu2.jpg,c\n")
    table = read_unlabelled_csv(path)
    assert list(table["ImageID"]) == ["u1.jpg", "u2.jpg"] and list(table["Caption"]) == ["a\rb", "c"]
    classes = tmp_path / "classes.csv"
    classes.write_bytes(b"id,name\r\n1,red\rbus\n2,cat\n")
    assert read_classes_csv(classes) == {1: "red\rbus", 2: "cat"}


def test_a_file_with_only_carriage_returns_gets_a_clear_error(tmp_path):
    from capfuse.data.problems import DataError

    path = tmp_path / "test.csv"
    path.write_bytes(b"ImageID,Caption\r1.jpg,a\r2.jpg,b\r")
    with pytest.raises(DataError, match=r"test\.csv:1: .*carriage return"):
        read_split(path, "test")


# -- 6. make variables reach the program verbatim, never the shell ---------------------------------
@pytest.fixture()
def fake_run(tmp_path):
    """A stand-in for the capfuse executable that records its argv."""
    record = tmp_path / "argv.json"
    script = tmp_path / "fake-capfuse"
    script.write_text(f"#!{sys.executable}\nimport json, sys\njson.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n")
    script.chmod(0o755)
    return script, record


def _make(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "QUERY", "IMAGE", "STORAGE")}
    return subprocess.run(
        ["make", "--no-print-directory", "-f", str(REPO / "Makefile"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _hostile(marker_dir: Path) -> str:
    m = marker_dir
    return (
        f'a "red" bus $(touch {m}/cmd) `touch {m}/tick` $(shell touch {m}/make) '
        f"$$HOME 'it''s' ; touch {m}/semi | & \\ *  two  spaces "
    )


@pytest.mark.parametrize("target", ["search", "thresholds", "infer"])
def test_make_variables_reach_the_program_verbatim(target, fake_run, tmp_path):
    script, record = fake_run
    markers = tmp_path / "markers"
    markers.mkdir()
    value = _hostile(markers)
    var, flag, skip = {
        "search": ("QUERY", "--text", "zeroshot"),
        "thresholds": ("STORAGE", "--storage", "data"),
        "infer": ("STORAGE", "--storage", "data"),
    }[target]
    done = _make(target, "-o", skip, f"RUN={script}", f"{var}={value}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    argv = json.loads(record.read_text())
    assert argv[0] == target and argv[argv.index(flag) + 1] == value
    assert list(markers.iterdir()) == []  # nothing in the value ran, in the shell or in make
    if var == "STORAGE":  # make echoes the recipe: a password must not be in it
        assert value not in done.stdout + done.stderr


def test_make_search_by_image_and_without_a_query(fake_run, tmp_path):
    script, record = fake_run
    done = _make("search", "-o", "zeroshot", f"RUN={script}", "IMAGE=my $(pic).jpg", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    argv = json.loads(record.read_text())
    assert argv[argv.index("--image") + 1] == "my $(pic).jpg" and "--text" not in argv
    record.unlink()
    done = _make("search", "-o", "zeroshot", f"RUN={script}", "QUERY=   ", cwd=tmp_path)
    assert done.returncode == 2 and "give QUERY=" in done.stdout + done.stderr and not record.exists()
    done = _make("thresholds", "-o", "data", f"RUN={script}", cwd=tmp_path)
    assert done.returncode == 0 and "--storage" not in json.loads(record.read_text())


# -- 7. progress bars in redirected logs -------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _redraws(stream: io.StringIO, monkeypatch) -> int:
    from capfuse.utils.log import progress

    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CAPFUSE_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress(range(60), "work", quiet=False):
        time.sleep(0.02)
    return stream.getvalue().count("\r")


def test_progress_bars_redraw_rarely_when_stderr_is_a_file(monkeypatch):
    # 1.2 s of work: tqdm's default 0.1 s interval would redraw about a dozen times.
    assert _redraws(io.StringIO(), monkeypatch) <= 3  # the first draw and the clean-up, no redraws
    assert _redraws(_Terminal(), monkeypatch) >= 5  # a terminal still gets a live bar


def test_optuna_bar_is_off_when_stderr_is_a_file(monkeypatch):
    from capfuse.ensemble.thresholds import fit_class_thresholds

    stream = io.StringIO()
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("CAPFUSE_QUIET", raising=False)
    monkeypatch.setattr(sys, "stderr", stream)
    y = np.array([[1, 0], [0, 1], [1, 1], [0, 1]])
    p = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.6], [0.3, 0.9]])
    fit_class_thresholds(y, p, n_trials=20)
    assert "\r" not in stream.getvalue()
