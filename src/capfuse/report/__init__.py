"""Reading a finished run: the HTML run report (``make report``) and the notebooks' functions.

* ``run``: ``Run`` / ``open_run``, the run's artefacts (required ones fail with the command to run);
* ``tables``: the numbers, as pure functions of label matrices and artefact tables;
* ``plots``: matplotlib figures of those tables (object-oriented API, Agg);
* ``views``: one call per table or figure on a ``Run``, shared by the report and the notebooks;
* ``sections`` / ``html``: the self-contained report page.
"""

from capfuse.report.run import KeptOOF, MissingArtefact, Run, open_run

__all__ = ["KeptOOF", "MissingArtefact", "Run", "open_run"]
