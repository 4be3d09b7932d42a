"""Experiment configuration: typed dataclasses, loaded strictly from YAML/JSON and ``key=value``.

Every field is checked before anything compiles: an unknown key, a wrong type or an out-of-range
value raises ``ConfigError`` with one line that names the field (``task.seq_len: ...``).

Why not tyro or Hydra: the CLI takes ``jaxhpo run EXPERIMENT key.sub=value`` overrides and YAML
files whose ``space`` section is a free-form mapping; a 100-line strict loader over ``dataclasses``
gives one-line errors naming the dotted field for files and overrides alike, which neither gives as
is.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from jaxhpo.strict_yaml import (  # noqa: F401  (parse_override, load_file, ...: re-exported)
    ConfigError,
    _coerce,
    _plain,
    _resolve,
    _Text,
    load_file,
    parse_override,
    quote_calls,
)


@dataclasses.dataclass
class TaskConfig:
    kind: str = "lm"  # lm | modular | brackets | pbt_toy | mlm | finetune | module:Class
    args: dict = dataclasses.field(default_factory=dict)  # module:Class: constructor arguments
    corpus: str | None = None  # lm: a text file or folder; None = Python stdlib sources
    #: lm: bytes of corpus read; unset: the stdlib sources' first 2 MB, a named corpus whole up
    #: to 256 MiB (a cut says so on stderr)
    max_bytes: int | None = None
    data: str | None = None  # lm: a prepared token folder (jaxhpo data prepare); wins over corpus
    feed: str = "host"  # task.data: host (memory map, per segment) | device (whole split on device)
    seq_len: int = 64  # lm / brackets: tokens per example
    batch_size: int = 16
    eval_batches: int = 8  # lm: validation/test batches
    modulus: int = 97  # modular
    operation: str = "+"  # modular: + - * /
    train_frac: float = 0.5  # modular
    num_examples: int = 4096  # brackets
    data_seed: int = 0
    folds: int = 1  # k-fold cross-validation: each trial trains as k members (1: off)
    mask_prob: float = 0.15  # mlm: fraction of positions selected for BERT masking
    num_train: int = 1024  # finetune: fixed training set size (examples per epoch)
    corrupt_frac: float = 0.15  # finetune: fraction of a corrupted window's bytes replaced
    pretrained: str | None = None  # finetune: run dir (train.save_best=true) to start from


@dataclasses.dataclass
class ModelConfig:
    num_layers: int = 2
    num_heads: int = 4
    d_model: int = 64
    d_ff: int = 256
    pre_norm: bool = True
    tie_embeddings: bool = True
    pooling: str | None = None  # classification pooling: mean | first (task default if None)
    parametrization: str = "standard"  # standard | mup (µP, jaxhpo.models.mup)
    mup_base_width: int | None = None  # µP: width_mult = d_model / mup_base_width (None: 1)
    init_scheme: str | None = None  # normal|truncated_normal|uniform|xavier|mup (None: by param.)
    init_scale: float = 1.0  # multiplier of the weights' init std (per member: space.init_scale)


@dataclasses.dataclass
class OptimConfig:
    optimizer: str = "adamw"
    schedule: str = "warmup_cosine"


@dataclasses.dataclass
class PopulationConfig:
    size: int | None = 8  # None: the strategy decides (full grid)
    #: the first member's id, the others' follow (ids seed each member's init and data
    #: order): size=1, first_member=5 trains member 5 of a larger run of the same seed alone
    first_member: int = 0
    mode: str = "auto"  # auto | vmap | map | chunked (on each device)
    chunk_size: int = 4
    devices: int = 0  # shard members over this many devices; 0 = as many as divide the size
    data_devices: int = 1  # split each member's batch over this many devices (mesh axis "data")
    structure: str = "masked"  # structural dims: masked super-model | buckets
    bucket_placement: str = "shared"  # buckets: shared (all devices, in turn) | split (own device)
    specialise: bool = True  # task hparams outside the space are constants of the compiled step


@dataclasses.dataclass
class TrainConfig:
    steps: int = 300  # optimizer steps per member
    segment_steps: int = 50  # steps per compiled segment (evaluation and strategy in between)
    budget: int | None = None  # stop once this many member-steps were trained (None: no cap)
    compiled: bool = False  # the whole run (segments + strategy) as one program, lax.scan
    checkpoint_every: int = 1  # segments between checkpoints (0: none); `jaxhpo resume RUN_DIR`
    keep_checkpoints: int = 3  # the latest k checkpoints are kept
    ensemble_top_k: int = 0  # >0: also evaluate the top-k members' averaged predictions
    save_best: bool = False  # save the best member's weights in RUN_DIR/pretrained (orbax)
    compile_cache: bool = True  # JAX's persistent compilation cache (jaxhpo/compile_cache.py)


@dataclasses.dataclass
class StrategyConfig:
    """The ``strategy:`` section: which strategy runs, the metric it optimises, and that
    strategy's own settings (``options``; each strategy's ``Config`` dataclass, in its own file,
    types and checks them: :func:`jaxhpo.run.validate.strategy_settings`).

    In a file the settings sit beside ``name``: ``strategy: {name: pbt, ready_steps: 100}``;
    on the command line ``strategy.ready_steps=100``. A layer that names another strategy
    starts its settings afresh (``jaxhpo run lm-pbt strategy.name=bo`` drops PBT's).
    """

    name: str = "random"  # random|sobol|grid|pbt|halving|hyperband|median|replay|evo|bo|rl|...
    metric: str = "loss"  # the validation metric the study optimises (one objective)
    #: several objectives instead: {metric: min | max} (jaxhpo.objectives); {} = metric alone
    objectives: dict[str, str] = dataclasses.field(default_factory=dict)
    constraints: dict[str, str] = dataclasses.field(default_factory=dict)  # {metric: "<= 2e6"}
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # the strategy's settings


#: Settings of the flat strategy section before they moved to their strategy (jaxhpo 0.1):
#: old key -> new key. The rest kept their names.
RENAMED_STRATEGY_KEYS: dict[str, str] = {
    "grid_points": "points_per_dim",
    "halving_mode": "mode",
    "es_schedule": "schedule",
    "es_learning_rate": "learning_rate",
    "es_params": "params",
    "es_options": "options",
    "bo_candidates": "candidates",
    "bo_fit_steps": "fit_steps",
    "bo_local_steps": "local_steps",
    "bo_trust_region": "trust_region",
    "bo_initial": "initial",
    "optuna_sampler": "sampler",
    "optuna_storage": "storage",
    "optuna_study": "study",
    "optuna_options": "sampler_options",
    "optuna_pruner": "pruner",
    "optuna_pruner_options": "pruner_options",
    "rl_learning_rate": "learning_rate",
    "rl_baseline_decay": "baseline_decay",
    "rl_entropy": "entropy",
    "hypergrad_lr": "outer_lr",
    "hypergrad_outer": "outer",
    "hypergrad_remat": "remat",
    "hypergrad_chunk": "chunk",
    "pes_sigma": "sigma",
    "pes_horizon": "horizon",
    "implicit_method": "method",
    "implicit_terms": "terms",
    "implicit_alpha": "alpha",
}


@dataclasses.dataclass
class ReportConfig:
    tensorboard: bool = True  # RUN_DIR/tensorboard event files (jaxhpo.reporting.tensorboard)
    optuna_storage: str | None = None  # also write members as Optuna trials, live (sqlite:///x.db)
    optuna_study: str | None = None  # the study's name (None: the run directory's name)


@dataclasses.dataclass
class Config:
    name: str = "run"
    seed: int = 0
    out_dir: str = "runs"
    task: TaskConfig = dataclasses.field(default_factory=TaskConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    population: PopulationConfig = dataclasses.field(default_factory=PopulationConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    strategy: StrategyConfig = dataclasses.field(default_factory=StrategyConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    #: The search space: name -> dimension (see jaxhpo.space.Space.from_config). Scalars are fixed.
    space: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, the strategy's settings beside its name (the shape of a config file)."""
        out = dataclasses.asdict(self)
        section = out.pop("strategy")
        options = {k: _plain(v) for k, v in section.pop("options").items()}
        out["strategy"] = {**section, **options}
        return out


def _merge(obj: Any, data: dict[str, Any], where: str) -> Any:
    """Returns a copy of dataclass ``obj`` with ``data`` merged in, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    fields = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(
                f"{path}: unknown field (expected one of: {', '.join(sorted(fields))})"
            )
        current = getattr(obj, key)
        if isinstance(current, StrategyConfig):
            changes[key] = _merge_strategy(current, value, path)
        elif dataclasses.is_dataclass(current):
            sub = value.parsed() if isinstance(value, _Text) else value
            changes[key] = _merge(current, sub, path)
        elif key == "space":
            # `space=...` as one override replaces the space; a mapping (a file's section or
            # `space.NAME=...`) sets dimensions one by one, and NAME: null removes one.
            replace = isinstance(value, _Text)
            value = _resolve(value)
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: expected a mapping of name -> dimension, got {value!r}")
            merged = {} if replace else dict(current)
            for name, dim in value.items():
                if dim is None:
                    merged.pop(name, None)
                else:
                    merged[name] = dim
            changes[key] = merged
        else:
            changes[key] = _coerce(value, hints[key], path)
    return dataclasses.replace(obj, **changes)


def _merge_strategy(current: StrategyConfig, data: Any, where: str) -> StrategyConfig:
    """The ``strategy:`` section with ``data`` merged in: ``name`` and ``metric`` checked here,
    the strategy's own settings kept as given (typed against its ``Config`` by
    :func:`jaxhpo.run.validate.strategy_settings`, which knows the strategies). A layer naming
    another strategy starts the settings afresh."""
    if isinstance(data, _Text):
        data = data.parsed()
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    name = _coerce(data["name"], str, f"{where}.name") if "name" in data else current.name
    options = dict(current.options) if name == current.name else {}
    common = {}
    for key, tp in (("metric", str), ("objectives", dict), ("constraints", dict)):
        if key in data:
            common[key] = _coerce(data[key], tp, f"{where}.{key}")
            if tp is dict:
                common[key] = {str(k): _plain(v) for k, v in common[key].items()}
    for key, value in data.items():
        if key not in ("name", "metric", "objectives", "constraints"):
            options[str(key)] = value
    return dataclasses.replace(current, name=name, options=options, **common)


def merge_settings(obj: Any, data: dict[str, Any], where: str) -> Any:
    """A copy of the frozen settings dataclass ``obj`` with ``data`` merged in strictly (types
    from its annotations; its ``__post_init__`` checks run). One-line ``ConfigError`` naming
    ``where.KEY``."""
    try:
        return _merge(obj, data, where)
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e).splitlines()[0]) from None


def build(base: Config, *layers: dict[str, Any]) -> Config:
    """Merges layers (file contents, overrides) into ``base`` strictly, then validates."""
    cfg = base
    for layer in layers:
        cfg = _merge(cfg, layer, "")
    validate(cfg)
    return cfg


def _positive(where: str, value: int | None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or value < 1:
        raise ConfigError(f"{where}: must be >= 1, got {value}")


def validate(cfg: Config) -> None:
    """Value checks that need no registry, model or data; the names each registry resolves
    (tasks, optimizers, strategies and their settings) are checked by
    :func:`jaxhpo.run.validate.check_config`."""
    for where, seed in (("seed", cfg.seed), ("task.data_seed", cfg.task.data_seed)):
        if not 0 <= seed < 2**31:
            raise ConfigError(f"{where}: must lie in [0, 2**31), got {seed}")
    for name in ("seq_len", "batch_size", "eval_batches", "num_examples"):
        _positive(f"task.{name}", getattr(cfg.task, name))
    _positive("task.max_bytes", cfg.task.max_bytes, allow_none=True)
    for name in ("num_layers", "num_heads", "d_model", "d_ff"):
        _positive(f"model.{name}", getattr(cfg.model, name))
    _positive("model.mup_base_width", cfg.model.mup_base_width, allow_none=True)
    if not 0 <= cfg.model.init_scale < float("inf"):
        raise ConfigError(
            f"model.init_scale: must be a finite number >= 0, got {cfg.model.init_scale}"
        )
    if cfg.population.size is not None and cfg.population.size < 1:
        raise ConfigError(f"population.size: must be >= 1, got {cfg.population.size}")
    if not 0 <= cfg.population.first_member < 2**30:
        raise ConfigError(
            f"population.first_member: a member id in [0, 2**30), got {cfg.population.first_member}"
        )
    _positive("task.folds", cfg.task.folds)
    _positive("population.chunk_size", cfg.population.chunk_size)
    if cfg.population.devices < 0:
        raise ConfigError(
            f"population.devices: must be >= 0 (0 = auto), got {cfg.population.devices}"
        )
    _positive("population.data_devices", cfg.population.data_devices)
    if cfg.population.structure not in ("masked", "buckets"):
        raise ConfigError(
            f"population.structure: unknown '{cfg.population.structure}' (masked | buckets)"
        )
    if cfg.population.bucket_placement not in ("shared", "split"):
        raise ConfigError(
            f"population.bucket_placement: unknown '{cfg.population.bucket_placement}' "
            "(shared | split)"
        )
    _positive("train.steps", cfg.train.steps)
    _positive("train.segment_steps", cfg.train.segment_steps)
    _positive("train.budget", cfg.train.budget, allow_none=True)
    if cfg.train.checkpoint_every < 0:
        raise ConfigError(
            f"train.checkpoint_every: must be >= 0 (0 = no checkpoints), got "
            f"{cfg.train.checkpoint_every}"
        )
    _positive("train.keep_checkpoints", cfg.train.keep_checkpoints)
    if cfg.train.ensemble_top_k < 0:
        raise ConfigError(f"train.ensemble_top_k: must be >= 0, got {cfg.train.ensemble_top_k}")
