"""Built-in experiments (``jaxhpo list``); each is a partial config merged over the defaults."""

from __future__ import annotations

from typing import Any

#: The byte-level LM studies' search space: learning rate, warmup, weight decay, dropout.
LM_SPACE: dict[str, str] = {
    "lr": "loguniform(1e-4, 3e-2)",
    "warmup_steps": "int(0, 100)",
    "weight_decay": "uniform(0.0, 0.2)",
    "dropout": "uniform(0.0, 0.3)",
}

PRESETS: dict[str, dict[str, Any]] = {
    "lm-random": {
        "_about": "Byte-level LM on the Python stdlib sources; 8 Transformers, random search over "
        "learning rate, warmup, weight decay and dropout (about a minute on 2 CPU cores).",
        "name": "lm-random",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "random"},
        "space": dict(LM_SPACE),
    },
    "lm-sobol": {
        "_about": "Byte-level LM; 16 members on a scrambled Sobol sequence over lr, b2 and "
        "label smoothing.",
        "name": "lm-sobol",
        "task": {"kind": "lm"},
        "population": {"size": 16},
        "train": {"steps": 300, "segment_steps": 50},
        "strategy": {"name": "sobol"},
        "space": {
            "lr": "loguniform(1e-4, 3e-2)",
            "b2": "uniform(0.9, 0.999)",
            "label_smoothing": "uniform(0.0, 0.2)",
        },
    },
    "lm-grid": {
        "_about": "Byte-level LM; full 3x3 grid over learning rate and warmup steps.",
        "name": "lm-grid",
        "task": {"kind": "lm"},
        "population": {"size": None},
        "train": {"steps": 300, "segment_steps": 50},
        "strategy": {"name": "grid", "points_per_dim": 3},
        "space": {
            "lr": "loguniform(3e-4, 3e-2)",
            "warmup_steps": {"type": "choice", "values": [0, 30, 100]},
        },
    },
    "modular-random": {
        "_about": "Grokking setting: a + b mod 97 with half the table for training; random search "
        "over learning rate and (large) weight decay (about 5 min on 2 CPU cores).",
        "name": "modular-random",
        "task": {
            "kind": "modular",
            "modulus": 97,
            "operation": "+",
            "train_frac": 0.5,
            "batch_size": 512,
        },
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 128, "d_ff": 512},
        "optim": {"optimizer": "adamw", "schedule": "warmup_constant"},
        "population": {"size": 8},
        "train": {"steps": 600, "segment_steps": 100},
        "strategy": {"name": "random"},
        "space": {
            "lr": "loguniform(3e-4, 3e-3)",
            "weight_decay": "loguniform(0.1, 3.0)",
            "warmup_steps": 50,
            "b2": 0.98,
        },
    },
    "brackets-random": {
        "_about": "Balanced-brackets classification with a BERT-style encoder (padding masks); "
        "random search over lr, dropout and attention dropout.",
        "name": "brackets-random",
        "task": {"kind": "brackets", "seq_len": 24, "batch_size": 64},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 128},
        "population": {"size": 8},
        "train": {"steps": 600, "segment_steps": 100},
        "strategy": {"name": "random"},
        "space": {
            "lr": "loguniform(3e-4, 1e-2)",
            "dropout": "uniform(0.0, 0.2)",
            "attn_dropout": "uniform(0.0, 0.2)",
        },
    },
    "pbt-toy": {
        "_about": "PBT's toy problem (Jaderberg et al. 2017, Fig. 2): two members, h=(1,0) and "
        "h=(0,1), exploit and explore every 4 steps; Q should approach 1.2 (seconds).",
        "name": "pbt-toy",
        "task": {"kind": "pbt_toy"},
        "optim": {"optimizer": "sgd", "schedule": "constant"},
        "population": {"size": 2, "devices": 1},
        "train": {"steps": 100, "segment_steps": 4},
        "strategy": {
            "name": "pbt",
            "metric": "q",
            "ready_steps": 4,
            "exploit": "truncation",
            "fraction": 0.5,
            "perturb": "gaussian",
            "sigma": 0.01,  # unit coordinates of [0, 10]: std 0.1 on h, as in the paper
            "explore_all": True,
            "points": [{"h0": 1.0, "h1": 0.0}, {"h0": 0.0, "h1": 1.0}],
        },
        "space": {"lr": 0.05, "h0": "uniform(0.0, 10.0)", "h1": "uniform(0.0, 10.0)"},
    },
    "lm-pbt": {
        "_about": "Byte-level LM; PBT over learning rate, weight decay and dropout with 8 "
        "members, exploit/explore every 50 steps (same budget as lm-random).",
        "name": "lm-pbt",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "constant"},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "pbt", "ready_steps": 50, "fraction": 0.25, "resample_prob": 0.1},
        "space": {
            "lr": "loguniform(1e-4, 3e-2)",
            "weight_decay": "uniform(0.0, 0.2)",
            "dropout": "uniform(0.0, 0.3)",
        },
    },
    "lm-halving": {
        "_about": "Byte-level LM; successive halving: 27 random members, keep the top third at "
        "steps 50 and 150, the last one trains to 450 (3,150 member-steps).",
        "name": "lm-halving",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 27},
        "train": {"steps": 450, "segment_steps": 50},
        "strategy": {"name": "halving", "eta": 3, "min_steps": 50, "mode": "masked"},
        "space": dict(LM_SPACE),
    },
    "lm-hyperband": {
        "_about": "Byte-level LM; Hyperband (eta=3, R=27 x 10 steps): 4 brackets of successive "
        "halving side by side in one population of 49 members, reported as one study.",
        "name": "lm-hyperband",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": None},
        "train": {"steps": 270, "segment_steps": 10},
        "strategy": {"name": "hyperband", "eta": 3, "min_steps": 10},
        "space": dict(LM_SPACE),
    },
    "lm-median": {
        "_about": "Byte-level LM; 16 random members, the median stopping rule after 100 steps.",
        "name": "lm-median",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 16},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "median", "min_steps": 100},
        "space": dict(LM_SPACE),
    },
    "lm-mup": {
        "_about": "Byte-level LM in µP (model.parametrization=mup, base width 64, untied "
        "readout): random search over lr, warmup and weight decay at d_model 64; transfer the "
        "best member to a wider model with strategy.name=replay (µTransfer, see the README).",
        "name": "lm-mup",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {
            "num_layers": 2,
            "num_heads": 4,
            "d_model": 64,
            "d_ff": 256,
            "tie_embeddings": False,
            "parametrization": "mup",
            "mup_base_width": 64,
        },
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "random"},
        "space": {
            "lr": "loguniform(1e-4, 3e-2)",
            "warmup_steps": "int(0, 100)",
            "weight_decay": "uniform(0.0, 0.2)",
        },
    },
    "lm-evo": {
        "_about": "Byte-level LM; CMA-ES (evosax) proposes 8 members per generation, 4 "
        "generations of 100 steps (strategy.algorithm: any evosax algorithm).",
        "name": "lm-evo",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "evo", "algorithm": "cma_es", "generation_steps": 100},
        "space": dict(LM_SPACE),
    },
    "lm-bo": {
        "_about": "Byte-level LM; Bayesian optimisation (GP surrogate, batch Thompson sampling) "
        "proposes 8 members per generation, 4 generations of 100 steps.",
        "name": "lm-bo",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "bo", "generation_steps": 100},
        "space": dict(LM_SPACE),
    },
    "lm-rl": {
        "_about": "Byte-level LM; a REINFORCE-trained policy (Zoph & Le 2017) samples 8 members "
        "per generation, 4 generations of 100 steps.",
        "name": "lm-rl",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "rl", "generation_steps": 100},
        "space": dict(LM_SPACE),
    },
    "lm-optuna": {
        "_about": "Byte-level LM; Optuna's TPE asks 8 trials per generation, 4 generations of "
        "100 steps (strategy.sampler, strategy.storage=sqlite:///study.db for "
        "optuna-dashboard; needs pip install 'jaxhpo[optuna]').",
        "name": "lm-optuna",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 50},
        "strategy": {"name": "optuna", "sampler": "tpe", "generation_steps": 100},
        "space": dict(LM_SPACE),
    },
    "lm-hypergrad": {
        "_about": "Byte-level LM; online unrolled hypergradients: every 20-step segment is a "
        "truncation window, each of 4 members moves its lr, warmup, weight decay and dropout "
        "down the gradient of its validation loss (Adam in log/logit coordinates).",
        "name": "lm-hypergrad",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "warmup_cosine"},
        "population": {"size": 4},
        "train": {"steps": 400, "segment_steps": 20},
        "strategy": {"name": "hypergrad", "outer_lr": 0.05, "outer": "adam"},
        "space": {
            "lr": "loguniform(1e-4, 3e-2)",
            "warmup_steps": "uniform(0.0, 100.0)",
            "weight_decay": "loguniform(1e-4, 0.2)",
            "dropout": "uniform(0.01, 0.3)",
        },
    },
    "lm-implicit": {
        "_about": "Byte-level LM; implicit-function-theorem hypergradients (Lorraine et al. "
        "2020): after every 20-step segment each of 4 members moves its weight decay (as an L2 "
        "term) and label smoothing down the IFT gradient of its validation loss (Neumann series).",
        "name": "lm-implicit",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "constant"},
        "population": {"size": 4},
        "train": {"steps": 400, "segment_steps": 20},
        "strategy": {"name": "implicit", "outer_lr": 0.1, "terms": 10},
        "space": {
            "lr": 3e-3,
            "weight_decay": "loguniform(1e-4, 0.3)",
            "label_smoothing": "uniform(0.01, 0.3)",
        },
    },
    "lm-pes": {
        "_about": "Byte-level LM; persistent evolution strategies: 8 members are antithetic "
        "particles around one point (lr, weight decay, dropout) that moves after every 25-step "
        "segment, the members keep training (strategy.name=truncated_es to compare).",
        "name": "lm-pes",
        "task": {"kind": "lm", "seq_len": 64, "batch_size": 16},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "constant"},
        "population": {"size": 8},
        "train": {"steps": 400, "segment_steps": 25},
        "strategy": {"name": "pes", "sigma": 0.3, "outer_lr": 0.1},
        "space": {
            "lr": "loguniform(1e-4, 3e-2)",
            "weight_decay": "uniform(0.0, 0.2)",
            "dropout": "uniform(0.0, 0.3)",
        },
    },
    "mlm-pretrain": {
        "_about": "BERT masked-LM pretraining of a byte-level encoder on the stdlib sources (15% "
        "of positions: 80% [MASK], 10% random, 10% kept); 2 members over lr, the best saved "
        "to RUN_DIR/pretrained for bert-finetune (a few minutes on 2 CPU cores).",
        "name": "mlm-pretrain",
        "task": {"kind": "mlm", "seq_len": 64, "batch_size": 32, "eval_batches": 8},
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "warmup_cosine"},
        "population": {"size": 2},
        "train": {"steps": 2000, "segment_steps": 250, "save_best": True},
        "strategy": {"name": "grid", "metric": "loss"},
        "space": {
            "lr": {"type": "choice", "values": [1e-3, 3e-3]},
            "warmup_steps": 100,
            "weight_decay": 0.01,
        },
    },
    "bert-finetune": {
        "_about": "BERT's fine-tuning grid (Devlin et al. 2019: 3 lr x batch {16, 32} x {2, 3, "
        "4} epochs, 10% warmup, linear decay, dropout 0.1) on real-vs-corrupted text windows; "
        "every member starts from task.pretrained=RUN_DIR (an mlm-pretrain run; without it: "
        "from scratch).",
        "name": "bert-finetune",
        "task": {
            "kind": "finetune",
            "seq_len": 64,
            "batch_size": 32,
            "eval_batches": 32,
            "num_train": 1024,
            "corrupt_frac": 0.15,
        },
        "model": {"num_layers": 2, "num_heads": 4, "d_model": 64, "d_ff": 256},
        "optim": {"optimizer": "adamw", "schedule": "warmup_linear"},
        "population": {"size": None},
        "train": {"steps": 256, "segment_steps": 32},
        "strategy": {"name": "grid", "metric": "accuracy"},
        "space": {
            # BERT's {5e-5, 3e-5, 2e-5} x 50 for this small, briefly pretrained encoder (see
            # experiments/bert_finetune.py for how the scale was chosen)
            "lr": {"type": "choice", "values": [2.5e-3, 1.5e-3, 1e-3]},
            "batch_size": {"type": "choice", "values": [16, 32]},
            "epochs": {"type": "choice", "values": [2, 3, 4]},
            "warmup_frac": 0.1,
            "dropout": 0.1,
            "weight_decay": 0.01,
            "min_lr_ratio": 0.0,
        },
    },
}

DEFAULT_EXPERIMENT = "lm-random"

#: What a run of a task of the user's own starts from, the same from both entry points:
#: :func:`jaxhpo.tune`'s arguments default to these values, and ``jaxhpo run
#: task.kind=module:Class ...`` (or a config file naming such a task) starts from this layer
#: instead of the default experiment (whose space, schedule and model are the byte-level LM's).
#: The run is named ``TASKNAME-STRATEGY`` unless ``name`` is given.
USER_TASK_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "out_dir": "runs",
    "optim": {"optimizer": "adamw", "schedule": "constant"},
    "population": {"size": 8},
    "train": {"steps": 300, "segment_steps": 50},
    "strategy": {"name": "random", "metric": "loss"},
}


def preset(name: str) -> dict[str, Any]:
    """The preset's config layer (without its description)."""
    if name not in PRESETS:
        raise ValueError(f"experiment: unknown '{name}' (see `jaxhpo list`: {', '.join(PRESETS)})")
    return {k: v for k, v in PRESETS[name].items() if not k.startswith("_")}
