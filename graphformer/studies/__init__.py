r"""The studies the benchmarks run, as library functions: tasks (data, models, one fit
loop per kind of graph), the sweep (results store, executor on Ray, controls), and reports
(tables, CSV, plots) beside the published numbers."""
