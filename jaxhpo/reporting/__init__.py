"""What a run shows and exports, all of it read from the run directory's committed tables.

::

    report.py         RUN_DIR/report.md, summary.json and the plots (jaxhpo report RUN_DIR)
    plots.py          curves, lineage and the hyperparameter plots
    choices.py        searched optimizer / schedule names in the report's tables
    callbacks.py      the callback protocol (on_start, on_evaluation, on_end) and its replay
                      from the tables after a resume
    tensorboard.py    RUN_DIR/tensorboard (rebuilt from the tables on resume)
    optuna_export.py  members as Optuna trials, live or afterwards
    trackers.py       W&B (offline) and MLflow (local) callbacks

The run directory's own format (tables, locks, reading a finished run) is
:mod:`jaxhpo.results`, which the strategies read too (warm starts, replay).
"""
