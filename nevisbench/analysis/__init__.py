"""Analysis of finished runs, above `run/`: read them (`runs.py`, the reader every table and figure
shares; the conformance kit, `nevisbench.testing`, reads its own runs' files directly),
group and name them (`labels.py`, the one labeller), tabulate (`compare.py`) and draw
(`figures.py`, the one figure path); `commands.py` holds `nevisbench compare` and `nevisbench plot`.
The sweep's comparison and the notebook call the same functions."""

from nevisbench.analysis.compare import COLUMNS, Row, compare_rows, print_table, render_table, to_csv, to_markdown
from nevisbench.analysis.figures import compute_figure, pareto_front, plot_comparison, save_figure
from nevisbench.analysis.labels import collect, label_runs
from nevisbench.analysis.runs import Run, UnreadableRun, load_runs, read_run

__all__ = ["COLUMNS", "Row", "Run", "UnreadableRun", "collect", "compare_rows", "compute_figure", "label_runs",
           "load_runs", "pareto_front", "plot_comparison", "print_table", "read_run", "render_table", "save_figure", "to_csv",
           "to_markdown"]
