"""``hwnas serve-device`` (on the target device) and ``hwnas device add|list|show``.

This module imports nothing heavy at the top: ``serve-device`` must run on a
device that has only ONNX Runtime, onnx and numpy, never torch.
"""
from __future__ import annotations

import json


from nas.commands import parse_key_values as _options


def register(sub) -> None:
    p = sub.add_parser("serve-device", help="serve latency measurements of this machine over HTTP",
                       description="Serve measurements for the 'remote' runner. Needs only onnxruntime, "
                                   "onnx and numpy. Every request must carry the token.")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 to serve the network)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765)")
    p.add_argument("--token", default=None,
                   help="shared secret (visible in the process list: prefer --token-file or "
                        "$HWNAS_DEVICE_TOKEN; without any of them a new one is printed)")
    p.add_argument("--token-file", default=None,
                   help="read the token from this file (must not be readable by group or others)")
    p.add_argument("--runner", default="onnxruntime", choices=["onnxruntime", "onnxruntime_gpu", "tensorrt"],
                   help="runner that measures the models (default onnxruntime)")
    p.add_argument("--threads", type=int, default=1, help="inference threads (default 1)")
    p.add_argument("--dtype", default="float32", help="inference dtype (default float32)")
    p.add_argument("--runner-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra runner option, YAML value, e.g. --runner-option provider=tensorrt")
    p.add_argument("--max-request-mb", type=float, default=256.0,
                   help="largest request body accepted, MiB (default 256)")
    p.add_argument("--max-models", type=int, default=16, help="most models per request (default 16)")
    p.add_argument("--max-measure-s", type=float, default=600.0,
                   help="wall-clock seconds per request; past it the measuring process is killed (422)")
    p.add_argument("--max-memory-mb", type=int, default=4096,
                   help="memory of the measuring process (address space for the CPU runner)")
    p.add_argument("--max-cpu-s", type=float, default=0.0,
                   help="CPU seconds per request (default 0: max-measure-s x threads + 30)")
    p.add_argument("--max-connections", type=int, default=64,
                   help="concurrent connections accepted (default 64)")
    p.add_argument("--handshake-timeout-s", type=float, default=10.0,
                   help="seconds a client has to finish the TLS handshake (default 10)")
    p.add_argument("--certfile", default=None, help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", default=None, help="private key of --certfile (PEM)")
    p.set_defaults(func=run_serve)

    d = sub.add_parser("device", help="onboard and inspect target devices")
    dsub = d.add_subparsers(dest="device_command", metavar="ACTION")
    dsub.required = True
    a = dsub.add_parser("add", help="measure a reference set on a new device and adapt the predictor")
    a.add_argument("name", help="name the device is onboarded under")
    a.add_argument("--runner", required=True,
                   help="runner name (onnxruntime, torch_cuda, tensorrt, remote, farm, ...), or slm for a token "
                        "model (its engine: --runner-option slm=cpu|cuda|RUNNER, default cpu)")
    a.add_argument("--threads", type=int, default=None, help="inference threads (default: the runner's)")
    a.add_argument("--batch-size", type=int, default=1, help="inference batch size (default 1)")
    a.add_argument("--dtype", default=None, help="inference dtype (default: the runner's)")
    a.add_argument("--servers", default=None, help="remote runner: serve-device URL(s), comma-separated")
    a.add_argument("--runner-option", action="append", default=[], metavar="KEY=VALUE",
                   help="runner option, YAML value (repeatable)")
    a.add_argument("--space", required=True, help="search space name (see `hwnas spaces`)")
    a.add_argument("--space-option", action="append", default=[], metavar="KEY=VALUE",
                   help="space option, YAML value, e.g. --space-option resolutions=[128,160]")
    a.add_argument("--samples", type=int, default=20, help="reference archs to measure (default 20)")
    a.add_argument("--holdout", type=int, default=10, help="extra archs measured to report quality")
    a.add_argument("--pool", type=int, default=200, help="sampled candidates the reference set is chosen from")
    a.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds per architecture (default 5)")
    a.add_argument("--seed", type=int, default=0, help="seed of the sampled pool (default 0)")
    a.add_argument("--store", default=None, help="measurement store (default $HWNAS_HOME/measurements.db)")
    a.add_argument("--predictor", default="auto", choices=["auto", "fewshot", "mixture"],
                   help="fewshot: the meta-learned few-shot predictor; mixture: a non-negative mixture of "
                        "the source devices' predictions; auto (default): both, keeping the one that "
                        "cross-validates best on the reference measurements (token models: per metric, the "
                        "few-shot prior with or without its analytic devices or neural view)")
    a.add_argument("--replace", action="store_true", help="onboard an existing device name again")
    a.add_argument("--no-progress", action="store_true",
                   help="no progress bar; one status line per batch is still logged")
    a.set_defaults(func=run_add)
    ls = dsub.add_parser("list", help="list onboarded devices")
    ls.set_defaults(func=run_list)
    sh = dsub.add_parser("show", help="print a device's record")
    sh.add_argument("name", help="an onboarded device name (see `hwnas device list`)")
    sh.set_defaults(func=run_show)


def run_serve(args) -> int:
    # the same options as hwnas-device (hardware.remote.server.add_serve_arguments; a test keeps them equal)
    from hardware.remote.server import serve_from_args

    return serve_from_args(args, _options(args.runner_option, "--runner-option"))


def run_add(args) -> int:
    from nas.onboarding import onboard

    options = _options(args.runner_option, "--runner-option")
    for key, value in (("threads", args.threads), ("dtype", args.dtype), ("servers", args.servers)):
        if value is not None:
            options[key] = value
    options["batch_size"] = args.batch_size
    onboard(args.name, args.runner, options, args.space, _options(args.space_option, "--space-option"),
            samples=args.samples, holdout=args.holdout, pool=args.pool, seed=args.seed,
            protocol_options={"rounds": args.rounds}, store_path=args.store, replace=args.replace,
            predictor_kind=args.predictor,
            progress=not args.no_progress)
    return 0


def run_list(args) -> int:
    from nas.devices import list_devices, load_record

    names = list_devices()
    if not names:
        print("no devices onboarded (hwnas device add NAME --runner R --space S)")
    for name in names:
        record = load_record(name)
        held = record["quality"].get("heldout") or {}
        quality = (f"held-out Spearman {held['spearman']:.3f}, MAPE {held['mape'] * 100:.1f}%"
                   if held else "no held-out set")
        fp = record["fingerprint"]
        print(f"{name}: {record['space']['name']}, {fp['runner']} on {fp['device']} "
              f"(batch {fp['batch_size']}), {record['samples']} samples, {quality}")
    return 0


def run_show(args) -> int:
    from nas.devices import load_record

    print(json.dumps(load_record(args.name), indent=1))
    return 0
