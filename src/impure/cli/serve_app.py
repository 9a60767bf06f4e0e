"""`impure app`: serve the web demo (the `app` extra, Gradio) on this machine; offline."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "app", help="web demo: pick or upload an image, attack it, see it purified (needs impure[app])",
        description="Serve a page where you pick one of the shipped CIFAR-10 samples or upload an image, choose "
                    "the purifier and the classifier (bundled ones by default), attack the classifier (FGSM or "
                    "PGD, ε slider) and see the clean, adversarial and purified images side by side with their "
                    "top-3 predictions and the residual perturbation. Offline, on the CPU or a GPU. Needs the "
                    'extra: pip install "impure[app]".',
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default 7860)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise ValueError('the web demo needs Gradio, which is not installed: pip install "impure[app]"') from None
    from ..app import serve

    print(f"impure app: serving on http://{args.host}:{args.port} (Ctrl+C stops it)", flush=True)
    serve(args.host, args.port)
    return 0
