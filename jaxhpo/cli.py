"""The ``jaxhpo`` command line: ``run``, ``report``, ``list``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jaxhpo.presets import DEFAULT_EXPERIMENT, PRESETS

RUN_HELP = f"""\
Train a population of Transformers and tune their hyperparameters.

EXPERIMENT is a built-in experiment name (see `jaxhpo list`) or a YAML/JSON config file;
without it, the default experiment '{DEFAULT_EXPERIMENT}' runs. OVERRIDES are key.sub=value
pairs merged over it, for example:

  jaxhpo run
  jaxhpo run lm-grid train.steps=200
  jaxhpo run lm-random population.size=16 'space.lr=loguniform(1e-4, 1e-2)'
  jaxhpo run my_config.yaml task.corpus=~/books/moby.txt

A Python file (a reproduction in experiments/) runs its main() with the remaining arguments:

  jaxhpo run experiments/pbt_toy.py --seeds 20

Config sections: name, seed, out_dir, task.*, model.*, optim.*, population.*, train.*,
strategy.*, space.<hparam>. A run writes OUT_DIR/NAME-DATE/ with config.yaml, metrics.csv,
metrics.parquet, members.csv, summary.md and plots/.
"""


EPILOG = """\
Start here:
  jaxhpo run                 the default experiment (about a minute on 2 CPU cores)
  jaxhpo list                the built-in experiments
  jaxhpo run --help          config files and key=value overrides
  jaxhpo report RUN_DIR      plots and summary of a finished (or interrupted) run
  jaxhpo resume RUN_DIR      continue an interrupted run from its latest checkpoint"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``jaxhpo: error: ...``, exit status 2), not usage + error."""

    def error(self, message: str):
        print(f"jaxhpo: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="jaxhpo",
        description="Tune Transformer hyperparameters by training a whole population as one "
        "JAX program.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback behind an error raised by your own code (JAXHPO_DEBUG=1)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser(
        "run",
        help="run an experiment",
        description=RUN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("experiment", nargs="?", default=None, metavar="EXPERIMENT|CONFIG_FILE")
    r.add_argument("overrides", nargs="*", metavar="key=value")
    r.add_argument("--out", default=None, help="parent folder of the run directory (out_dir)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    res = sub.add_parser("resume", help="continue an interrupted run from its latest checkpoint")
    res.add_argument("run_dir", metavar="RUN_DIR")
    res.add_argument("--quiet", action="store_true", help="no progress bar")
    rep = sub.add_parser("report", help="write plots and summary.md for a run directory")
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.add_argument(
        "--to-optuna",
        metavar="STORAGE",
        default=None,
        help="also write the run's members as trials of an Optuna study (sqlite:///study.db)",
    )
    rep.add_argument("--study-name", default=None, help="with --to-optuna (default: run name)")
    sub.add_parser("list", help="list the built-in experiments")
    from jaxhpo.data import cli as data_cli

    data_cli.add_parser(sub)
    return p


def load_config(experiment: str | None, overrides: list[str]):
    """Builds a validated Config from a preset or file plus overrides.

    A task of the user's own (``task.kind=file.py:Name`` or ``module:Class``) with no
    experiment named starts from :data:`jaxhpo.presets.USER_TASK_DEFAULTS`, as
    :func:`jaxhpo.tune` does, not from the default experiment's byte-level LM; its run is named
    ``TASKNAME-STRATEGY`` unless ``name`` is given, and a file reference is stored absolute.
    """
    from jaxhpo import refs
    from jaxhpo.config import load_file, parse_override
    from jaxhpo.presets import preset

    base: dict | None = None
    layers = []
    near: tuple[Path, ...] = ()  # a config file's folder and its parent
    if experiment is not None and "=" in experiment:
        overrides = [experiment, *overrides]
        experiment = None
    if experiment is None:
        pass
    elif experiment in PRESETS:
        base = preset(experiment)
    elif Path(experiment).suffix in (".yaml", ".yml", ".json") or Path(experiment).exists():
        data = load_file(experiment)
        near = (Path(experiment).parent, Path(experiment).parent.parent)
        named = data.pop("experiment", None)
        if named is not None:
            if not isinstance(named, str):
                raise ValueError(f"experiment: must be a built-in experiment name, got {named!r}")
            base = preset(named)
        layers.append(data)
    else:
        raise ValueError(
            f"experiment: '{experiment}' is neither a built-in experiment "
            f"({', '.join(PRESETS)}) nor a config file"
        )
    layers += [parse_override(o) for o in overrides]
    with refs.looking_in(*near):  # a task file moved next to the run directory: found there
        return _checked(base, layers)


def _checked(base: dict | None, layers: list[dict]):
    """The config of ``base`` (a preset's layer; None: none named) and ``layers``, checked."""
    from dataclasses import replace

    from jaxhpo import refs
    from jaxhpo.config import Config, build
    from jaxhpo.presets import USER_TASK_DEFAULTS, preset
    from jaxhpo.run.validate import check_config
    from jaxhpo.tasks.user_task import check_user_config, task_label

    cfg = build(Config(), *([base] if base else []), *layers)
    user = refs.is_reference(cfg.task.kind)
    if base is None:  # a user's task starts where jaxhpo.tune starts
        cfg = build(Config(), USER_TASK_DEFAULTS if user else preset(DEFAULT_EXPERIMENT), *layers)
    cfg = replace(  # file references absolute: the run directory is read from anywhere
        cfg,
        task=replace(cfg.task, kind=refs.absolute(cfg.task.kind)),
        optim=replace(cfg.optim, optimizer=refs.absolute(cfg.optim.optimizer)),
    )
    if user:
        if not any("name" in layer for layer in layers):
            cls = refs.resolve(cfg.task.kind, "task.kind")
            cfg = replace(cfg, name=f"{task_label(cls)}-{cfg.strategy.name}")
        check_user_config(cfg)
    return check_config(cfg)


def use_cpu_cores() -> None:
    """Gives XLA one virtual CPU device per core, before JAX starts, so that a population can be
    sharded over the cores (``population.devices``). Only the CPU platform is affected; an
    accelerator stays the default device. ``JAXHPO_CPU_DEVICES=N`` picks N (1 turns it off); an
    explicit ``--xla_force_host_platform_device_count`` in ``XLA_FLAGS`` wins."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = int(os.environ.get("JAXHPO_CPU_DEVICES", os.cpu_count() or 1))
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def run_script(path: str, argv: list[str]) -> int:
    """``jaxhpo run experiments/NAME.py ARGS``: a reproduction script's ``main(ARGS)``."""
    import importlib.util

    file = Path(path)
    if not file.is_file():
        print(f"jaxhpo: error: experiment: no such file {path}", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "main"):
        print(f"jaxhpo: error: experiment: {path} defines no main(argv)", file=sys.stderr)
        return 2
    return int(module.main(argv) or 0)


def _debug_flag(argv: list[str]) -> list[str]:
    """``--debug`` anywhere before a script's own arguments: sets ``JAXHPO_DEBUG=1``."""
    if "--debug" not in argv:
        return argv
    from jaxhpo.refs import DEBUG_ENV

    os.environ[DEBUG_ENV] = "1"
    return [a for a in argv if a != "--debug"]


def _error(e: BaseException) -> int:
    """The one line of a refused input (and, under ``--debug``, the traceback before it)."""
    from jaxhpo.refs import debug

    if debug():
        import traceback

        traceback.print_exception(e, file=sys.stderr)
    print(f"jaxhpo: error: {e}", file=sys.stderr)
    return 2


def _check_report_args(args) -> None:
    """``jaxhpo report``'s options, before anything is rewritten."""
    if args.study_name is not None and not args.to_optuna:
        raise ValueError("--study-name: names the study of --to-optuna; give --to-optuna URL too")
    if args.to_optuna:
        from jaxhpo.storage_url import check_optuna, check_storage_url

        check_storage_url(args.to_optuna, "--to-optuna")
        check_optuna("--to-optuna")


def _report(args) -> int:
    """``jaxhpo report RUN_DIR [--to-optuna URL [--study-name NAME]]``."""
    from jaxhpo.reporting.report import write_report

    _check_report_args(args)  # before the summary and plots are rewritten
    summary = write_report(Path(args.run_dir))
    print(summary.read_text())
    print(f"plots: {summary.parent / 'plots'}")
    if args.to_optuna:
        from jaxhpo.reporting.optuna_export import export_run

        name = export_run(args.run_dir, args.to_optuna, args.study_name)
        print(f"optuna: study '{name}' in {args.to_optuna}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not (len(argv) >= 2 and argv[0] == "run" and argv[1].endswith(".py")):
        argv = _debug_flag(argv)
    if len(argv) >= 2 and argv[0] == "run" and argv[1].endswith(".py"):
        use_cpu_cores()
        return run_script(argv[1], argv[2:])
    parser = _parser()
    args, extra = parser.parse_known_args(argv)  # usage errors: one line, SystemExit(2)
    # key=value overrides may also come after options (`jaxhpo run --out runs x.y=1`).
    stray = [x for x in extra if x.startswith("-") or "=" not in x]
    if stray or (extra and args.command != "run"):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if args.command in ("run", "resume"):
        use_cpu_cores()
        try:
            from jaxhpo import parallel

            parallel.initialize()  # multi-host: from JAXHPO_COORDINATOR etc. (a no-op without)
        except ValueError as e:
            print(f"jaxhpo: error: {e}", file=sys.stderr)
            return 2
    if args.command is None:
        _parser().print_help()
        return 0
    if args.command == "data":
        from jaxhpo.data import cli as data_cli

        return data_cli.run(args)
    if args.command == "list":
        width = max(map(len, PRESETS))
        for name, spec in PRESETS.items():
            mark = " (default)" if name == DEFAULT_EXPERIMENT else ""
            print(f"{name:<{width}}  {spec['_about']}{mark}")
        return 0
    try:
        if args.command == "report":
            return _report(args)
        if args.command == "resume":
            from jaxhpo.checkpoint import CheckpointNotRestoredError
            from jaxhpo.experiment import resume_run

            try:
                result = resume_run(Path(args.run_dir), quiet=args.quiet)
            except CheckpointNotRestoredError as e:  # not corrupt, left in place: one line
                print(f"jaxhpo: error: {str(e).splitlines()[0]}", file=sys.stderr)
                return 1
            _print_summary(result.run_dir)
            return 0
        overrides = list(args.overrides)
        if args.out:
            overrides.append(f"out_dir={args.out}")
        cfg = load_config(args.experiment, overrides)
        from jaxhpo.experiment import prepare, run

        prepared = prepare(cfg)
        out = Path(cfg.out_dir).expanduser()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"out_dir: cannot create {out}: {e.strerror}") from None
        if not os.access(out, os.W_OK):
            raise ValueError(f"out_dir: {out} is not writable")
    except (ValueError, OSError) as e:  # ConfigError is a ValueError: one line naming the field
        return _error(e)
    from jaxhpo.experiment import OutOfMemoryError

    try:
        result = run(cfg, prepared=prepared, quiet=args.quiet)
    except OutOfMemoryError as e:
        print(f"jaxhpo: error: {e}", file=sys.stderr)
        return 3
    _print_summary(result.run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    """The run's summary on stdout (by the process that wrote it, in a multi-process run)."""
    from jaxhpo import parallel

    if parallel.is_writer():
        print((run_dir / "summary.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
