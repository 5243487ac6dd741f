"""The ``inferline`` command: one sub-command, one library call."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inferline.config import SERVE_ONLY, WORKER_ONLY, Settings, describe
from inferline.errors import InferlineError

DEFAULT_DATA = Path("../shared/data/sentiment")


def _settings_flags(parser: argparse.ArgumentParser, others: frozenset[str]) -> None:
    """A flag for each setting, except ``others``: the other command's own."""
    for name, field in Settings.model_fields.items():
        if name in others:
            continue
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=None,
            help=f"{(field.description or '').strip()} [env INFERLINE_{name.upper()}]",
        )


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="inferline", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the service: HTTP (REST, OIP, OpenAI) and gRPC (OIP, health)"
    )
    _settings_flags(serve, WORKER_ONLY)

    worker = commands.add_parser("worker", help="run a queue worker (needs INFERLINE_REDIS_URL)")
    _settings_flags(worker, SERVE_ONLY)

    submit = commands.add_parser(
        "submit", help="enqueue a JSONL or CSV file, one job per line; run again to resume"
    )
    submit.add_argument("path", type=Path, help="JSONL (a string or {'text'} a line) or CSV")
    submit.add_argument("--model", choices=["sentiment", "embedding"], default="sentiment")
    submit.add_argument("--wait", action="store_true", help="wait for every result")
    submit.add_argument(
        "-o", "--output", type=Path, default=None, help="results in input order (default stdout)"
    )
    submit.add_argument("--redis-url", default=None, help="[env INFERLINE_REDIS_URL]")
    submit.add_argument("--quiet", action="store_true", help="no progress on stderr")

    model = commands.add_parser("model", help="build or train the model")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    build = model_commands.add_parser(
        "build", help="export, quantise and verify the model directory"
    )
    build.add_argument("--model-dir", type=Path, default=None, help="[env INFERLINE_MODEL_DIR]")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    train = model_commands.add_parser(
        "train", help="fine-tune the default sentiment model (LoRA); build merges it"
    )
    train.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder of the *.jsonl files"
    )
    train.add_argument("--out", type=Path, default=None, help="where to write the adapter")
    evaluate = model_commands.add_parser(
        "eval", help="score the served sentiment model and VADER on a labelled JSONL file"
    )
    evaluate.add_argument("path", type=Path, help="JSONL with text and rating")
    evaluate.add_argument("--model-dir", type=Path, default=None, help="[env INFERLINE_MODEL_DIR]")
    evaluate.add_argument(
        "--validation-only", action="store_true", help="score only the fixed validation split"
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    head = model_commands.add_parser(
        "train-head", help="train the frozen-embedding logistic-regression baseline head"
    )
    head.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the *.jsonl files")
    head.add_argument("--out", type=Path, default=None, help="where to write the head")
    _bench_parser(commands)
    return root


def _bench_parser(commands: Any) -> None:
    bench = commands.add_parser(
        "bench", help="load-test a running inferline: throughput and latency percentiles"
    )
    bench.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="service URL")
    bench.add_argument(
        "--workload",
        choices=["single", "multi", "latency", "all"],
        default="all",
        help="single: 1 text a request, 64 connections; multi: 16 texts, 8 connections; "
        "latency: open loop at --rate (default: 50%% of the measured single maximum)",
    )
    bench.add_argument("--duration", type=_positive, default=10.0, help="seconds per workload")
    bench.add_argument("--connections", type=_count, default=None, help="override the workload's")
    bench.add_argument("--rate", type=_positive, default=None, help="latency: requests/s offered")
    bench.add_argument(
        "--data", type=Path, default=None, help="texts: JSONL with 'text', or one a line"
    )
    bench.add_argument(
        "--plot-dir", type=Path, default=None, help="write throughput.png and latency_cdf.png"
    )
    bench.add_argument("--json", action="store_true", help="print JSON")
    bench.add_argument("--quiet", action="store_true", help="no live progress on stderr")
    bench.add_argument(
        "--api-key",
        default=None,
        help="sent as 'Authorization: Bearer KEY' (default: $INFERLINE_API_KEY, which keeps "
        "the key out of the process list)",
    )
    bench.add_argument("--cacert", type=Path, default=None, help="https: CA bundle to trust")
    bench.add_argument("--cert", type=Path, default=None, help="https: client certificate")
    bench.add_argument("--key", type=Path, default=None, help="https: the client key")


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or value == math.inf:  # NaN fails the first test too
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "bench":
            from inferline.loadtest.runner import main as bench

            try:
                return bench(args)
            except OSError as exc:  # refused, unreachable, or a TLS failure
                print(f"inferline: cannot load-test {args.url}: {exc}", file=sys.stderr)
                return 2
        return _dispatch(args)
    except ValidationError as exc:  # the settings, from flags or INFERLINE_* variables
        print(f"inferline: invalid setting: {describe(exc)}", file=sys.stderr)
        return 2
    except (InferlineError, OSError, ValueError) as exc:  # a missing file, a directory...
        print(f"inferline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        settings = _settings(args)  # a mistake is reported before the server's imports
        _quiet_grpc()
        from inferline.server import serve

        serve(settings)
        return 0
    if args.command in ("worker", "submit"):
        return _queue(args)
    if args.model_command == "build":
        from inferline.modelrepo.build import build

        model_dir = args.model_dir or Settings().model_dir
        build(model_dir, force=args.force)
        return 0
    if args.model_command == "eval":
        from inferline.modelrepo.evaluate import evaluate

        model_dir = args.model_dir or Settings().model_dir
        print(
            evaluate(args.path, model_dir, validation_only=args.validation_only, as_json=args.json)
        )
        return 0
    if args.model_command == "train":
        from inferline.modelrepo.build import adapter_path
        from inferline.modelrepo.train import train

        train(args.data, args.out or adapter_path())
        return 0
    from inferline.modelrepo.build import head_path
    from inferline.modelrepo.head import train_head

    train_head(args.data, args.out or head_path())
    return 0


def _quiet_grpc() -> None:
    """gRPC core writes each failed TLS handshake on its port (any client can cause one) as
    a plain-text INFO line on stderr, among the JSON lines; ERROR keeps its errors. Read
    when grpc is first imported, so before the server's and the worker's imports."""
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def _queue(args: argparse.Namespace) -> int:
    if args.command == "worker":
        settings = _settings(args)
        _quiet_grpc()  # its engines may be gRPC clients
        from inferline.queue.run import run_worker

        run_worker(settings)
        return 0
    if args.command == "submit":
        from inferline.queue.submit import submit_file

        settings = Settings(redis_url=args.redis_url) if args.redis_url else Settings()
        failed = submit_file(
            settings,
            args.path,
            args.model,
            wait=args.wait,
            output=args.output,
            progress=None if args.quiet else sys.stderr,
        )
        return 1 if failed else 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
