"""MkDocs hooks: the pages' reference tables generated from the code, so they cannot drift.

A page writes a marker ``<!-- generated: NAME -->`` and the hook replaces it on every build:

* ``config-sections``: every section of the config (:class:`jaxhpo.config.Config`'s
  dataclasses), one row per field with its type, default and the comment written beside it;
* ``strategy-settings``: each strategy's settings, from its own ``Config`` dataclass
  (``jaxhpo/strategies/*.py``), with what it can do (its declared ``Capabilities``);
* ``strategy-forms``: one row per strategy, its capabilities;
* ``presets``: the built-in experiments (``jaxhpo list``);
* ``user-task-defaults``: what a run of a task of the user's own starts from.

``docs/performance.md`` is written separately; until it exists it is left out of the nav.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
import typing
from pathlib import Path

log = logging.getLogger("mkdocs.plugins.jaxhpo")

_MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
_FIELD = re.compile(r"^\s+([A-Za-z_][A-Za-z0-9_]*)\s*:\s*[^=]+?(=.*)?$")


def on_config(config, **kwargs):
    """Leaves ``performance.md`` out of the nav while it is not written yet."""
    docs = Path(config["docs_dir"])
    if not (docs / "performance.md").exists():
        log.info("docs/performance.md is not written yet: left out of the nav")
        config["nav"] = [
            item for item in config["nav"] if "performance.md" not in str(item.values())
        ]
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    return _MARKER.sub(lambda m: GENERATORS[m.group(1)](), markdown)


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's doc: the ``# comment`` on its line, or the ``#:`` lines above it
    (from the class in the MRO that declares it)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass) or klass is object:
            continue
        try:
            lines = inspect.getsourcelines(klass)[0]
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines[1:]:
            text = line.strip()
            if text.startswith("#:"):
                above.append(text[2:].strip())
                continue
            m = _FIELD.match(line)
            if m and not text.startswith(("def ", "@", '"')):
                comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
                doc = " ".join(above) or comment
                if doc or m.group(1) not in out:
                    out[m.group(1)] = doc
            above = [] if not text.startswith("#") else above
    return out


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "(required)"
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"`{value:_}`"
    return f"`{value!r}`" if not isinstance(value, str) else f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


#: Meanings of config fields whose line in jaxhpo/config.py carries no comment.
MEANINGS = {
    "task.batch_size": "training rows (sequences) per step, per member",
    "task.data_seed": "which rows each step draws (every member sees the same batches)",
    "model.num_layers": "Transformer blocks",
    "model.num_heads": "attention heads",
    "model.d_model": "width of the residual stream",
    "model.d_ff": "hidden units of each MLP",
    "model.pre_norm": "LayerNorm before each sub-block (false: after, as the original)",
    "model.tie_embeddings": "the readout shares the token embedding",
    "optim.optimizer": "a built-in optimizer or module:factory (an optax factory, optax:lion)",
    "optim.schedule": "the learning-rate schedule",
}


def settings_table(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> str:
    """A Markdown table of a dataclass's fields: key, type, default, meaning."""
    docs = {k: v or MEANINGS.get(f"{prefix}{k}", "") for k, v in field_docs(cls).items()}
    hints = typing.get_type_hints(cls) if cls.__module__ else {}
    rows = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp = hints.get(f.name, f.type)
        name = getattr(tp, "__name__", None) if not typing.get_args(tp) else None
        shown = name or str(tp).replace("typing.", "")
        rows.append(
            f"| `{prefix}{f.name}` | `{_cell(shown)}` | {_cell(_default(f))} "
            f"| {_cell(docs.get(f.name, ''))} |"
        )
    return "\n".join(rows)


def config_sections() -> str:
    from jaxhpo import config

    out = ["### Top level", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    top = {
        "name": "the run's name: the run directory is `OUT_DIR/NAME-DATE`",
        "seed": "the root seed (members' keys derive from it and their ids)",
        "out_dir": "the parent folder of the run directory (`--out`)",
    }
    fields = {f.name: f for f in dataclasses.fields(config.Config)}
    for key, doc in top.items():
        out.append(f"| `{key}` | `{fields[key].type}` | {_default(fields[key])} | {doc} |")
    sections = {
        "task": config.TaskConfig,
        "model": config.ModelConfig,
        "optim": config.OptimConfig,
        "population": config.PopulationConfig,
        "train": config.TrainConfig,
        "report": config.ReportConfig,
    }
    for name, cls in sections.items():
        out += ["", f"### `{name}:`", "", settings_table(cls, f"{name}.")]
    out += [
        "",
        "### `strategy:`",
        "",
        "`strategy.name` picks the strategy (default `random`), `strategy.metric` the validation "
        "metric it optimises (default `loss`); the strategy's own settings sit beside them and "
        "are listed per strategy in [Strategies](strategies.md#settings-of-each-strategy).",
    ]
    return "\n".join(out)


def _capabilities(cls: type) -> list[str]:
    caps = cls.capabilities
    out = []
    if caps.compiled:
        out.append("a compiled form (`train.compiled=true`)")
    if caps.own_segments:
        out.append("trains the segments itself (one differentiable program)")
    if caps.decides_size:
        out.append("decides the population size (`population.size` may be null)")
    if caps.no_buckets or caps.own_segments:
        why = caps.no_buckets or "it trains through one population program"
        out.append(f"no shape buckets ({why})")
    return out


def strategy_settings() -> str:
    from jaxhpo.strategies import STRATEGIES

    out = []
    for name, cls in STRATEGIES.items():
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        about = (inspect.getmodule(cls).__doc__ or "").strip().split("\n\n")[0]
        out += [f"### `{name}`", "", f"`{cls.__module__}.{cls.__qualname__}`: {doc}", ""]
        out += [f"*{about.replace(chr(10), ' ')}*", ""] if about else []
        caps = _capabilities(cls)
        if caps:
            out += ["It has " + "; ".join(caps) + ".", ""]
        if dataclasses.fields(cls.Config):
            out.append(settings_table(cls.Config, "strategy."))
        else:
            out.append("No settings of its own (`strategy: {name: " + name + "}`).")
        out.append("")
    return "\n".join(out)


def strategy_forms() -> str:
    from jaxhpo.strategies import STRATEGIES

    yes = lambda b: "yes" if b else ""
    rows = [
        "| `strategy.name` | compiled form | trains its own segments | decides the size "
        "| shape buckets |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, cls in STRATEGIES.items():
        c = cls.capabilities
        rows.append(
            f"| `{name}` | {yes(c.compiled)} | {yes(c.own_segments)} | {yes(c.decides_size)} "
            f"| {'no' if c.no_buckets or c.own_segments else 'yes'} |"
        )
    return "\n".join(rows)


def presets() -> str:
    from jaxhpo.presets import DEFAULT_EXPERIMENT, PRESETS

    rows = ["| name | what |", "| --- | --- |"]
    for name, spec in PRESETS.items():
        mark = " (default)" if name == DEFAULT_EXPERIMENT else ""
        rows.append(f"| `{name}`{mark} | {_cell(spec['_about'])} |")
    return "\n".join(rows)


def user_task_defaults() -> str:
    import yaml

    from jaxhpo.presets import USER_TASK_DEFAULTS

    return "```yaml\n" + yaml.safe_dump(USER_TASK_DEFAULTS, sort_keys=False) + "```"


GENERATORS = {
    "config-sections": config_sections,
    "strategy-settings": strategy_settings,
    "strategy-forms": strategy_forms,
    "presets": presets,
    "user-task-defaults": user_task_defaults,
}
