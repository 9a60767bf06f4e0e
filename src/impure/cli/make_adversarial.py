"""`impure make-adversarial`: attack a dataset with one classifier and write shards for fine-tuning."""

from __future__ import annotations

import argparse

from . import options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "make-adversarial",
        help="write (adversarial, clean, label) shards for fine-tuning",
        description="Attack the images of DATA (an .npz, the CIFAR-10 JPEG archive or an image folder) "
                    "against a classifier and write the triples to OUTPUT as .npy shards plus manifest.json. "
                    "Rerunning the same command continues an interrupted run. Under torchrun each process attacks "
                    "its share of the shards, and the files are those one process writes.",
    )
    parser.add_argument("data", help="clean labelled images")
    options.add_output(parser, "the shards and manifest.json into this folder", required=True, metavar="DIR")
    parser.add_argument("--classifier", required=True,
                        help="classifier to attack: impure.classifiers name, torchvision:NAME, file, ...")
    options.add_classifier_weights(parser, old="--weights")
    parser.add_argument("--attack", default="PGD",
                        help="an attack name: fgsm, bim, pgd, mifgsm, difgsm, mdi2fgsm, apgd-ce, apgd-dlr, cw, "
                             "deepfool (case-insensitive; default PGD)")
    options.add_eps(parser, default=None, as_text=True)
    parser.add_argument("--alpha", help="step size, e.g. 2/255")
    parser.add_argument("--steps", type=int, help="attack iterations")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="another keyword argument of the attack (repeatable; values parsed as YAML)")
    parser.add_argument("--limit", type=int, help="attack only the first N images")
    parser.add_argument("--image-size", type=int, help="resize image-folder images to this side")
    parser.add_argument("--batch-size", type=int, default=256, help="images attacked at once (default 256)")
    parser.add_argument("--shard-size", type=int, default=5000,
                        help="images per shard file; a rerun continues from the last complete shard (default 5000)")
    options.add_seed(parser)  # shard k's attack starts use (seed, k)
    options.add_device(parser)
    options.add_no_progress(parser)
    parser.add_argument("--force", action="store_true", help="replace a folder made with other settings")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import yaml
    from torch.utils.data import Subset

    from impure._util.distributed import init_distributed
    from impure.data import open_dataset
    from impure.device import select_device
    from impure.training.adversarial import make_adversarial_dataset
    from impure.training.builders import build_attack, load_frozen_classifier
    from impure.training.config import AttackSpec, NetworkSpec

    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--option must look like KEY=VALUE, got {item!r}")
        options[key.strip()] = yaml.safe_load(value)
    options.update({k: v for k, v in (("eps", args.eps), ("alpha", args.alpha), ("steps", args.steps))
                    if v is not None})
    spec = AttackSpec.from_dict({"name": args.attack, **options}, "--attack")
    device = select_device(args.device)
    classifier = load_frozen_classifier(NetworkSpec(args.classifier, str(args.classifier_weights or ""))).to(device)
    dataset = open_dataset(args.data, image_size=args.image_size)
    if args.limit:
        dataset = Subset(dataset, range(min(args.limit, len(dataset))))
    description = {"source": str(args.data), "limit": args.limit, "classifier": args.classifier,
                   "weights": None if args.classifier_weights is None else str(args.classifier_weights),
                   "attack": {"name": spec.name, **spec.options}}
    context = init_distributed(device.type)
    try:
        output = make_adversarial_dataset(dataset, build_attack(spec, classifier), args.output,
                                          description=description, shard_size=args.shard_size,
                                          batch_size=args.batch_size, seed=args.seed, device=device,
                                          force=args.force, progress=not args.no_progress)
    finally:
        context.close()
    if context.is_main:
        print(f"wrote {len(dataset)} adversarial examples to {output}")
    return 0
