"""The words around the code: the docs site builds strictly, and README and pages hold no typed figure.

A broken link, a missing anchor, a page left out of the navigation or a placeholder that cannot
be filled fails ``mkdocs build --strict``; building it here makes each of those a failed test.
Measured figures belong in results files (``results/``), which the site includes: a decimal
typed into prose is what this file refuses, outside code, where settings are shown.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
README_MAX_LINES = 200
RESULTS_BLOCK = ("<!-- results:presets -->", "<!-- /results:presets -->")

# A decimal figure such as 0.85 or 12.4, not part of a word, a version range, a path or an
# identifier such as arXiv:2412.18842 (those sit after a colon or a slash).
DECIMAL = re.compile(r"(?<![\w.:/-])\d+\.\d+(?![\w.])")
# "paper (a)", "papers (c) and (d)", "paper b": the methods are named by what they do instead.
PAPER_LETTER = re.compile(r"\bpapers?\s*\(?[a-d]\b\)?", re.IGNORECASE)


def _mkdocs_or_skip() -> None:
    missing = [m for m in ("mkdocs", "material", "pymdownx") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    why = f"{', '.join(missing)} not installed (the docs extra: mkdocs-material)"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; CI must build the docs")
    pytest.skip(why)


def _prose(markdown: str) -> str:
    """The text a reader reads as prose: without fenced code, inline code and link targets."""
    text = re.sub(r"^( *)(```|~~~).*?^\1\2[^\n]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.sub(r"\]\([^)\s]*\)", "]", text)


def _readme_outside_results() -> str:
    text = README.read_text(encoding="utf-8")
    start, end = RESULTS_BLOCK
    if start in text and end in text:
        # The block between the markers is written by `capfuse results render` from results files.
        text = text[: text.index(start)] + text[text.index(end) + len(end) :]
    return text


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


# -- the site ------------------------------------------------------------------------------------


def test_the_site_builds_strictly(tmp_path):
    _mkdocs_or_skip()
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    command = ["mkdocs", "build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(site)]
    run = subprocess.run(
        [sys.executable, "-m", *command],
        cwd=REPO,  # snippets and the generators read paths relative to the project root
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stdout}\n{run.stderr}"
    for page in ("index.html", "models.html", "performance.html", "references.html"):
        assert (site / page).is_file(), f"{page} missing from the built site"
    # Generated pages hold what the generators wrote, not the placeholders.
    for page in ("models.html", "performance.html"):
        html = (site / page).read_text(encoding="utf-8")
        assert "{{" not in html, f"{page} still holds a placeholder"


def _hooks():
    _mkdocs_or_skip()
    spec = importlib.util.spec_from_file_location("capfuse_docs_hooks", DOCS / "hooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_results_table_without_files_names_the_command_that_writes_it(tmp_path):
    hooks = _hooks()
    page = "# Bench\n\n{{ results:bench }}\n\nand `{{ results:bench }}` in running text stays.\n"
    out = hooks.render_placeholders(page, tmp_path, "docs/x.md")
    assert "No results yet: `make bench` writes this table to `results/bench/`." in out
    assert "`{{ results:bench }}` in running text" in out


def test_an_unknown_table_or_placeholder_fails_the_build_naming_the_page(tmp_path):
    hooks = _hooks()
    with pytest.raises(hooks.PluginError, match=r"docs/x.md: .*no such table"):
        hooks.render_placeholders("{{ results:nosuch }}\n", tmp_path, "docs/x.md")
    with pytest.raises(hooks.PluginError, match=r"docs/x.md: unknown placeholder"):
        hooks.render_placeholders("{{ catalog }}\n", tmp_path, "docs/x.md")


def test_a_missing_generator_fails_the_build_instead_of_leaving_a_hole(tmp_path, monkeypatch):
    hooks = _hooks()
    monkeypatch.setitem(sys.modules, "capfuse.config.catalogue", None)  # import now raises ImportError
    needs = r"docs/models.md: \{\{ catalogue \}\} needs capfuse.config.catalogue.catalogue_markdown"
    with pytest.raises(hooks.PluginError, match=needs):
        hooks.render_placeholders("{{ catalogue }}\n", tmp_path, "docs/models.md")


def test_a_results_table_with_files_is_rendered_by_the_results_module(tmp_path, monkeypatch):
    hooks = _hooks()
    (tmp_path / "results" / "runs").mkdir(parents=True)
    (tmp_path / "results" / "runs" / "2026-01-01_demo-default_cpu_abcdef0.csv").write_text("a\n1\n")
    calls = []

    def markdown_for(table, results_root, newest_only=False):
        calls.append((table, results_root, Path.cwd()))
        return "| a |\n|---|\n| 1 |"

    monkeypatch.setattr(hooks, "_function", lambda module, name, placeholder: markdown_for)
    out = hooks.render_placeholders("{{ results:runs }}\n", tmp_path, "docs/p.md")
    assert out.strip() == "| a |\n|---|\n| 1 |"
    # Called with paths relative to the project root, from the project root.
    assert calls == [("runs", Path("results"), tmp_path.resolve())]


def test_the_estimates_placeholder_renders_the_scored_runs_from_the_results_files(tmp_path):
    hooks = _hooks()
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    head = "slug,commit,date,dataset,preset,kind,name,mean_f1,nested_mean_f1\n"
    common = "cpu-2t,0123456,2026-12-01T10:00:00Z,shifted,default"
    (runs / "2026-12-01_shifted-default_cpu-2t_0123456.csv").write_text(
        head
        + f"{common},second_level,weighted_blend,0.88,0.87\n"
        + f"{common},expected_test,weighted_blend,,0.845\n"
        + f"{common},held_out,submission,0.85,\n"
    )
    out = hooks.render_placeholders("# Shift\n\n{{ estimates }}\n", tmp_path, "docs/shift.md")
    assert "| 0.8500 | 0.8700 (+0.0200) |  | 0.8450 (-0.0050) |" in out and "{{" not in out
    assert "{{ estimates }}" in (DOCS / "shift.md").read_text(encoding="utf-8")


# -- README --------------------------------------------------------------------------------------


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; the limit is {README_MAX_LINES}"


def test_readme_has_the_generated_presets_block():
    text = README.read_text(encoding="utf-8")
    start, end = RESULTS_BLOCK
    assert start in text and end in text, f"README.md needs the markers {start} and {end}"
    assert text.index(start) < text.index(end)


def test_readme_holds_no_typed_figure_and_no_paper_letters():
    prose = _prose(_readme_outside_results())
    assert not DECIMAL.findall(prose), f"README.md types figures by hand: {DECIMAL.findall(prose)}"
    assert not PAPER_LETTER.findall(README.read_text(encoding="utf-8")), "README.md names a method by a paper's letter"


# -- the pages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_a_page_holds_no_typed_figure(page):
    prose = _prose(page.read_text(encoding="utf-8"))
    found = DECIMAL.findall(prose)
    assert not found, f"{page.relative_to(REPO)} types figures by hand (include a results file instead): {found}"


def test_methods_are_named_by_what_they_do_not_by_a_paper_letter():
    sources = [README, REPO / "Makefile", *_pages(), *sorted((REPO / "src").rglob("*.py"))]
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in sources
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if PAPER_LETTER.search(line)
    ]
    assert not hits, "name the method, and cite it on docs/references.md:\n" + "\n".join(hits)


def test_the_prose_check_can_fail():
    # The figure check must see a figure in prose and ignore the same text in code.
    assert DECIMAL.findall(_prose("The stacker scored 0.857 on the demo.")) == ["0.857"]
    assert not DECIMAL.findall(_prose("Set `train.lr: 0.002`.\n\n```yaml\nclip: 0.05\n```\n"))
    assert not DECIMAL.findall(_prose("arXiv:2412.18842, [a link](https://x.org/v1.2)"))
    assert PAPER_LETTER.search("as in paper (b)") and PAPER_LETTER.search("papers (c) and (d)")
    assert not PAPER_LETTER.search("wallpaper, papered over")


# -- the tests the pages name --------------------------------------------------------------------
# `tests/test_x.py` or `tests/test_x.py::test_name`, as the Guarantees page names its proofs.
NAMED_TEST = re.compile(r"\btests/([\w/]+\.py)(?:::(\w+))?")


def _missing_tests(text: str) -> list[str]:
    missing = []
    for file, name in sorted(set(NAMED_TEST.findall(text))):
        path = REPO / "tests" / file
        if not path.is_file():
            missing.append(f"tests/{file}")
        elif name and not re.search(rf"^(async )?def {name}\(", path.read_text(encoding="utf-8"), re.MULTILINE):
            missing.append(f"tests/{file}::{name}")
    return missing


def test_every_test_the_docs_name_exists():
    for source in (README, *_pages()):
        missing = _missing_tests(source.read_text(encoding="utf-8"))
        assert not missing, f"{source.relative_to(REPO)} names tests that do not exist: {missing}"


def test_the_guarantees_page_names_a_test_for_every_row():
    page = (DOCS / "guarantees.md").read_text(encoding="utf-8")
    rows = [line for line in page.splitlines() if line.startswith("| ") and not line.startswith("| event")]
    rows = [row for row in rows if not row.startswith(("| promise", "|---"))]
    assert rows and all(NAMED_TEST.search(row) for row in rows), [r for r in rows if not NAMED_TEST.search(r)]


def test_the_named_test_check_can_fail():
    assert _missing_tests("see `tests/test_docs.py::test_the_named_test_check_can_fail`") == []
    assert _missing_tests("`tests/test_docs.py::test_that_is_not_there`") == [
        "tests/test_docs.py::test_that_is_not_there"
    ]
    assert _missing_tests("`tests/test_nowhere.py`") == ["tests/test_nowhere.py"]
