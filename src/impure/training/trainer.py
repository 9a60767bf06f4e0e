"""The two-stage IMPure Trainer: clean pre-training and adversarial fine-tuning, resumable and distributed."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import ConcatDataset, Dataset, Subset
from tqdm.auto import tqdm

from impure._util.atomic import atomic_write
from impure._util.distributed import DistributedContext, init_distributed
from impure._util.modes import eval_mode
from impure._util.rng import batch_slice
from impure._util.state import load_state_dict_strict
from impure.attacks.eot import adaptive_target
from impure.classifier import PurifiedClassifier
from impure.config import PurifierConfig
from impure.data import AdversarialShards, fetch_batch, open_dataset
from impure.device import cpu_features, select_device, select_dtype, tune_cpu_allocator
from impure.hub import Purifier
from impure.training.batches import BatchPlan, augment
from impure.training.builders import build_attack, build_loss, load_frozen_classifier, load_logits_classifier
from impure.training.checkpoint import atomic_save, config_differences, load_checkpoint
from impure.training.config import TrainConfig
from impure.training.losses import PurificationLoss
from impure.training.optim import build_optimizer, build_scheduler
from impure.training.validation import validate

__all__ = ["Trainer"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"
MODEL_DIR = "model"
# Settings a resumed run may change: they do not affect the weights.
_RESUMABLE_CHANGES = ("output_dir", "device", "log.", "data.num_workers", "validation.", "compile")
# Config sections whose keys are fixed fields (not free-form tables such as attack options): the
# TrainConfig fields that are dataclasses themselves.
_SECTIONS = tuple(f.name for f in fields(TrainConfig) if is_dataclass(getattr(TrainConfig(), f.name)))


def _step_seed(seed: int, step: int) -> int:
    """A well-mixed 63-bit seed for (run seed, step), the same in every process."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _with_defaults(saved: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """`saved` with the settings it lacks taken from `defaults` (keys added to the config later)."""
    merged = dict(saved)
    for key, value in defaults.items():
        if key not in merged:
            merged[key] = value
        elif isinstance(value, dict) and isinstance(merged[key], dict) and key in _SECTIONS:
            merged[key] = _with_defaults(merged[key], value)
    return merged


@dataclass
class _Run:
    """What one `fit` works with: the models, the optimisation state, the data and the log window."""

    ctx: DistributedContext
    device: torch.device
    optim: Any  # the config's OptimConfig
    purifier: Purifier
    model: nn.Module  # the purifier as trained: compiled and/or wrapped for data parallelism
    loss_fn: PurificationLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    evaluated: Purifier  # the weights validated and saved: the EMA's, if any
    autocast_dtype: torch.dtype | None
    paired: bool
    attacks: list
    robust_classifiers: list[nn.Module]  # the robust stage's frozen classifiers, one per step in turn
    plan: BatchPlan
    batches: Any  # an endless iterator of batches
    val_sets: dict[str, tuple[torch.Tensor, ...]]
    log_path: Path
    bar: Any  # tqdm
    tensorboard: Any  # a torch.utils.tensorboard SummaryWriter on rank 0 with log.tensorboard, else None
    step: int  # the step the run starts from
    sums: dict[str, torch.Tensor] = field(default_factory=dict)  # loss terms of the log window
    window_steps: int = 0
    window_images: int = 0
    window_start: float = field(default_factory=time.perf_counter)


class Trainer:
    """Train an IMPure purifier from a `TrainConfig`; objects passed here replace the config's.

    Run with `Trainer(config).fit()`, or under `torchrun --nproc_per_node=N` for data parallelism: each
    process trains on its slice of every batch, gradients are averaged, and only rank 0 writes files.
    The randomness of step s (noise, partitions, patch mixing, augmentation, attack starts) is seeded
    from (seed, s) and drawn for the global batch, each process taking its slice: a run gives the same
    weights on any number of processes with the same global batch (`optim.batch_size` x processes),
    and the checkpoint's step restores the RNG state and the data position, so a run may resume on
    another number of processes.

    Args:
        config: the run's settings (see `impure.training.config`).
        purifier: a purifier to train instead of `config.model`.
        loss: a loss to use instead of `config.loss` (e.g. a `FeatureLoss` over your own network).
        train_data: training data instead of `config.data.train` (items (image, label); for fine-tuning
            from saved pairs, (adversarial, clean, label)).
        val_data: validation data (image, label) instead of `config.data.val`.
    """

    def __init__(self, config: TrainConfig, *, purifier: Purifier | None = None,
                 loss: PurificationLoss | None = None, train_data: Dataset | None = None,
                 val_data: Dataset | None = None):
        config.validate()
        self.config = config
        self.output_dir = Path(config.output_dir)
        self._purifier, self._loss, self._train_data, self._val_data = purifier, loss, train_data, val_data
        # The robust stage's classifiers, refused now if they do not return logits, not mid-run.
        self._robust_classifiers = [
            load_logits_classifier(spec, f"robust.classifiers[{i}]", config.data.image_size or 32)
            for i, spec in enumerate(config.robust.classifiers)] if config.stage == "robust" else []
        self.purifier: Purifier | None = None  # the purifier being trained, once `fit` has built it
        self.ema: ModelEmaV3 | None = None  # its weights' moving average, with optim.ema_decay
        self.history: list[dict[str, Any]] = []  # every record written to the log by this process

    # ---------------------------------------------------------------------------------------------- setup
    def _build_purifier(self) -> Purifier:
        if self._purifier is not None:
            return self._purifier
        model = self.config.model
        if model.init:
            return Purifier.from_pretrained(model.init)
        return Purifier(PurifierConfig.preset(model.preset, **model.overrides))

    def _training_set(self) -> tuple[Dataset, bool]:
        """The dataset and whether its items are already (adversarial, clean, label) triples."""
        config = self.config
        if self._train_data is not None:
            dataset = self._train_data
            paired = config.stage == "finetune" and not config.adversarial.attacks
        elif config.stage == "finetune" and config.adversarial.shards:
            parts = [AdversarialShards(path) for path in config.adversarial.shards]
            dataset, paired = (parts[0] if len(parts) == 1 else ConcatDataset(parts)), True
        else:
            dataset = open_dataset(config.data.train, image_size=config.data.image_size or None)
            paired = False
        if config.data.train_limit:
            dataset = Subset(dataset, range(min(config.data.train_limit, len(dataset))))
        return dataset, paired

    def _validation_set(self, device: torch.device) -> dict[str, tuple[torch.Tensor, ...]]:
        """{"val": (inputs, targets, labels)} and, with a validation attack, {"val_adv": ...}."""
        config = self.config
        dataset = self._val_data
        if dataset is None:
            if not config.data.val:
                return {}
            dataset = open_dataset(config.data.val, image_size=config.data.image_size or None)
        count = len(dataset) if not config.data.val_limit else min(config.data.val_limit, len(dataset))
        images, labels = fetch_batch(dataset, list(range(count)))[:2]
        sets = {"val": (images, images, labels)}
        if config.validation.attack is not None:
            classifier = self._val_classifier
            attack = build_attack(config.validation.attack, classifier)
            chunks = []
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(config.seed)
                for start in range(0, count, config.validation.batch_size):
                    part = slice(start, start + config.validation.batch_size)
                    chunks.append(attack(images[part].to(device), labels[part].to(device)).detach().cpu())
            sets["val_adv"] = (torch.cat(chunks), images, labels)
        return sets

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self, *, resume: bool = False, stop_after: int | None = None,
            time_limit: float | None = None) -> dict[str, Any]:
        """Train until `config.optim.steps` (or an earlier stop), checkpointing on the way.

        Args:
            resume: continue from `output_dir/checkpoint.pt` if it exists (else start afresh). Without
                it an existing checkpoint is an error, so that nothing is overwritten by accident.
            stop_after: stop (with a checkpoint) once this step is reached, e.g. to split a run.
            time_limit: stop (with a checkpoint) at the first step boundary after this many seconds.

        Returns:
            A dict: "step" (the last step), "finished" (whether all steps ran), "metrics" (the last logged
            record) and "model_dir" (the saved model folder, or None).
        """
        device = select_device(self.config.device)
        if device.type == "cpu":
            tune_cpu_allocator()  # reuse large activation buffers instead of page-faulting them anew
        ctx = init_distributed(device.type)
        if ctx.enabled and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
        try:
            return self._fit(ctx, device, resume, stop_after, time_limit)
        finally:
            ctx.close()

    def _fit(self, ctx: DistributedContext, device: torch.device, resume: bool, stop_after: int | None,
             time_limit: float | None) -> dict[str, Any]:
        run = self._setup(ctx, device, resume)
        step, started = run.step, time.perf_counter()
        end = run.optim.steps if stop_after is None else min(run.optim.steps, stop_after)
        while step < end:
            self._train_step(run, step)
            step += 1
            last = step == end
            self._log(run, step, last)
            self._maybe_validate(run, step)
            timed_out = time_limit is not None and ctx.any(time.perf_counter() - started > time_limit, device)
            self._maybe_checkpoint(run, step, force=last or timed_out)
            if timed_out:
                break
        return self._finish(run, step)

    # ---------------------------------------------------------------------------------------------- setup
    def _setup(self, ctx: DistributedContext, device: torch.device, resume: bool) -> _Run:
        """Build everything a run needs, restore the checkpoint when resuming, write the config copy."""
        config, optim = self.config, self.config.optim
        dtype = select_dtype(config.precision, device, training=True)
        autocast_dtype = None if dtype == torch.float32 else dtype
        torch.manual_seed(config.seed)  # identical initial weights in every process
        purifier = self.purifier = self._build_purifier().to(device)
        loss_fn = (self._loss or build_loss(config.loss, purifier.config)).to(device)
        dataset, paired = self._training_set()
        attacks = []
        if config.stage == "finetune" and not paired:
            classifiers = [load_frozen_classifier(spec).to(device) for spec in config.adversarial.classifiers]
            attacks = [build_attack(spec, net) for net in classifiers for spec in config.adversarial.attacks]
        robust_classifiers = [classifier.to(device) for classifier in self._robust_classifiers]
        self._val_classifier = (load_frozen_classifier(config.validation.classifier).to(device)
                                if config.validation.classifier.network else None)
        optimizer = build_optimizer(purifier, optim.lr, optim.weight_decay, optim.betas)
        scheduler = build_scheduler(optimizer, optim.schedule, optim.warmup_steps, optim.steps,
                                    optim.cooldown_steps, optim.min_lr / optim.lr)
        scaler = torch.amp.GradScaler(device.type, enabled=autocast_dtype == torch.float16)
        ema = self.ema = (ModelEmaV3(purifier, decay=optim.ema_decay, use_warmup=optim.ema_warmup)
                           if optim.ema_decay else None)

        step = self._restore(ctx, resume, purifier, optimizer, scheduler, scaler, ema)
        purifier.train()
        loss_fn.train()
        model: nn.Module = torch.compile(purifier) if config.compile else purifier
        if ctx.enabled:
            device_ids = [device.index] if device.type == "cuda" else None
            model = DistributedDataParallel(model, device_ids=device_ids)
        plan = BatchPlan(len(dataset), optim.batch_size, ctx.world_size, ctx.rank, config.seed)
        log_path = self.output_dir / LOG_NAME
        if ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.output_dir / "train_config.json", json.dumps(config.to_dict(), indent=2))
            # What ran it, so that the images/s in the log can be read against the hardware.
            environment = {"torch": torch.__version__, "device": str(device), "world_size": ctx.world_size,
                           "autocast": str(autocast_dtype) if autocast_dtype else None, "cpu": cpu_features()}
            atomic_write(self.output_dir / "environment.json", json.dumps(environment, indent=2))
            self._truncate_log(log_path, step)
        bar = tqdm(total=optim.steps, initial=step, disable=not (ctx.is_main and config.log.progress),
                   desc=f"{config.stage}", unit="step", dynamic_ncols=True)
        return _Run(
            ctx=ctx, device=device, optim=optim, purifier=purifier, model=model, loss_fn=loss_fn,
            optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema,
            evaluated=purifier if ema is None else ema.module, autocast_dtype=autocast_dtype, paired=paired,
            attacks=attacks, robust_classifiers=robust_classifiers, plan=plan,
            batches=plan.batches(dataset, step * optim.grad_accum, config.data.num_workers),
            val_sets=self._validation_set(device) if ctx.is_main else {}, log_path=log_path, bar=bar, step=step,
            tensorboard=self._tensorboard(step) if ctx.is_main and config.log.tensorboard else None,
        )

    # ---------------------------------------------------------------------------------------------- the loop
    def _train_step(self, run: _Run, step: int) -> None:
        """One optimizer step: its micro-batches' forward and backward, clipping, AdamW, schedule, EMA."""
        optim, ctx = run.optim, run.ctx
        seed = _step_seed(self.config.seed, step)
        torch.manual_seed(seed)
        generator = torch.Generator(device=run.device).manual_seed(seed)
        augment_generator = torch.Generator().manual_seed(seed)
        for micro in range(optim.grad_accum):
            with batch_slice(ctx.rank * optim.batch_size, ctx.world_size * optim.batch_size):
                inputs, targets, labels = self._next_batch(
                    run.batches, run.paired, run.attacks, step * optim.grad_accum + micro, augment_generator,
                    run.device)
                classifier = None
                if run.robust_classifiers:  # attack the pipeline with the purifier's current weights
                    classifier = run.robust_classifiers[(step * optim.grad_accum + micro) % len(run.robust_classifiers)]
                    inputs = self.robust_attack(run.purifier, classifier)(targets, labels).detach()
                sync = not ctx.enabled or micro == optim.grad_accum - 1
                no_sync = contextlib.nullcontext() if sync else run.model.no_sync()
                with no_sync, self._autocast(run.device, run.autocast_dtype):
                    purified = run.model(inputs, generator=generator, clamp=False)
                    terms = run.loss_fn(purified.float(), targets, inputs, labels, generator=generator)
                    if classifier is not None:
                        logits = classifier(purified.float().clamp(0, 1))
                        terms["robust_ce"] = F.cross_entropy(logits.float(), labels)
                        terms["total"] = terms["total"] + self.config.robust.ce_weight * terms["robust_ce"]
                run.scaler.scale(terms["total"] / optim.grad_accum).backward()
                for name, value in terms.items():  # kept on the device: no synchronisation per step
                    run.sums[name] = run.sums.get(name, 0.0) + value.detach().double() / optim.grad_accum
        if optim.grad_clip:
            run.scaler.unscale_(run.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(run.purifier.parameters(), optim.grad_clip)
            run.sums["grad_norm"] = run.sums.get("grad_norm", 0.0) + norm.detach().double()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
        if run.ema is not None:
            run.ema.update(run.purifier, step=step)
        run.window_steps += 1
        run.window_images += optim.batch_size * optim.grad_accum * ctx.world_size
        run.bar.update(1)

    def _log(self, run: _Run, step: int, last: bool) -> None:
        """Every `log.every` steps (and at the last): the window's mean loss terms and throughput."""
        if step % max(self.config.log.every, 1) and not last:
            return
        record = self._log_record(run.ctx, run.sums, run.window_steps, run.window_images, run.window_start)
        record = {"step": step, "epoch": run.plan.position(step * run.optim.grad_accum)[0],
                  "lr": run.scheduler.get_last_lr()[0], **record}
        run.sums, run.window_steps, run.window_images, run.window_start = {}, 0, 0, time.perf_counter()
        if run.ctx.is_main:
            run.bar.set_postfix(loss=f"{record['total']:.4f}", img_s=f"{record['images_per_s']:.1f}")
            self._record(run, record)

    def _maybe_validate(self, run: _Run, step: int) -> None:
        """Every `log.val_every` steps and at the end of the schedule, on rank 0."""
        every = self.config.log.val_every
        if not (run.ctx.is_main and run.val_sets and ((every and step % every == 0) or step == run.optim.steps)):
            return
        validation_start = time.perf_counter()
        record = {"step": step, **self._validate(run.evaluated, run.val_sets)}
        run.window_start += time.perf_counter() - validation_start  # throughput counts training only
        run.bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
        self._record(run, record)

    def _maybe_checkpoint(self, run: _Run, step: int, force: bool) -> None:
        """Every `log.checkpoint_every` steps, and when forced (the last step, a time limit)."""
        every = self.config.log.checkpoint_every
        if force or (every and step % every == 0):
            self._checkpoint(run.ctx, run.purifier, run.optimizer, run.scheduler, run.scaler, run.ema, step)

    def _finish(self, run: _Run, step: int) -> dict[str, Any]:
        run.bar.close()
        if run.tensorboard is not None:
            run.tensorboard.close()
        finished = step >= run.optim.steps
        model_dir = self._save_model(run.evaluated) if finished and run.ctx.is_main else None
        run.ctx.barrier()
        last_train = next((r for r in reversed(self.history) if "total" in r), None)
        return {"step": step, "finished": finished, "metrics": last_train, "model_dir": model_dir}

    # ---------------------------------------------------------------------------------------------- steps
    def robust_attack(self, purifier: Purifier, classifier: nn.Module):
        """The robust stage's attack on `PurifiedClassifier(purifier, classifier)`: exact gradients through
        the purifier as it is now (the same module the optimizer updates), EOT over its noise if set."""
        return build_attack(self.config.robust.attack,
                            adaptive_target(purifier, classifier, eot_samples=self.config.robust.eot_samples))

    @staticmethod
    def _autocast(device: torch.device, dtype: torch.dtype | None):
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=dtype)

    def _next_batch(self, batches, paired: bool, attacks: list, micro_step: int,
                    generator: torch.Generator, device: torch.device) -> tuple[torch.Tensor, ...]:
        """(inputs, targets, labels) on `device` for one micro-step."""
        batch = next(batches)
        data = self.config.data
        if paired:
            inputs, targets, labels = batch
            inputs, targets = augment((inputs, targets), hflip=data.hflip, crop_padding=data.crop_padding,
                                      crop_scale=data.crop_scale, generator=generator)
            return inputs.to(device), targets.to(device), labels.to(device)
        images, labels = batch[0], batch[1]
        (images,) = augment((images,), hflip=data.hflip, crop_padding=data.crop_padding, crop_scale=data.crop_scale,
                            generator=generator)
        images, labels = images.to(device), labels.to(device)
        if not attacks:  # pre-training: self-reconstruction
            return images, images, labels
        attack = attacks[micro_step % len(attacks)]
        return attack(images, labels).detach(), images, labels

    @staticmethod
    def _log_record(ctx: DistributedContext, sums: dict[str, torch.Tensor], steps: int, images: int,
                    since: float) -> dict[str, float]:
        """The mean of every loss term over the window's steps and the processes, with throughput."""
        names = sorted(sums)
        values = ctx.mean(torch.stack([sums[n] for n in names]))
        record = {n: v / steps for n, v in zip(names, values.tolist(), strict=True)}
        record["images_per_s"] = images / max(time.perf_counter() - since, 1e-9)
        return record

    def _validate(self, purifier: Purifier,
                  val_sets: dict[str, tuple[torch.Tensor, ...]]) -> dict[str, float]:
        metrics = {}
        for name, (inputs, targets, labels) in val_sets.items():
            result = validate(purifier, inputs, targets, labels, classifier=self._val_classifier,
                              batch_size=self.config.validation.batch_size, seed=self.config.seed)
            metrics.update({f"{name}/{k}": v for k, v in result.items()})
        white_box = self.config.validation.white_box_limit
        if white_box and "val" in val_sets:
            metrics["val_white/accuracy"] = self._white_box_accuracy(purifier, *val_sets["val"][1:],
                                                                     limit=white_box)
        return metrics

    def _white_box_accuracy(self, purifier: Purifier, images: torch.Tensor, labels: torch.Tensor,
                            limit: int) -> float:
        """Accuracy of the validation classifier behind `purifier` under the validation attack made through
        both (exact gradients, fresh each time, seeded): the robust stage's curve."""
        images, labels = images[:limit], labels[:limit]
        device = next(purifier.parameters()).device
        pipeline = PurifiedClassifier(purifier, self._val_classifier)
        attack = build_attack(self.config.validation.attack, pipeline)
        batch_size, correct = self.config.validation.batch_size, 0
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), eval_mode(pipeline):
            torch.manual_seed(self.config.seed)
            for start in range(0, images.shape[0], batch_size):
                part = slice(start, start + batch_size)
                x, y = images[part].to(device), labels[part].to(device)
                adversarial = attack(x, y).detach()
                with torch.no_grad():
                    correct += int((pipeline(adversarial).argmax(dim=1) == y).sum())
        return correct / images.shape[0]

    # ---------------------------------------------------------------------------------------------- files
    def _restore(self, ctx: DistributedContext, resume: bool, purifier: Purifier, optimizer, scheduler,
                 scaler, ema: ModelEmaV3 | None) -> int:
        """Load the checkpoint when resuming; return the step to start from."""
        path = self.output_dir / CHECKPOINT_NAME
        if not path.is_file():
            return 0
        if not resume:
            raise ValueError(f"{path} exists: pass resume=True (--resume) to continue that run, or choose "
                             "another output_dir; nothing was overwritten")
        state = load_checkpoint(path)
        step = int(state["step"])
        saved = _with_defaults(state["config"], TrainConfig().to_dict())  # settings added since it was written
        changed = [n for n in config_differences(saved, self.config.to_dict())
                   if not n.startswith(_RESUMABLE_CHANGES) and n != "optim.batch_size"]  # checked below
        schedule_length = {"optim.steps", "optim.cooldown_steps"}
        if schedule_length & set(changed) and self._extendable(saved["optim"], step):
            changed = [n for n in changed if n not in schedule_length]
        if changed:
            raise ValueError(f"cannot resume {path}: the config changed in {changed}; restore those settings "
                             "or start a new output_dir (use model.init to start from its weights)")
        saved_global = saved["optim"]["batch_size"] * state["world_size"]
        if saved_global != self.config.optim.batch_size * ctx.world_size:
            raise ValueError(f"{path} was written by {state['world_size']} process(es) of optim.batch_size "
                             f"{saved['optim']['batch_size']}; resume it with the same global batch of {saved_global} "
                             f"images (optim.batch_size x processes), not {self.config.optim.batch_size} x "
                             f"{ctx.world_size}")
        load_state_dict_strict(purifier, state["model"], str(path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"cannot resume {path}: it was written without an EMA (optim.ema_decay)")
            load_state_dict_strict(ema.module, state["ema"], f"{path} (EMA)")
        return step

    def _extendable(self, saved_optim: dict[str, Any], step: int) -> bool:
        """Whether new `optim.steps` / `optim.cooldown_steps` leave every learning rate up to `step`
        unchanged: a constant schedule whose cool-down begins at `step` or later, before and after."""
        optim = self.config.optim
        saved_start = saved_optim["steps"] - saved_optim["cooldown_steps"]
        return optim.schedule == "constant" and step <= min(saved_start, optim.steps - optim.cooldown_steps)

    def _checkpoint(self, ctx: DistributedContext, purifier: Purifier, optimizer, scheduler, scaler,
                    ema: ModelEmaV3 | None, step: int) -> None:
        if ctx.is_main:
            state = {
                "step": step, "world_size": ctx.world_size, "config": self.config.to_dict(),
                "purifier_config": purifier.config.to_dict(), "model": purifier.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
            }
            if ema is not None:
                state["ema"] = ema.module.state_dict()
            atomic_save(state, self.output_dir / CHECKPOINT_NAME)

    def _save_model(self, purifier: Purifier) -> Path:
        """`save_pretrained` into `output_dir/model`, swapped in whole so that no half model is left."""
        target = self.output_dir / MODEL_DIR
        staging = Path(tempfile.mkdtemp(dir=self.output_dir, prefix=".model."))
        try:
            purifier.save_pretrained(staging, training=self.config.to_dict())  # the recipe goes on the card
            if target.exists():
                old = target.with_name(f".{MODEL_DIR}.old")
                shutil.rmtree(old, ignore_errors=True)
                target.rename(old)
                staging.rename(target)
                shutil.rmtree(old)
            else:
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target

    def _record(self, run: _Run, record: dict[str, Any]) -> None:
        """Append `record` to the JSONL log and to `history`, and its numbers to TensorBoard if enabled."""
        with run.log_path.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")
        self.history.append(record)
        if run.tensorboard is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, int | float):
                    run.tensorboard.add_scalar(key if key.startswith("val") else f"train/{key}", value,
                                               global_step=record["step"])
            run.tensorboard.flush()

    def _tensorboard(self, step: int) -> Any:
        """A SummaryWriter into `output_dir/tensorboard` that drops events after `step` (a resumed run)."""
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:
            raise ImportError('log.tensorboard needs the tensorboard package: pip install "impure[tensorboard]" '
                              "(or pip install tensorboard), or set log.tensorboard = false") from error
        return SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=step + 1 if step else None)

    @staticmethod
    def _truncate_log(path: Path, step: int) -> None:
        """Drop log records after `step` (written by an interrupted run after its last checkpoint)."""
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        if len(kept) != len(lines):
            atomic_write(path, "".join(line + "\n" for line in kept))
