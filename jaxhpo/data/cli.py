"""``jaxhpo data prepare CORPUS --tokenizer bpe --vocab-size 8192 --out DATA_DIR``."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub) -> None:
    """Adds ``data`` (with ``prepare``) to the ``jaxhpo`` subcommands."""
    d = sub.add_parser("data", help="prepare a tokenized corpus for task.data=DATA_DIR")
    dsub = d.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = dsub.add_parser(
        "prepare",
        help="tokenize a corpus into memory-mapped train/val/test token files",
        description="Tokenize CORPUS (a text file or a folder of text files; default: the "
        "Python stdlib sources) once into DATA_DIR: train.bin/val.bin/test.bin (uint16 or "
        "uint32 token ids), tokenizer.json and manifest.json. Then: jaxhpo run "
        "task.data=DATA_DIR.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("corpus", nargs="?", default=None, metavar="CORPUS")
    p.add_argument("--out", required=True, metavar="DATA_DIR")
    p.add_argument("--tokenizer", default="bytes", choices=("bytes", "bpe"))
    p.add_argument(
        "--vocab-size", type=int, default=8192, help="bpe: tokens in the vocabulary (257 to 2**20)"
    )
    p.add_argument("--val-frac", type=float, default=0.05)
    p.add_argument("--test-frac", type=float, default=0.05)
    p.add_argument(
        "--sample-mb", type=float, default=64.0, help="bpe: MB of the corpus it is trained on"
    )


def run(args) -> int:
    """Runs ``jaxhpo data ...``; one-line errors, exit code 2."""
    import math

    from jaxhpo.data.prepare import prepare_data

    try:
        if not (math.isfinite(args.sample_mb) and args.sample_mb > 0):
            raise ValueError(f"--sample-mb: must be a number > 0, got {args.sample_mb}")
        prepare_data(
            args.corpus,
            args.out,
            tokenizer=args.tokenizer,
            vocab_size=args.vocab_size,
            val_frac=args.val_frac,
            test_frac=args.test_frac,
            sample_bytes=int(args.sample_mb * 2**20),
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    except (ValueError, OSError) as e:
        print(f"jaxhpo: error: {e}", file=sys.stderr)
        return 2
    return 0
