"""Measured results as generated files under ``results/``: every figure names its machine and commit.

* ``machine``: the machine record (commit, date, CPU, instruction set, threads, GPU) and its slug;
* ``tables``: writing a results file (CSV and Markdown) and ``markdown_for``, what the docs show;
* ``runs``: the ``runs`` table of a finished ``make all``, from the files the run wrote;
* ``presets``: the README's presets table, rendered from the ``runs`` files.

Importing the package loads neither torch nor the models: ``machine`` (which does) is imported
by the commands that measure, so the documentation build and ``capfuse results render`` stay light.
"""

from capfuse.results.tables import RESULTS_ENV, Written, markdown_for, results_dir, write_results

__all__ = ["RESULTS_ENV", "Written", "markdown_for", "results_dir", "write_results"]
