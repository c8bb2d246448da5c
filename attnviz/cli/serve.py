"""``attnviz serve``: deploy the models on Ray Serve, for app replicas and HTTP clients.

The application (:mod:`attnviz.serving.app`) is deployed on the Ray cluster this machine belongs to
(``ray start --head`` first) or the one ``--address`` names; Serve keeps it running after the
command ends, until ``serve shutdown``. Without a cluster the command starts a local Ray and serves
until Ctrl-C. What is served comes from ``--config`` (a Ray Serve config file, the one
``serve deploy`` takes; ``serve.yaml`` at the top of the repository is the documented example) or
from the options; ``--print-config`` writes the config file the options stand for.
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import TextIO

from attnviz.cli.console import EXIT_OK, UsageError, note

__all__ = ["add_serve_parser", "run_serve"]

DEFAULT_PORT = 8000


def add_serve_parser(commands: argparse._SubParsersAction, verbose: argparse.ArgumentParser) -> None:
    """Adds the ``serve`` command and its options."""
    serve = commands.add_parser(
        "serve",
        parents=[verbose],
        help="serve models on Ray Serve (one deployment per model, requests batched across users)",
        description=(
            "Deploy the models on Ray Serve: one deployment per model, its replicas with their CPU and "
            "GPU share, single-image requests from every user batched together. App replicas reach it "
            "with make run RAY=ADDRESS; other clients POST images to /analyze."
        ),
    )
    serve.add_argument("--config", metavar="FILE", help="a Ray Serve config file (see serve.yaml)")
    serve.add_argument(
        "--model", "-m", action="append", metavar="NAME", help="a model to serve; repeat (default: the zoo)"
    )
    serve.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas per model (default 1)")
    serve.add_argument("--gpus", type=float, default=None, metavar="F", help="GPU share per replica")
    serve.add_argument("--cpus", type=float, default=None, metavar="F", help="CPUs reserved per replica")
    serve.add_argument("--device", default="auto", metavar="auto|cpu|cuda", help="where replicas run")
    serve.add_argument("--max-batch-size", type=int, default=16, metavar="N", help="requests per forward")
    serve.add_argument(
        "--batch-wait-ms", type=float, default=20.0, metavar="MS", help="longest wait for a batch to fill"
    )
    serve.add_argument("--autocast", choices=("bf16", "fp16"), default=None, help="forward precision")
    serve.add_argument("--threads", type=int, default=None, metavar="N", help="torch CPU threads per replica")
    serve.add_argument(
        "--address",
        default="auto",
        metavar="ADDR",
        help="the Ray cluster (host:port or ray://host:10001); default: this machine's, else a local one",
    )
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host of a Serve not yet started")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="HTTP port (default 8000)")
    serve.add_argument(
        "--print-config", action="store_true", help="print the Ray Serve config of these options and exit"
    )
    serve.add_argument("--block", action="store_true", help="stay attached until Ctrl-C")


def _settings_from_options(args: argparse.Namespace):  # -> ServeSettings
    from attnviz.serving import ServeSettings

    models = []
    for name in args.model or []:
        entry: dict = {"name": name, "replicas": args.replicas}
        if args.gpus is not None:
            entry["gpus"] = args.gpus
        if args.cpus is not None:
            entry["cpus"] = args.cpus
        models.append(entry)
    return ServeSettings.from_args(
        {
            "models": models or None,
            "device": args.device,
            "max_batch_size": args.max_batch_size,
            "batch_wait_s": args.batch_wait_ms / 1000.0,
            "autocast": args.autocast,
            "threads": args.threads,
        }
    )


def _config_text(settings, http: dict) -> str:  # settings: ServeSettings
    import yaml

    from attnviz.serving import APP_NAME

    config = {
        "proxy_location": "EveryNode",
        "http_options": http,
        "applications": [
            {
                "name": APP_NAME,
                "route_prefix": "/",
                "import_path": "attnviz.serving.app:build",
                "args": settings.to_args(),
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def run_serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Runs ``attnviz serve`` with parsed arguments.

    Raises:
        UsageError: options and ``--config`` mixed, or bad values.
        SettingsError, UnknownModelError: a config that cannot be served.
        ServingError: the cluster named by ``--address`` cannot be reached.
    """
    from attnviz.core.errors import ServingError
    from attnviz.serving import APP_NAME, read_config
    from attnviz.serving.client import join

    if args.config and args.model:
        raise UsageError("give the models either in --config or with --model, not both")
    http = {"host": args.host, "port": args.port}
    name, prefix = APP_NAME, "/"
    if args.config:
        settings, parts = read_config(args.config)
        http = {**http, **parts["http_options"]}
        name, prefix = parts["name"], parts["route_prefix"]
    else:
        if args.replicas < 1:
            raise UsageError(f"--replicas must be at least 1, got {args.replicas}")
        settings = _settings_from_options(args)
    if args.print_config:
        out.write(_config_text(settings, http))
        return EXIT_OK

    import ray

    from attnviz.serving.app import deploy, resources

    started_here = False
    try:
        join(None if args.address == "auto" else args.address)
    except ServingError:
        if args.address != "auto":  # a named cluster that is down is reported, never replaced
            raise
        note(err, "no Ray cluster on this machine: starting a local one (it stops with this command)")
        ray.init(logging_level=logging.WARNING, include_dashboard=False)
        started_here = True
    shares = resources(settings, ray.cluster_resources())
    note(err, f"deploying {len(settings.models)} model(s); each replica loads its model, which takes a while")
    start = time.perf_counter()
    deploy(settings, name=name, route_prefix=prefix, http_options=http)
    gcs = ray.get_runtime_context().gcs_address
    where = f"a local Ray ({gcs})" if started_here else f"the Ray cluster at {gcs}"
    took = time.perf_counter() - start
    out.write(f"Serving {len(settings.models)} model(s) on {where} (ready in {took:.0f} s):\n")
    for m in settings.models:
        share = shares[m.name]
        cpu, gpu = share["num_cpus"], share["num_gpus"]
        out.write(f"  {m.name}: {m.replicas} replica(s), {cpu:g} CPU and {gpu:g} GPU each\n")
    url = f"http://{http.get('host', '127.0.0.1')}:{http.get('port', DEFAULT_PORT)}{prefix.rstrip('/')}"
    out.write(f"HTTP: GET {url}/ lists the models, POST an image to {url}/analyze?model=NAME\n")
    out.write(f"App: make run RAY={gcs} (from outside the cluster: RAY=ray://HEAD:10001)\n")
    out.flush()
    if started_here or args.block:
        note(err, "serving until Ctrl-C")
        try:
            while True:
                time.sleep(3600)
        finally:
            from ray import serve

            if started_here:
                serve.shutdown()
                ray.shutdown()
    return EXIT_OK
