"""Typed configuration for an evaluation: models x benchmark splits, compute, sampling, storage.

One pydantic model, `EvalConfig`, is at once the YAML config file (the PlantCAD pipeline format
users already have: `models`, `splits`, `compute`, `sampling`, `executor`), the flow's parameter
(so the Prefect UI renders a form) and the source of every cache key. It is validated once, when
loaded; unknown keys are errors. Field-level checks that need the task registry (task names,
mask positions, crop lengths) live here too, so that every cell is checked before any model loads.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from plantcad_flows.errors import UnknownNameError, ValidationError
from plantcad_flows.families import (
    BENCHMARK_REPO_ID,
    NATIVE_SEQ_LENGTH,
    VARIANT_SPLIT,
    TaskDef,
    TaskFamily,
    VariantSetConfig,
    builtin_tasks,
    get_family,
    get_task,
    task_registry,
)

ModelType = Literal["mlm", "clm"]
Implementation = Literal["auto", "native", "kernels", "remote"]
# The config.json model_types that plantcad_flows.architectures implements in plain PyTorch
# (tests/test_caduceus_loading.py checks that the two agree). This room may not import torch.
NATIVE_MODEL_TYPES = frozenset({"caduceus"})
MotifMode = Literal["fwd_only", "rc_only", "fwd_rc_avg"]
Strand = Literal["fwd", "rc"]
DEFAULT_PREFIX = "outputs"


def _one_of(field: str, alias: object, value: object) -> object:
    """Check a name against a Literal alias before pydantic does, so that the error suggests
    the closest valid name (pydantic's own message lists the choices but not a guess)."""
    choices = get_args(alias)
    if value not in choices:
        raise UnknownNameError(field, str(value), choices)
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ScoringFields(_Strict):
    """What a model entry and a `checkpoints:` entry both declare about scoring, checked once:
    names suggest the closest valid one, an MLM is scored forward only, and the context is
    centre-cropped, so its length must be even. `context_length` may list several contexts: each
    is a cell of its own (`contexts`, `at_context`). `_WHERE` names the entry in messages."""

    _WHERE: ClassVar[str] = "models[]"

    path: str = Field(description="Local directory or Hugging Face hub id")
    type: ModelType = Field(default="mlm", description="mlm (masked) or clm (causal)")
    context_length: int | tuple[int, ...] = Field(
        default=NATIVE_SEQ_LENGTH,
        description="Bases the model sees (a centred crop); a list, e.g. [512, 8192], scores each context "
        "as its own cell",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run modelling code the model repository ships (config.json auto_map); "
        "the hub's own default is false. PlantCaduceus and PlantCAD2 (Mamba) need true",
    )
    motif_inference_mode: MotifMode = Field(
        default="fwd_only", description="CLM only: fwd_only, rc_only or fwd_rc_avg"
    )
    implementation: Implementation = Field(
        default="auto",
        description="Whose code runs the model. native: this project's own PyTorch implementation "
        "(config.json model_type caduceus: PlantCaduceus, PlantCAD2), on any device, never the "
        "repository's code; kernels: the same with mamba_ssm's CUDA kernels; remote: the "
        "repository's own code (needs trust_remote_code); auto: native for what we implement "
        "(kernels on CUDA when mamba_ssm imports), else transformers",
    )

    @field_validator("type", mode="before")
    @classmethod
    def _type(cls, v: object) -> object:
        return _one_of(f"{cls._WHERE}.type", ModelType, v)

    @field_validator("motif_inference_mode", mode="before")
    @classmethod
    def _mode(cls, v: object) -> object:
        return _one_of(f"{cls._WHERE}.motif_inference_mode", MotifMode, v)

    @field_validator("context_length", mode="before")
    @classmethod
    def _context(cls, v: object) -> object:
        if isinstance(v, list | tuple):
            if not v:
                raise ValidationError(f"{cls._WHERE}.context_length", list(v), "list at least one context")
            if len(v) == 1:
                return v[0]
            if len(set(v)) != len(v):
                raise ValidationError(f"{cls._WHERE}.context_length", list(v), "contexts must be distinct")
        return v

    @property
    def contexts(self) -> tuple[int, ...]:
        """Every context this entry is scored at (one, unless `context_length` lists several)."""
        c = self.context_length
        return tuple(c) if isinstance(c, tuple) else (c,)

    def at_context(self, context: int):
        """This entry at one of its contexts (itself when it has only that one)."""
        if self.context_length == context:
            return self
        return self.model_copy(update={"context_length": context})

    @field_validator("implementation", mode="before")
    @classmethod
    def _implementation(cls, v: object) -> object:
        return _one_of(f"{cls._WHERE}.implementation", Implementation, v)

    def _where(self) -> str:
        return self._WHERE

    @model_validator(mode="after")
    def _mode_for_type(self) -> _ScoringFields:
        where = self._where()
        if self.type == "mlm" and self.motif_inference_mode != "fwd_only":
            raise ValidationError(
                f"{where}.motif_inference_mode",
                self.motif_inference_mode,
                "only fwd_only is supported for type mlm",
            )
        for context in self.contexts:
            if isinstance(context, bool) or context <= 0:
                raise ValidationError(
                    f"{where}.context_length", context, "must be a positive number of bases"
                )
            if context % 2:
                raise ValidationError(f"{where}.context_length", context, "must be even to centre-crop")
        if self.implementation == "remote" and not self.trust_remote_code:
            raise ValidationError(
                f"{where}.implementation",
                "remote",
                "runs the repository's own code, so it needs trust_remote_code: true",
                "or use implementation: native for a Caduceus model",
            )
        return self


class ModelConfig(_ScoringFields):
    """A DNA language model, loaded through transformers' Auto classes."""

    name: str | None = Field(default=None, description="Label in results; defaults to path")
    subfolder: str = ""
    revision: str | None = None
    step: int | None = Field(
        default=None, ge=0, description="Training step; set on the models `checkpoints:` discovers"
    )

    @model_validator(mode="after")
    def _remote_code(self) -> ModelConfig:
        # Local directories are checked here, with the config; hub models when they are loaded.
        config_json = Path(self.path) / self.subfolder / "config.json"
        if config_json.is_file():
            try:
                declared = json.loads(config_json.read_text())
            except (OSError, ValueError):
                return self  # unreadable: loading will say so, naming the model
            check_remote_code(self, declared)
        return self

    @property
    def label(self) -> str:
        return self.name or self.path


def runs_natively(model: ModelConfig, config_dict: dict) -> bool:
    """Whether this project's own implementation runs `model` (native or kernels), from its
    `implementation` and config.json's `model_type`; its `auto_map` code is then never imported.

    Raises:
        ValidationError: naming `models[NAME].implementation`, native or kernels asked for an
            architecture we do not implement.
    """
    model_type = config_dict.get("model_type") if isinstance(config_dict, dict) else None
    if model.implementation == "remote":
        return False
    if model_type in NATIVE_MODEL_TYPES:
        return True
    if model.implementation in ("native", "kernels"):
        raise ValidationError(
            f"models[{model.label}].implementation",
            model.implementation,
            f"config.json model_type {model_type!r} has no native implementation "
            f"(native: {', '.join(sorted(NATIVE_MODEL_TYPES))})",
            "use implementation: auto",
        )
    return False


def check_remote_code(model: ModelConfig, config_dict: dict) -> None:
    """Refuse a model whose config.json maps Auto classes to code of its own (`auto_map`) unless
    the config trusts it: transformers would import and run that code. A model that runs
    natively never imports that code, so it needs no trust.

    Raises:
        ValidationError: naming `models[NAME].trust_remote_code` (or `.implementation`, see
            `runs_natively`).
    """
    auto_map = config_dict.get("auto_map") if isinstance(config_dict, dict) else None
    if runs_natively(model, config_dict) or model.trust_remote_code or not auto_map:
        return
    classes = ", ".join(sorted(auto_map)) if isinstance(auto_map, dict) else str(auto_map)
    raise ValidationError(
        f"models[{model.label}].trust_remote_code",
        False,
        f"{model.path} ships its own modelling code (config.json auto_map: {classes})",
        "set it to true only if you trust that repository's code",
    )


class SplitConfig(_Strict):
    """One split of one task (built-in or from a `task_files:` file), from its dataset repo or
    from parquet at a path. Fields left out take the task definition's defaults."""

    # First, so that the task's own check below can see whether a definition came with it.
    definition: TaskDef | None = Field(
        default=None,
        description="The task's definition, filled in from the task registry when the config is "
        "loaded (so a run elsewhere needs no task file); you never write it",
    )
    task: str
    split: str
    repo_id: str | None = Field(default=BENCHMARK_REPO_ID, description="Dataset repo; default: the task's")
    revision: str | None = Field(
        default=None,
        description="Branch, tag or commit of the dataset repo (hub id, or a local git clone); "
        "resolved to a commit sha at plan time. Default: the default branch",
    )
    path: str | None = Field(default=None, description="Parquet file or directory (local, s3://, hf://)")
    seq_column: str = "sequence"
    label_column: str = "label"
    seq_length: int = Field(default=NATIVE_SEQ_LENGTH, gt=0)
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="The task family's split-level settings (masked families: mask_token_indexes, "
        "motif_len; structural variants: flanking), checked by the family",
    )
    strands: tuple[Strand, ...] | None = Field(
        default=None,
        description="fwd, rc or both: the strands this split is scored on; default: the config's `strands`",
    )
    variants: VariantSetConfig | None = Field(
        default=None,
        description="The variant set of a variant_effect task (from a `variants:` entry); you never write it",
    )

    @model_validator(mode="before")
    @classmethod
    def _defaults_from_definition(cls, data: object) -> object:
        if not isinstance(data, dict) or not isinstance(data.get("task"), str):
            return data
        definition = data.get("definition")
        if definition is None:
            definition = builtin_tasks().get(data["task"])
            if definition is None:
                return data  # unknown: the task field's own check says so, naming the field
        elif isinstance(definition, dict):
            definition = TaskDef.model_validate(definition)
        if definition.name != data["task"]:
            raise ValidationError(
                f"splits[{data['task']}].definition.name", definition.name, "is another task"
            )
        out = {"definition": definition, **{k: v for k, v in data.items() if k != "definition"}}
        out.setdefault("repo_id", definition.dataset.repo)
        out.setdefault("seq_column", definition.column("sequence"))
        out.setdefault("label_column", definition.column("label"))
        out.setdefault("seq_length", definition.seq_length)
        return out

    @field_validator("strands", mode="before")
    @classmethod
    def _strands(cls, v: object) -> object:
        return None if v is None else checked_strands("splits[].strands", v)

    @field_validator("task")
    @classmethod
    def _task(cls, v: str, info: ValidationInfo) -> str:
        if info.data.get("definition") is None:
            get_task(v, field="splits[].task")  # raises, with the closest name
        return v

    @model_validator(mode="after")
    def _split_and_masks(self) -> SplitConfig:
        task = self.definition
        if self.split not in task.splits:
            raise UnknownNameError(f"splits[{self.task}].split", self.split, task.splits)
        if not self.path and not self.repo_id:
            raise ValidationError(
                f"splits[{self.key}].path",
                None,
                f"task {self.task} names no dataset repo; give the split a path",
            )
        if self.seq_length % 2:
            raise ValidationError(
                f"splits[{self.task}].seq_length", self.seq_length, "must be even to centre-crop"
            )
        self.family.check_split(self)
        return self

    @property
    def family(self) -> TaskFamily:
        return get_family(self.definition.family)

    @property
    def mask_positions(self) -> tuple[int, ...]:
        """Masked positions in the uncropped sequence (0-based); () for a family that reads none."""
        return self.family.mask_positions(self)

    @property
    def source(self) -> str:
        """Where the data comes from, as it enters cache keys."""
        return self.path if self.path else f"hf-dataset:{self.repo_id}"

    @property
    def dataset_config(self) -> str:
        """The dataset repo's config holding this task."""
        return self.definition.dataset_config

    @property
    def key(self) -> str:
        return f"{self.task}/{self.split}"


def checked_strands(field: str, value: object) -> tuple[str, ...]:
    """A strands list: fwd and/or rc, each once, at least one.

    Raises:
        ValidationError / UnknownNameError: naming `field`.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ValidationError(field, value, "a list of strands: [fwd], [rc] or [fwd, rc]")
    for item in items:
        _one_of(field, Strand, item)
    if len(set(items)) != len(items):
        raise ValidationError(field, list(items), "each strand may appear once")
    return tuple(items)


class ComputeConfig(_Strict):
    device: str = Field(default="cpu", description="cpu, cuda or cuda:N")
    batch_size: int | Literal["auto"] = 8
    num_workers: int | None = Field(
        default=None, ge=1, description="Scoring workers; default from the cluster"
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"cpu|cuda(:\d+)?", v):
            raise ValidationError("compute.device", v, "expected cpu, cuda or cuda:N")
        return v

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValidationError("compute.batch_size", v, "must be >= 1 or 'auto'")
        return v

    @property
    def device_type(self) -> str:
        return self.device.split(":")[0]


class SamplingConfig(_Strict):
    rate: float | None = Field(default=None, gt=0, le=1)
    max_size: int | None = Field(default=None, ge=1)
    seed: int = 0


class MetricsConfig(_Strict):
    """How the metrics' 95% bootstrap intervals are drawn. Not part of any cell's identity: the
    scores do not depend on it (only the metrics task's cache key and the intervals file do)."""

    bootstrap: int = Field(
        default=1000, ge=0, description="Bootstrap resamples per cell for the 95% intervals; 0 = none"
    )
    seed: int = Field(default=0, description="Seed of the resampled example indices")


class AlertsConfig(_Strict):
    """When a newly scored cell counts as a regression (`plantcad.eval.regression`). Not part of
    any cell's identity or cache key: it only decides what is alerted."""

    min_drop: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Margin on the main metric (AUROC or accuracy): a regression is a drop whose whole "
        "95% paired-bootstrap interval lies below -min_drop. 0: any drop beyond the noise",
    )


class ExecutorConfig(_Strict):
    prefix: str = DEFAULT_PREFIX
    locks: Literal["file", "redis"] = Field(
        default="file",
        description="How concurrent runs on one prefix compute each step once: file (OS file locks, "
        "one host) or redis (several hosts; server from PLANTCAD_REDIS_URL)",
    )
    force_run_failed: bool = Field(
        default=True,
        description="Re-run cells whose last attempt failed; when false a failed cell is "
        "reported (the run ends Failed, naming it) and not retried",
    )


REPO_TYPES = ("dataset", "model")
# ORG/NAME as the hub spells it: letters, digits, `-`, `_`, `.`; no `--` or `..`; at most 96
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# what `path_in_repo` may name: the run, the config's plan hash, the run's one checkpoint step, and
# the sampling seed and cap (`results/step-{step}/leaderboard-seed{seed}-n{max_size}`)
PATH_PLACEHOLDERS = ("run", "plan", "step", "seed", "max_size")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_BLOCK_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
# keys that would put a token in the config: refused, and their value is never echoed
_TOKEN_KEYS = ("token", "hf_token", "api_key", "password", "secret")


def check_repo_id(field: str, value: object) -> str:
    """`ORG/NAME`, as the hub accepts it.

    Raises:
        ValidationError: naming `field` and the value.
    """
    text = value if isinstance(value, str) else ""
    if (
        not _REPO_ID.fullmatch(text)
        or "--" in text
        or ".." in text
        or len(text) > 96
        or text.endswith((".git", ".", "-"))
    ):
        raise ValidationError(field, value, "expected ORG/NAME (letters, digits, -, _, .)")
    return text


def check_repo_type(field: str, value: object) -> str:
    return str(_one_of(field, Literal["dataset", "model"], value))


def check_path_template(field: str, value: object) -> str:
    """A folder of the repo, relative, with only known `{placeholders}`.

    Raises:
        ValidationError: naming `field`, the template and what is wrong with it.
    """
    text = value if isinstance(value, str) else ""
    unknown = sorted({p for p in _PLACEHOLDER.findall(text) if p not in PATH_PLACEHOLDERS})
    if unknown:
        raise UnknownNameError(f"{field} placeholder", "{" + unknown[0] + "}", PATH_PLACEHOLDERS)
    filled = _PLACEHOLDER.sub("x", text)
    if "{" in filled or "}" in filled:
        raise ValidationError(field, value, "unbalanced { } in the template")
    if filled.startswith("/") or any(p in ("", ".", "..") for p in filled.rstrip("/").split("/")):
        raise ValidationError(field, value, "expected a relative folder such as results/step-{step}/{run}")
    return text.rstrip("/")


def check_block_name(field: str, value: str | None) -> str | None:
    """The name of a Prefect Secret block, or None.

    Raises:
        ValidationError: naming `field`, never echoing the value (a pasted token is not a name).
    """
    if value is not None and not _BLOCK_NAME.fullmatch(value):
        raise ValidationError(
            field, "<redacted>", "expected the name of a Prefect Secret block (lower case letters, digits, -)"
        )
    return value


class PublishConfig(_Strict):
    """Where a finished run's results go on the Hugging Face hub (`plantcad-flows publish` and the
    end of a run whose config has this section). Never part of a cell's identity, and never a
    token: the token comes from `HF_TOKEN` or the Prefect Secret block `token_secret` names,
    resolved by the publishing step at run time."""

    # a token pasted into a wrong field must not come back in pydantic's own message either
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    repo: str = Field(description="ORG/NAME of the hub repository")
    repo_type: Literal["dataset", "model"] = Field(default="dataset", description="dataset or model")
    path_in_repo: str = Field(
        default="runs/{run}",
        description="The run's folder in the repo; placeholders {run}, {plan}, {step}, {seed}, {max_size}",
    )
    private: bool = Field(default=False, description="Create the repository private (if it does not exist)")
    token_secret: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding the hub token, read when HF_TOKEN is not set",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_token(cls, data: object) -> object:
        if isinstance(data, dict):
            for key in data:
                name = str(key).lower()
                if name != "token_secret" and (name in _TOKEN_KEYS or "token" in name):
                    raise ValidationError(
                        f"publish.{key}",
                        "<redacted>",
                        "a config never holds a token (it is hashed, saved and shown in the UI)",
                        "set HF_TOKEN, or name a Prefect Secret block in publish.token_secret",
                    )
        return data

    @field_validator("repo")
    @classmethod
    def _repo(cls, v: str) -> str:
        return check_repo_id("publish.repo", v)

    @field_validator("repo_type", mode="before")
    @classmethod
    def _type(cls, v: object) -> object:
        return check_repo_type("publish.repo_type", v)

    @field_validator("path_in_repo")
    @classmethod
    def _path(cls, v: str) -> str:
        return check_path_template("publish.path_in_repo", v)

    @field_validator("token_secret")
    @classmethod
    def _block(cls, v: str | None) -> str | None:
        return check_block_name("publish.token_secret", v)


RAY_ADDRESS_FIELD = "ray.address"


@dataclass(frozen=True)
class Address:
    kind: Literal["local", "auto", "gcs", "client"]
    host: str | None = None
    port: int | None = None

    @property
    def text(self) -> str | None:
        """As `ray.init(address=...)` takes it."""
        if self.kind == "local":
            return None
        if self.kind == "auto":
            return "auto"
        prefix = "ray://" if self.kind == "client" else ""
        return f"{prefix}{self.host}:{self.port}"


def parse_address(address: str | None) -> Address:
    """Check the form of `ray.address`.

    Raises:
        ValidationError: anything but None, `auto`, `host:port` or `ray://host:port`.
    """
    if address is None or address == "":
        return Address("local")
    if address == "auto":
        return Address("auto")
    text = address.strip()
    kind: Literal["gcs", "client"] = "gcs"
    if text.startswith("ray://"):
        kind, text = "client", text[len("ray://") :]
    elif "://" in text:
        raise ValidationError(
            RAY_ADDRESS_FIELD, address, "unknown scheme", "expected auto, host:port or ray://host:port"
        )
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in text:
        raise ValidationError(RAY_ADDRESS_FIELD, address, "expected auto, host:port or ray://host:port")
    return Address(kind, host.strip("[]"), int(port))


class RayConfig(_Strict):
    enabled: bool = Field(default=True, description="Score through prefect-ray's RayTaskRunner")
    address: str | None = Field(default=None, description="auto, host:port or ray://host:port; none = local")
    num_shards: int | None = Field(default=None, ge=1, description="Shards per cell; default = workers")
    cpus_per_shard: float = Field(default=1.0, gt=0)
    ship_code: bool | None = Field(
        default=None,
        description="Upload this repo as the Ray job's working_dir; default: only for ray:// "
        "addresses. false when the code is baked into the cluster's image",
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        parse_address(v)
        return v or None


class CheckpointsConfig(_ScoringFields):
    """The checkpoints of one training run, discovered at plan time: every complete checkpoint
    (a `config.json` and its weights) whose name matches `pattern` becomes the model
    `{name}@step-{N}`, N parsed from the checkpoint's name. See `identity/checkpoints.py`."""

    _WHERE: ClassVar[str] = "checkpoints[]"

    path: str = Field(description="Run directory (local or s3://...) or hub repo id")
    name: str | None = Field(
        default=None, description="Models are named {name}@step-{N}; default: the path's last part"
    )
    pattern: str = Field(default="step-*", description="Glob on checkpoint names")
    match: Literal["folders", "branches", "tags"] = Field(
        default="folders", description="Hub repos: checkpoints are subfolders, branches or tags"
    )
    revision: str | None = Field(
        default=None, description="Hub subfolders: the branch or tag to list; default: the default branch"
    )
    every: int | None = Field(default=None, ge=1, description="Keep only steps that are multiples of K")
    last: int | None = Field(default=None, ge=1, description="Keep only the K latest complete checkpoints")

    def _where(self) -> str:
        return f"checkpoints[{self.label}]"

    @property
    def label(self) -> str:
        return self.name or self.path.rstrip("/").rsplit("/", 1)[-1]

    def model(self, step: int, path: str, subfolder: str = "", revision: str | None = None) -> ModelConfig:
        """The model of one discovered checkpoint."""
        return ModelConfig(
            path=path,
            subfolder=subfolder,
            revision=revision,
            name=f"{self.label}@step-{step}",
            step=step,
            type=self.type,
            context_length=self.context_length,
            trust_remote_code=self.trust_remote_code,
            motif_inference_mode=self.motif_inference_mode,
            implementation=self.implementation,
        )


class EvalConfig(_Strict):
    """Everything an evaluation needs. It is the zero-shot-eval flow's parameter."""

    task_files: list[str] = Field(
        default_factory=list,
        description="YAML task files whose tasks `splits:` may use beside the built-in PlantCAD2 set",
    )
    models: list[ModelConfig] = Field(default_factory=list)
    checkpoints: list[CheckpointsConfig] = Field(
        default_factory=list, description="Training runs whose checkpoints are discovered at plan time"
    )
    splits: list[SplitConfig] = Field(min_length=1)
    strands: tuple[Strand, ...] = Field(
        default=("fwd",),
        description="Strands each split is scored on: fwd (as given), rc (the reverse complement, "
        "read at the mirrored positions); a split's own `strands`, then its task's, win",
    )
    # `variants:` entries are read into `splits` (see `_variant_sets`); a dump holds them there
    compute: ComputeConfig = ComputeConfig()
    sampling: SamplingConfig = SamplingConfig()
    metrics: MetricsConfig = MetricsConfig()
    alerts: AlertsConfig = AlertsConfig()
    executor: ExecutorConfig = ExecutorConfig()
    ray: RayConfig = RayConfig()
    publish: PublishConfig | None = Field(
        default=None,
        description="Publish the run's results to the Hugging Face hub when it finishes; not part of any cache key",
    )
    force: bool = Field(default=False, description="Recompute every step, ignoring caches")
    only: str | None = Field(default=None, description="Regex; run only cells whose id matches")

    @field_validator("strands", mode="before")
    @classmethod
    def _strands(cls, v: object) -> object:
        return checked_strands("strands", v)

    def strands_of(self, split: SplitConfig) -> tuple[str, ...]:
        """The strands `split` is scored on: the most specific that says: the split entry, its
        task's definition, the config."""
        return split.strands or split.definition.strands or self.strands

    @model_validator(mode="before")
    @classmethod
    def _task_definitions(cls, data: object) -> object:
        """Splits of tasks from `task_files` get their definitions here, before they validate."""
        if not isinstance(data, dict) or not data.get("task_files"):
            return data
        tasks = task_registry(list(data["task_files"]))
        splits = [
            {**s, "definition": get_task(s["task"], "splits[].task", tasks)}
            if isinstance(s, dict) and isinstance(s.get("task"), str) and s.get("definition") is None
            else s
            for s in data.get("splits") or []
        ]
        return {**data, "splits": splits}

    @model_validator(mode="before")
    @classmethod
    def _variant_sets(cls, data: object) -> object:
        """Each `variants:` entry (a `VariantSetConfig`) becomes the one split of its own task of
        the variant_effect family: task = the set's name, split `variants`, path = its VCF/table."""
        if not isinstance(data, dict) or "variants" not in data:
            return data
        data = dict(data)
        entries = data.pop("variants") or []
        if not isinstance(entries, list):
            raise ValidationError(
                "variants", entries, "a list of variant sets (name, vcf or table, fasta, ...)"
            )
        splits = list(data.get("splits") or [])
        builtin = builtin_tasks()
        for i, raw in enumerate(entries):
            name = raw.get("name") if isinstance(raw, dict) else getattr(raw, "name", None)
            if not isinstance(name, str):
                raise ValidationError(f"variants[{i}].name", name, "each variant set needs a name")
            if name in builtin:
                raise ValidationError(f"variants[{name}].name", name, "is the name of a built-in task")
            source = (
                (raw.get("vcf") or raw.get("table"))
                if isinstance(raw, dict)
                else getattr(raw, "source", None)
            )
            definition = TaskDef(
                name=name, family="variant_effect", splits=(VARIANT_SPLIT,), source="variants:"
            )
            splits.append(
                {
                    "definition": definition,
                    "task": name,
                    "split": VARIANT_SPLIT,
                    "path": source,
                    "repo_id": None,
                    "variants": raw,
                }
            )
        return {**data, "splits": splits}

    @model_validator(mode="after")
    def _unique(self) -> EvalConfig:
        if not self.models and not self.checkpoints:
            raise ValidationError("models", [], "at least one model (or a checkpoints entry) is required")
        labels = [m.label for m in self.models]
        dup = {x for x in labels if labels.count(x) > 1}
        if dup:
            raise ValidationError("models[].name", sorted(dup)[0], "model names must be unique")
        runs = [c.label for c in self.checkpoints]
        dup = {x for x in runs if runs.count(x) > 1}
        if dup:
            raise ValidationError("checkpoints[].name", sorted(dup)[0], "checkpoint run names must be unique")
        keys = [s.key for s in self.splits]
        dup = {x for x in keys if keys.count(x) > 1}
        if dup:
            raise ValidationError("splits", sorted(dup)[0], "each task/split may appear once")
        if self.only is not None:
            try:
                re.compile(self.only)
            except re.error as e:
                raise ValidationError("only", self.only, f"invalid regex: {e}") from None
        entries = [(f"models[{m.label}]", m) for m in self.models]
        entries += [(f"checkpoints[{c.label}]", c) for c in self.checkpoints]
        for field, entry in entries:
            for context in entry.contexts:
                for s in self.splits:
                    s.family.check_model(field, entry.at_context(context), s)
        return self


def unsupported_reason(model: ModelConfig, split: SplitConfig, strand: str = "fwd") -> str | None:
    """Why the (model, split, strand) cell cannot be scored, else None."""
    return split.family.unsupported_reason(model.type) or split.family.strand_unsupported_reason(
        model.type, strand
    )


def load_config(path: str | Path, **overrides: object) -> EvalConfig:
    """Read a YAML config (PlantCAD pipeline format) and validate it; its relative paths are
    relative to the file.

    Raises:
        ValidationError / pydantic.ValidationError: naming the bad field.
    """
    text = Path(path).read_text()
    data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ValidationError("config", str(path), "top level must be a mapping")
    data.update({k: v for k, v in overrides.items() if v is not None})
    from plantcad_flows.config_paths import anchor_paths

    # every relative path in the file is relative to the file (`config_paths.py`)
    return EvalConfig.model_validate(anchor_paths(data, path))
