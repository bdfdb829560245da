"""`TrialConfig`: every switch an ablation may flip, with the course template's baseline as defaults.

One object is passed whole through the trainer (nanoGPT style). Loading rejects unknown keys
(suggesting the nearest field) and wrong types, naming the key and the allowed values.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mtl.aggregation import METHODS, OPTION_KEYS, build_aggregator
from mtl.tasks import COURSE_TASKS, canonical_tasks

SE_PLACES = ("encoder", "aspp", "decoder")
DILATIONS = ((False, False, False), (False, False, True), (False, True, True))


class ConfigError(ValueError):
    """A bad configuration value; the message names the source, the key and what is allowed."""


class TrialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # --- model ------------------------------------------------------------------------------
    # your own model instead of the built-in ones: "package.module:function" or "path/to/file.py:function", a
    # function of this config returning an nn.Module (mtl/models/user.py says what it must return)
    model: str | None = None
    architecture: Literal["joint", "branched", "distilled"] = "joint"
    encoder: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet34"
    pretrained: bool | str = False  # True: torchvision ImageNet weights from the torch cache; str: a file
    dilation: tuple[bool, bool, bool] = (False, False, False)  # replace strides of layers 2, 3, 4
    aspp: bool = False
    aspp_rates: tuple[int, int, int] = (3, 6, 9)
    skip: bool = False
    se: tuple[Literal["encoder", "aspp", "decoder"], ...] = ()  # true = all three places
    decoder_channels: int = Field(256, ge=8)
    # --- optimisation -----------------------------------------------------------------------
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    lr_schedule: Literal["poly", "cosine", "constant"] = "poly"
    lr_power: float = Field(0.9, gt=0)
    warmup_epochs: int = Field(0, ge=0)
    batch_size: int = Field(4, ge=1)
    val_batch_size: int = Field(8, ge=1)
    epochs: int = Field(16, ge=1)
    # the tasks to learn (mtl/tasks.py): the course's two by default, surface normals as a third, or one alone: a
    # single-task model drops the other tasks' heads (and branches), as the field's single-task baselines do
    # (Maninis et al. 2019; Vandenhende et al. 2021), rather than zeroing their losses
    tasks: tuple[Literal["semseg", "depth", "normals"], ...] = ("semseg", "depth")
    # --- losses -----------------------------------------------------------------------------
    # one weight per task, in the order of `tasks`; default: equal weights (0.5 / 0.5 for the course's two tasks)
    loss_weights: tuple[float, ...] = (0.5, 0.5)
    # fixed / uncertainty / dwa weight the losses (mtl.losses); the others aggregate the tasks' gradients on the
    # shared part (mtl.aggregation, TorchJD): one backward pass per task. Options: keys named after their method.
    task_weighting: Literal["fixed", "uncertainty", "dwa", "mean", "rlw", "mgda", "pcgrad", "graddrop", "imtl_g",
                            "gradvac", "cagrad", "nash_mtl", "aligned_mtl", "dualproj", "upgrad", "fairgrad",
                            "config", "gradnorm"] = "fixed"
    dwa_temperature: float = Field(2.0, gt=0)
    cagrad_c: float | None = Field(None, ge=0)  # None: the method's default (mtl.aggregation.METHODS)
    gradvac_beta: float | None = Field(None, gt=0, le=1)
    fairgrad_alpha: float | None = Field(None, gt=0)
    gradnorm_alpha: float | None = Field(None, ge=0)
    gradnorm_lr: float | None = Field(None, gt=0)
    depth_loss: Literal["l2", "l1", "berhu", "silog"] = "l2"
    depth_unit: Literal["standardized", "log", "minmax", "inverse"] = "standardized"
    # --- data -------------------------------------------------------------------------------
    data: str = "synthetic"  # or a Miniscapes- / Cityscapes-layout directory
    image_size: tuple[int, int] = (256, 512)  # [H, W] of the synthetic render
    train_images: int | None = Field(None, ge=1)  # synthetic count (default 20000) or a subset
    val_images: int | None = Field(None, ge=1)
    test_images: int | None = Field(None, ge=1)
    data_seed: int = 0  # synthetic scenes; `seed` below varies initialisation and data order
    crop_size: int | tuple[int, int] = 256
    aug_scale: tuple[float, float] = (1.0, 1.0)
    aug_flip: bool = False
    tta: Literal["off", "flip", "multiscale"] = "off"
    # decode train/val once into arrays, augment batches on the device (mtl.data.decoded); "auto": when they fit
    in_memory: bool | Literal["auto"] = False
    # --- run --------------------------------------------------------------------------------
    seed: int = 0
    amp: Literal["off", "bf16", "fp16"] = "off"  # autocast; bf16 also on CPU, fp16 (with a grad scaler) on CUDA only
    channels_last: bool = False
    compile: Literal["off", "default", "reduce-overhead", "max-autotune"] = "off"  # torch.compile mode;
    # "reduce-overhead" adds CUDA graphs (no launch overhead at small batch sizes)
    num_workers: int = Field(2, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cpu_threads: int | None = Field(None, ge=1)
    export_predictions: bool = False
    checkpoint_every: int = Field(1, ge=1)  # epochs between checkpoints; the last epoch always gets one

    @field_validator("se", mode="before")
    @classmethod
    def _se_places(cls, v: Any) -> Any:
        if v is True:
            return SE_PLACES
        if v is False or v is None:
            return ()
        if isinstance(v, str):
            return (v,)
        return v

    @field_validator("dilation")
    @classmethod
    def _dilation(cls, v: tuple[bool, bool, bool]) -> tuple[bool, bool, bool]:
        if v not in DILATIONS:
            raise ValueError(f"allowed: {', '.join(str(list(d)).lower() for d in DILATIONS)} "
                             "(output stride 32, 16, 8: a layer after a dilated one must be dilated too)")
        return v

    @field_validator("tasks", mode="before")
    @classmethod
    def _tasks(cls, v: Any) -> Any:
        return canonical_tasks(v)  # one order, so equal configs compare equal

    @model_validator(mode="before")
    @classmethod
    def _equal_weights(cls, values: Any) -> Any:
        # unset loss_weights of three or more tasks: equal weights, as the course's 0.5 / 0.5 is for two
        if isinstance(values, dict) and "loss_weights" not in values and "tasks" in values:
            try:
                n = len(canonical_tasks(values["tasks"]))
            except (TypeError, ValueError):
                return values  # the field validator names the problem
            if n > 2:
                values = {**values, "loss_weights": (round(1.0 / n, 6),) * n}
        return values

    @model_validator(mode="after")
    def _per_task(self) -> TrialConfig:
        if len(self.tasks) == 1 and self.architecture == "distilled":
            raise ValueError("tasks: a single-task model has no other task to distil from; use architecture "
                             "joint or branched (the same network for one task)")
        if self.architecture == "distilled" and self.tasks != COURSE_TASKS:
            raise ValueError(f"architecture distilled gates the features of semseg and depth into each other "
                             f"(PAD-Net style, two branches); tasks {list(self.tasks)} need joint or branched")
        # a single-task model trains on its own loss alone: its weights are not used (any one or two are accepted)
        if len(self.tasks) > 1 and len(self.loss_weights) != len(self.tasks):
            raise ValueError(f"loss_weights: one weight per task in the order of tasks {list(self.tasks)}; got "
                             f"{len(self.loss_weights)} ({list(self.loss_weights)})")
        if any(w < 0 for w in self.loss_weights) or not sum(self.loss_weights) > 0:
            raise ValueError(f"loss_weights: weights are >= 0 and not all 0; got {list(self.loss_weights)}")
        return self

    @model_validator(mode="after")
    def _task_weighting(self) -> TrialConfig:
        method = self.task_weighting
        for key, owner in {**OPTION_KEYS, "dwa_temperature": "dwa"}.items():
            given = self.weighting_options().get(key) if key in OPTION_KEYS else self.dwa_temperature != 2.0
            if given and owner != method:
                own = [k for k, o in OPTION_KEYS.items() if o == method] or (["dwa_temperature"] if method == "dwa"
                                                                              else [])
                takes = f"takes {', '.join(own)}" if own else "has no options"
                raise ValueError(f"{key}: an option of task_weighting {owner}; task_weighting {method} {takes}")
        if method in METHODS:
            self._check_aggregation(method)
        return self

    def _check_aggregation(self, method: str) -> None:
        if len(self.tasks) < 2:
            raise ValueError(f"task_weighting {method} aggregates the gradients of two or more tasks; "
                             "a single-task model trains on its own loss (task_weighting fixed)")
        if len(set(self.loss_weights)) > 1:
            raise ValueError(f"loss_weights: task_weighting {method} sets how the tasks combine itself; "
                             "loss_weights apply to fixed and dwa (leave them equal, the default)")
        # with `compile`, evaluation runs the compiled model; the aggregated training step calls the model's
        # parts (shared_features, heads), which run eagerly through the compiled wrapper
        if self.amp == "fp16":
            raise ValueError(f"task_weighting {method} backpropagates a Jacobian, which has no grad-scaler path: "
                             "use amp off or bf16")
        if METHODS[method].extra:
            try:
                build_aggregator(method, len(self.tasks), self.weighting_options())
            except ImportError as e:
                raise ValueError(str(e)) from None

    @field_validator("amp", mode="before")
    @classmethod
    def _amp(cls, v: Any) -> Any:
        return {False: "off", True: "bf16"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("pretrained", mode="before")
    @classmethod
    def _pretrained(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    # --- derived ---------------------------------------------------------------------------
    @property
    def crop(self) -> tuple[int, int]:
        return (self.crop_size, self.crop_size) if isinstance(self.crop_size, int) else tuple(self.crop_size)

    @property
    def synthetic(self) -> bool:
        return self.data == "synthetic"

    def weighting_options(self) -> dict[str, float | None]:
        """The gradient-aggregation options (None: the method's default)."""
        return {"cagrad_c": self.cagrad_c, "gradvac_beta": self.gradvac_beta, "fairgrad_alpha": self.fairgrad_alpha,
                "gradnorm_alpha": self.gradnorm_alpha, "gradnorm_lr": self.gradnorm_lr}

    def counts(self) -> dict[str, int | None]:
        """Images per split: synthetic defaults to the course's 20000 / 2500 / 2500; real data to all."""
        default = (20000, 2500, 2500) if self.synthetic else (None, None, None)
        given = (self.train_images, self.val_images, self.test_images)
        return {s: g if g is not None else d for s, g, d in zip(("train", "val", "test"), given, default, strict=True)}

    # --- conversion --------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """One level of plain values (lists, not tuples) for Tune, W&B and report columns."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_dump().items()}

    def replace(self, **overrides: Any) -> TrialConfig:
        return TrialConfig.from_dict({**self.to_flat(), **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> TrialConfig:
        unknown = [k for k in values if k not in cls.model_fields]
        if unknown:
            raise ConfigError(unknown_key_message(source, unknown[0], cls.model_fields))
        try:
            return cls(**values)
        except ValidationError as e:
            raise ConfigError(validation_message(source, e)) from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrialConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"{path}: cannot read config ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of TrialConfig fields at the top level")
        return cls.from_dict({**values, **(overrides or {})}, source=str(path))


def absolute_model_reference(ref: str) -> str:
    """`model: path/to/file.py:fn` with an absolute path (trials run in their own working folders); the module form
    `package.module:fn` as it is."""
    target, sep, attr = ref.rpartition(":")
    if sep and target.endswith(".py"):
        return f"{Path(target).expanduser().resolve()}:{attr}"
    return ref


def unknown_key_message(source: str, key: str, allowed) -> str:
    near = difflib.get_close_matches(str(key), list(allowed), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    return f"{source}: unknown key {key!r}{hint}; allowed keys: {', '.join(sorted(allowed))}"


def validation_message(source: str, error: ValidationError) -> str:
    lines = []
    for e in error.errors():
        key = ".".join(str(p) for p in e["loc"] if not str(p).startswith(("function-", "literal[")))
        where = f"key {key!r}: " if key else ""  # a model validator's message names its keys itself
        lines.append(f"{source}: {where}{e['msg']} (got {e.get('input')!r})")
    return "\n".join(dict.fromkeys(lines))


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> dict, values parsed as YAML (0.01 -> float, [0.2, 0.8] -> list)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"command line: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
