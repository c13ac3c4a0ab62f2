"""Generated content of the documentation site, filled in while mkdocs builds it.

A page asks for generated content with a placeholder on a line of its own:

* ``{{ catalogue }}``: the model catalogue, ``capfuse.config.catalogue.catalogue_markdown``
  over ``configs/``, so the page lists exactly the configs that exist;
* ``{{ results:<table> }}``: every results file of one table (a folder under ``results/``:
  ``runs``, ``ablation``, ``bench``), rendered by ``capfuse.results.markdown_for``. Nobody types
  a measured figure into a page: it comes from a file that names its machine and commit;
* ``{{ estimates }}``: every scored run's estimates of its test score beside the held-out score,
  ``capfuse.results.estimates.estimates_markdown`` over ``results/runs/``.

A placeholder that cannot be filled fails the build with one line that says why: a page with a
hole in it must never be published. The one exception is a table with no results file yet,
which renders as a sentence naming the command that writes it, so a fresh clone still builds.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from mkdocs.exceptions import PluginError

# Only a placeholder alone on its line is replaced, so a page can show one in running text.
PLACEHOLDER = re.compile(r"^\{\{\s*(?P<name>[a-z_]+)(?:\s*:\s*(?P<arg>[A-Za-z0-9_-]+))?\s*\}\}[ \t]*$", re.MULTILINE)

# The command that writes each table: what a page says while the table has no file yet.
WRITTEN_BY = {
    "runs": "`make all` (and `make bench-scale` at competition size)",
    "ablation": "`make ablate`",
    "bench": "`make bench`",
    "ratios": "`make ratios`",
    "zeroshot": "`make zeroshot`",
}


@contextlib.contextmanager
def _working_dir(path: Path) -> Iterator[None]:
    # The generators take paths relative to the project root (``configs``, ``results``), as a
    # user types them, so what they print never holds this machine's absolute paths.
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _function(module: str, name: str, placeholder: str):
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise PluginError(
            f"{placeholder} needs {module}.{name}, which this checkout does not have ({exc}); "
            f"install the project into the environment that runs mkdocs (`make docs` does)"
        ) from exc


def catalogue(root: Path) -> str:
    """The model catalogue of ``root/configs`` as Markdown."""
    render = _function("capfuse.config.catalogue", "catalogue_markdown", "{{ catalogue }}")
    with _working_dir(root):
        return render(Path("configs"))


def results(table: str, root: Path) -> str:
    """Every results file of ``table`` as Markdown, or a sentence naming the command that writes it."""
    folder = root / "results" / table
    if not any(folder.glob("*.csv")):
        if table not in WRITTEN_BY:
            raise PluginError(
                f"{{{{ results:{table} }}}}: no folder results/{table}/ and no such table; "
                f"the tables are {', '.join(WRITTEN_BY)}"
            )
        return f"No results yet: {WRITTEN_BY[table]} writes this table to `results/{table}/`."
    render = _function("capfuse.results", "markdown_for", f"{{{{ results:{table} }}}}")
    with _working_dir(root):
        return render(table, Path("results"))


def estimates(root: Path) -> str:
    """The estimates-against-held-out tables of ``root/results/runs``."""
    render = _function("capfuse.results.estimates", "estimates_markdown", "{{ estimates }}")
    with _working_dir(root):
        return render(Path("results"))


def render_placeholders(markdown: str, root: Path, where: str) -> str:
    """``markdown`` with every placeholder replaced; ``where`` names the page in errors."""

    def replace(match: re.Match) -> str:
        name, arg = match["name"], match["arg"]
        if name == "catalogue" and arg is None:
            return catalogue(root).strip()
        if name == "results" and arg is not None:
            return results(arg, root).strip()
        if name == "estimates" and arg is None:
            return estimates(root).strip()
        raise PluginError(
            f"unknown placeholder {match[0].strip()!r}; use {{{{ catalogue }}}}, {{{{ estimates }}}} or "
            "{{ results:<table> }}"
        )

    try:
        return PLACEHOLDER.sub(replace, markdown)
    except PluginError as exc:
        raise PluginError(f"{where}: {exc}") from exc


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    root = Path(config.config_file_path).resolve().parent
    return render_placeholders(markdown, root, f"docs/{page.file.src_uri}")
