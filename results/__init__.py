"""The results collector: run folders -> the paper-shaped table (Markdown, CSV) and figures. Needs no torch."""
from .collect import collect, csv_text
from .runs import ModelKey, ResultsError, Run, read_run, read_runs
from .table import Cell, Table, aggregate, build_table, markdown, paper_table

__all__ = ["Cell", "ModelKey", "ResultsError", "Run", "Table", "aggregate", "build_table", "collect", "csv_text",
           "markdown", "paper_table", "read_run", "read_runs"]
