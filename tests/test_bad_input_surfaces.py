"""Bad input on the newest surfaces (issue 25): user task references, optimizer factories,
``task.feed`` and ``jaxhpo.tune``'s arguments. Each class is refused in ONE line naming the field
(and the user's function and file), exit 2 on the command line, before a population is built
and before a run folder is written."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from jaxhpo import cli, refs

USER_MODULE = textwrap.dedent(
    """
    import numpy as np
    import optax
    from flax import nnx

    import jaxhpo


    class Lin(nnx.Module):
        def __init__(self, rngs):
            self.l = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.l(x)


    class Empty(nnx.Module):
        def __init__(self):
            self.scale = 2.0


    class Tiny(jaxhpo.ModelTask):
        batch_size = 8
        hparams = {"temp": 1.0}

        def __init__(self, n: int = 64):
            x = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
            y = (x[:, 0] > 0).astype(np.int32)
            self.train_data = {"x": x, "y": y}
            self.val_data = {"x": x[:16], "y": y[:16]}
            self.test_data = {"x": x[:16], "y": y[:16]}

        def init(self, key, hp):
            return Lin(nnx.Rngs(key))

        def loss(self, model, batch, hp, key):
            logits = model(batch["x"]) / hp["temp"]
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()


    class RaisesRuntime(Tiny):
        def __init__(self, n: int = 64):
            raise RuntimeError("no data here")


    class RaisesKey(Tiny):
        def __init__(self, n: int = 64):
            {}["missing column"]


    class InitRaises(Tiny):
        def init(self, key, hp):
            return 1 / 0


    class InitReturnsDict(Tiny):
        def init(self, key, hp):
            return {"w": np.zeros(3)}


    class InitNoParams(Tiny):
        def init(self, key, hp):
            return Empty()


    class NoLoss(jaxhpo.ModelTask):
        def init(self, key, hp):
            return Lin(nnx.Rngs(key))


    class NotATask:
        pass


    class BadHp(Tiny):
        hparams = {"temp": "hot"}


    def not_a_class():
        return None


    def good_factory(learning_rate, weight_decay=1e-4):
        return optax.adamw(learning_rate, weight_decay=weight_decay)


    def dict_factory(learning_rate):
        return {"learning_rate": learning_rate}


    def uncalled_factory(learning_rate):
        return optax.adam


    def raising_factory(learning_rate):
        raise RuntimeError("no such optimizer")


    def bad_init_factory(learning_rate):
        def init(params):
            raise ValueError("init wants a list")

        return optax.GradientTransformation(init, lambda u, s, p=None: (u, s))
    """
)

SPACE = {"lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}


@pytest.fixture(scope="module")
def user_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "user_mod.py"
    path.write_text(USER_MODULE)
    return path


def _config(tmp_path, user_file, task="Tiny", optimizer=None) -> str:
    """A config file for a task (and optimizer factory) of ``user_file``."""
    cfg = {
        "task": {"kind": f"{user_file}:{task}"},
        "space": SPACE,
        "strategy": {"name": "random", "metric": "loss"},
        "population": {"size": 2},
        "train": {"steps": 4, "segment_steps": 2},
        "out_dir": str(tmp_path / "runs"),
    }
    if optimizer:
        cfg["optim"] = {"optimizer": f"{user_file}:{optimizer}"}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _one_line(capsys, argv) -> str:
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, (argv, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxhpo: error: "), err
    return lines[0]


def _nothing_written(tmp_path) -> None:
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was written"


TASK_CASES = [
    ("NotATask", ["task.kind: NotATask is not a task class", "init or loss"]),
    ("NoLoss", ["task.kind: NoLoss is not a task class: it has no loss"]),
    ("not_a_class", ["task.kind:", "not a class"]),
    ("RaisesRuntime", ["task.kind: RaisesRuntime.__init__ (", "user_mod.py:", "RuntimeError"]),
    ("RaisesKey", ["task.kind: RaisesKey.__init__ (", "user_mod.py:", "KeyError"]),
    ("InitRaises", ["task.kind: InitRaises.init (", "user_mod.py:", "ZeroDivisionError"]),
    ("InitReturnsDict", ["task.kind: InitReturnsDict.init returned dict, not an nnx.Module"]),
    ("InitNoParams", ["task.kind: InitNoParams.init returned Empty with no nnx.Param"]),
    ("BadHp", ["task.kind.hparams: 'temp' of BadHp must be a number"]),
]


@pytest.mark.parametrize(("task", "expected"), TASK_CASES, ids=[t for t, _ in TASK_CASES])
def test_bad_user_task_reference_is_one_line_naming_file_and_function(
    task, expected, tmp_path, user_file, capsys, no_compile
):
    line = _one_line(capsys, ["run", _config(tmp_path, user_file, task)])
    for text in expected:
        assert text in line, line
    _nothing_written(tmp_path)


def test_user_task_args_that_do_not_bind_name_task_args(tmp_path, user_file, capsys, no_compile):
    cfg = _config(tmp_path, user_file, "Tiny")
    line = _one_line(capsys, ["run", cfg, "task.args={rows: 3}"])
    assert "task.args:" in line and "rows" in line, line


def test_debug_flag_shows_the_users_traceback(tmp_path, user_file, capsys, monkeypatch):
    monkeypatch.setenv(refs.DEBUG_ENV, "0")  # restored after the test
    code = cli.main(["--debug", "run", _config(tmp_path, user_file, "InitRaises")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert any(line.startswith("Traceback") for line in err), err
    assert any("1 / 0" in line for line in err), err  # the user's own line
    assert err[-1].startswith("jaxhpo: error: task.kind: InitRaises.init (")
    _nothing_written(tmp_path)


FACTORY_CASES = [
    ("dict_factory", "optim.optimizer: dict_factory returned dict, not an optax"),
    ("uncalled_factory", "optim.optimizer: uncalled_factory returned the function adam"),
    ("raising_factory", "optim.optimizer: raising_factory ("),
    ("bad_init_factory", "optim.optimizer: bad_init_factory ("),
]


@pytest.mark.parametrize(("factory", "expected"), FACTORY_CASES, ids=[f for f, _ in FACTORY_CASES])
def test_optimizer_factory_not_returning_a_transform_is_refused_before_building(
    factory, expected, tmp_path, user_file, capsys, no_compile
):
    line = _one_line(capsys, ["run", _config(tmp_path, user_file, "Tiny", factory)])
    assert expected in line, line
    _nothing_written(tmp_path)


def test_good_user_task_and_factory_pass_every_check(tmp_path, user_file, no_compile):
    from jaxhpo import experiment

    cfg = cli.load_config(_config(tmp_path, user_file, "Tiny", "good_factory"), [])
    prepared = experiment.prepare(cfg)
    assert prepared.population.opt_names[0] == "lr"
    _nothing_written(tmp_path)


def test_task_feed_without_task_data_is_refused(tmp_path, capsys, no_compile):
    line = _one_line(capsys, ["run", "task.feed=device", f"out_dir={tmp_path / 'runs'}"])
    assert "task.feed: 'device' is read only with task.data" in line, line
    _nothing_written(tmp_path)


# -- jaxhpo.tune ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def user_module(user_file):
    return lambda name: refs.resolve(f"{user_file}:{name}", "test")


def _tune(tmp_path, task, **kwargs):
    import jaxhpo

    args = {"space": SPACE, "population": 2, "steps": 4, "segment_steps": 2, "quiet": True}
    jaxhpo.tune(task, **{**args, **kwargs}, out_dir=tmp_path / "runs")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"space": [1, 2]}, TypeError, r"^space: expected a mapping .* got list \[1, 2\]$"),
        ({"strategy": 42}, TypeError, r"^strategy: expected a strategy name .* got int 42$"),
        ({"optimizer": 3.0}, TypeError, r"^optimizer: expected a built-in name .* got float"),
        ({"settings": [("train", 1)]}, TypeError, r"^settings: expected a mapping"),
    ],
    ids=["space-list", "strategy-42", "optimizer-float", "settings-list"],
)
def test_tune_argument_of_the_wrong_type_is_one_line(
    kwargs, error, match, tmp_path, user_module, no_compile
):
    with pytest.raises(error, match=match):
        _tune(tmp_path, user_module("Tiny")(), **kwargs)
    _nothing_written(tmp_path)


@pytest.mark.parametrize(
    ("task", "error", "match"),
    [
        ("BadHp", TypeError, r"^task.hparams: 'temp' of BadHp must be a number .* 'hot'$"),
        ("InitRaises", ValueError, r"^task: InitRaises.init \(.*user_mod.py:\d+\) raised Zero"),
        ("InitReturnsDict", TypeError, r"^task: InitReturnsDict.init returned dict"),
    ],
)
def test_tune_refuses_a_bad_task_object_before_building(
    task, error, match, tmp_path, user_module, no_compile
):
    with pytest.raises(error, match=match) as e:
        _tune(tmp_path, user_module(task)())
    assert "\n" not in str(e.value)
    _nothing_written(tmp_path)


def test_tune_refuses_a_task_class_instead_of_an_object(tmp_path, user_module, no_compile):
    with pytest.raises(TypeError, match=r"^task: got the class Tiny; pass a task object"):
        _tune(tmp_path, user_module("Tiny"))


@pytest.mark.parametrize("factory", ["dict_factory", "uncalled_factory", "bad_init_factory"])
def test_tune_refuses_a_bad_optimizer_factory_before_building(
    factory, tmp_path, user_module, no_compile
):
    with pytest.raises(ValueError, match=rf"^optim.optimizer: {factory} ") as e:
        _tune(tmp_path, user_module("Tiny")(), optimizer=user_module(factory))
    assert "\n" not in str(e.value)
    _nothing_written(tmp_path)
