"""Per-cell resources: the typed fields, the order in which layers override them, and the job
variables they become on each kind of work pool.

Precedence, lowest to highest (each layer overrides only the fields it sets):

1. built-in defaults: `gpu_count: 0`, `cpu: "4"`, `memory: 32Gi`, `ephemeral_storage: 50Gi`; every
   other field is unset, so the deployment's or the pool's own value applies;
2. the spec's root `resources:` section;
3. the dataset entry;
4. the model entry;
5. a hyper-parameter named like a resource field, with or without the leading `_`
   (`_gpu_count: [1, 2]` sweeps the GPU count and keeps it out of the cell name).

Two fields are maps and merge key by key instead of being replaced: `env` and `pvc_mounts`.
`gpu_allow` and `gpu_deny` are one rule (the template's `gpu_products` with operator In or NotIn):
a layer that sets either replaces the rule of the layers below it. Lists (`tolerations`,
`hostname_deny`) are replaced whole.

Every layer goes through the same pydantic types, so a wrong unit or a hyper-parameter of the
wrong type is a one-line `ValidationError` naming the field and the value, never a `TypeError`.
Memory and disk need a Kubernetes unit (`16Gi`, `512Mi`): a bare number would mean bytes.

`kubernetes_job_variables` maps merged resources onto the variable names of the kubernetes pool's
base job template (infra/kubernetes/base-job-template.json). A cell's `pvc_mounts` replace the
deployment's `volumes` and `volume_mounts` (job variables override whole), so a cell lists every
claim it needs. On a process pool (`process_job_variables`) only the GPU count and `env` apply:
the count becomes CUDA_VISIBLE_DEVICES (the first N devices; `""` for none) unless `env` pins
CUDA_VISIBLE_DEVICES itself; CPU, memory and the rest are not enforced by a process worker.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from plantcad_flows.errors import FieldProblem, ValidationError, problems
from plantcad_flows.secrets import MASK, SECRET_NAME

_CPU = re.compile(r"^(?:\d+(?:\.\d+)?|\.\d+|\d+m)$")
_BYTES = re.compile(r"^\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def as_validation_error(exc: pydantic.ValidationError, prefix: str = "") -> ValidationError:
    """One line naming the field and value for the first problem pydantic found."""
    found = [p for _, p in problems(exc, prefix)]
    first = found[0]
    if isinstance((exc.errors()[0].get("ctx") or {}).get("error"), ValidationError) or len(found) == 1:
        return first  # raised with an absolute field name already, or the only problem
    more = f"{len(found) - 1} more problem(s) after this one"
    return ValidationError(
        first.field, first.value, first.problem, "; ".join(h for h in (first.hint, more) if h)
    )


class StrictModel(BaseModel):
    """Frozen, and an unknown key is an error that names it and suggests the closest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            valid = sorted(cls.model_fields)
            for key in data:
                if key not in cls.model_fields:
                    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
                    hint = (f"did you mean {close[0]!r}? " if close else "") + "valid: " + ", ".join(valid)
                    raise FieldProblem(data[key], "unknown key", hint, key=str(key))
        return data


def _cpu(v: Any) -> str:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise FieldProblem(v, "not a CPU quantity", "use cores like 4 or 0.5, or millicores like 500m")
    text = str(v).strip()
    if not _CPU.match(text) or float(text.rstrip("m") or 0) <= 0:
        raise FieldProblem(v, "not a CPU quantity", "use cores like 4 or 0.5, or millicores like 500m")
    return text


def _bytes(v: Any) -> str:
    if isinstance(v, str) and _BYTES.match(v.strip()):
        return v.strip()
    if isinstance(v, int | float) and not isinstance(v, bool):
        raise FieldProblem(v, "a bare number is bytes to Kubernetes", "add a unit, e.g. 16Gi or 512Mi")
    raise FieldProblem(v, "not a Kubernetes quantity with a unit", "use e.g. 16Gi, 512Mi or 100G")


def _label_values(v: Any) -> list[str]:
    items = [s.strip() for s in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, list) or not items:
        raise FieldProblem(v, "must be a non-empty list of node label values")
    for item in items:
        if not isinstance(item, str) or not _LABEL_VALUE.match(item):
            raise FieldProblem(item, "not a valid node label value", "letters, digits, - _ . up to 63")
    return items


def _env(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping):
        raise FieldProblem(v, "must be a mapping of NAME: value")
    out = {}
    for name, value in v.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise FieldProblem(name, "not a valid environment variable name", key=str(name))
        if isinstance(value, Mapping | list) or value is None:
            raise FieldProblem(value, "must be a string or a number", key=name)
        if SECRET_NAME.search(name):
            raise FieldProblem(
                MASK, "looks like a secret", "keep secrets in .env, never in a grid spec", key=name
            )
        out[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


def _pvc_mounts(v: Any) -> dict[str, str]:
    if not isinstance(v, Mapping):
        raise FieldProblem(v, "must be a mapping of claim-name: /mount/path")
    for claim, path in v.items():
        if not isinstance(claim, str) or not _DNS_LABEL.match(claim):
            raise FieldProblem(claim, "not a valid claim name", "lower case, digits and -", key=str(claim))
        if not isinstance(path, str) or not path.startswith("/"):
            raise FieldProblem(path, "mount path must be absolute", key=claim)
    paths = list(v.values())
    for path in paths:
        if paths.count(path) > 1:
            raise FieldProblem(path, "two claims are mounted at the same path")
    return dict(v)


def _tolerations(v: Any) -> Any:
    # A bare key is the old toolbox's shorthand: tolerate that NoSchedule taint. A string (as a
    # hyper-parameter gives) is a comma-separated list of such keys.
    if isinstance(v, str):
        v = [s.strip() for s in v.split(",") if s.strip()]
    if isinstance(v, list):
        return [
            {"key": t, "operator": "Exists", "effect": "NoSchedule"} if isinstance(t, str) else t for t in v
        ]
    return v


def _name(pattern: re.Pattern, what: str):
    def check(v: Any) -> str:
        if not isinstance(v, str) or not pattern.match(v):
            raise FieldProblem(v, f"not a valid {what}")
        return v

    return check


Cpu = Annotated[str, BeforeValidator(_cpu)]
Bytes = Annotated[str, BeforeValidator(_bytes)]
LabelValues = Annotated[list[str], BeforeValidator(_label_values)]
Env = Annotated[dict[str, str], BeforeValidator(_env)]
PvcMounts = Annotated[dict[str, str], BeforeValidator(_pvc_mounts)]
Image = Annotated[str, BeforeValidator(_name(re.compile(r"^\S+$"), "image reference"))]
ServiceAccount = Annotated[str, BeforeValidator(_name(_DNS_SUBDOMAIN, "service account name"))]


class Toleration(StrictModel):
    """A Kubernetes Toleration, spelled as in a pod spec; a bare string is a NoSchedule key."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    tolerationSeconds: int | None = Field(default=None, ge=0)  # Kubernetes spelling

    @model_validator(mode="after")
    def _consistent(self) -> Toleration:
        if self.operator == "Exists" and self.value is not None:
            raise FieldProblem(self.value, "must be empty when operator is Exists", key="value")
        if self.operator == "Equal" and not self.key:
            raise FieldProblem(self.key, "operator Equal needs a key", key="key")
        return self


class ResourceLayer(StrictModel):
    """One layer of the chain: every field optional; unset (or null) leaves the lower layer's."""

    gpu_count: int | None = Field(default=None, ge=0, description="GPUs (nvidia.com/gpu)")
    cpu: Cpu | None = Field(default=None, description="cores (4, 0.5) or millicores (500m)")
    memory: Bytes | None = Field(default=None, description="e.g. 32Gi")
    ephemeral_storage: Bytes | None = Field(default=None, description="local disk, e.g. 50Gi")
    image: Image | None = Field(default=None, description="container image (kubernetes)")
    gpu_allow: LabelValues | None = Field(default=None, description="only these GPU products")
    gpu_deny: LabelValues | None = Field(default=None, description="never these GPU products")
    hostname_deny: LabelValues | None = Field(default=None, description="never these nodes")
    tolerations: Annotated[list[Toleration], BeforeValidator(_tolerations)] | None = None
    pvc_mounts: PvcMounts | None = Field(default=None, description="claim-name: /mount/path")
    env: Env | None = Field(default=None, description="environment of the cell's process")
    service_account: ServiceAccount | None = None

    @model_validator(mode="after")
    def _one_gpu_rule(self) -> ResourceLayer:
        if self.gpu_allow is not None and self.gpu_deny is not None:
            raise FieldProblem(self.gpu_deny, "set gpu_allow or gpu_deny, not both", key="gpu_deny")
        return self


RESOURCE_FIELDS: tuple[str, ...] = tuple(ResourceLayer.model_fields)
_MAP_FIELDS = ("env", "pvc_mounts")
_GPU_RULE = ("gpu_allow", "gpu_deny")


class Resources(ResourceLayer):
    """A cell's merged resources: the defaults are concrete, the rest stays optional."""

    gpu_count: int = Field(default=0, ge=0)
    cpu: Cpu = "4"
    memory: Bytes = "32Gi"
    ephemeral_storage: Bytes = "50Gi"
    pvc_mounts: PvcMounts = {}
    env: Env = {}

    def summary(self) -> str:
        """A short line for a plan: `gpu=1 cpu=4 mem=32Gi disk=50Gi ...`."""
        parts = [
            f"gpu={self.gpu_count}",
            f"cpu={self.cpu}",
            f"mem={self.memory}",
            f"disk={self.ephemeral_storage}",
        ]
        if self.gpu_allow:
            parts.append("gpu-in=" + ",".join(self.gpu_allow))
        if self.gpu_deny:
            parts.append("gpu-not-in=" + ",".join(self.gpu_deny))
        if self.image:
            parts.append(f"image={self.image}")
        return " ".join(parts)


DEFAULTS = Resources()


def merge_resources(*layers: ResourceLayer) -> Resources:
    """Merge layers, lowest first, over the built-in defaults (see the module docstring)."""
    merged: dict[str, Any] = {name: getattr(DEFAULTS, name) for name in RESOURCE_FIELDS}
    for layer in layers:
        for name in RESOURCE_FIELDS:
            value = getattr(layer, name)
            if value is None:
                continue
            if name in _MAP_FIELDS:
                merged[name] = {**merged[name], **value}
            elif name in _GPU_RULE:
                merged.update(gpu_allow=None, gpu_deny=None)
                merged[name] = value
            else:
                merged[name] = value
    try:
        return Resources.model_validate(merged)
    except pydantic.ValidationError as e:  # e.g. two claims merged onto one mount path
        raise as_validation_error(e) from None


def hparam_layer(values: Mapping[str, Any], origins: Mapping[str, str], cell: str) -> ResourceLayer:
    """The layer made of a cell's hyper-parameters named like resource fields (`_gpu_count`).

    Args:
        values: the cell's hyper-parameters, names as written (with their `_`).
        origins: for each name, where it was declared (`models.big.hparam`), for error messages.
        cell: the cell's name, for error messages.

    Raises:
        ValidationError: naming the hyper-parameter, its value and the cell.
    """
    picked: dict[str, Any] = {}
    for name, value in values.items():
        field = name[1:] if name.startswith("_") else name
        if field not in RESOURCE_FIELDS:
            continue
        try:
            ResourceLayer.model_validate({field: value})
        except pydantic.ValidationError as e:
            first = problems(e)[0][1]
            problem, hint = first.problem, first.hint
            hint = f"{hint}; cell {cell}" if hint else f"cell {cell}"
            raise ValidationError(f"{origins.get(name, 'hparam')}.{name}", value, problem, hint) from None
        picked[field] = value
    try:
        return ResourceLayer.model_validate(picked)
    except pydantic.ValidationError as e:
        raise as_validation_error(e, prefix="hparam") from None


# Job-variable names of infra/kubernetes/base-job-template.json that resources can set.
KUBERNETES_VARIABLES = (
    "gpu_count",
    "cpu",
    "memory",
    "ephemeral_storage",
    "image",
    "gpu_products",
    "gpu_product_operator",
    "hostname_deny",
    "tolerations",
    "volumes",
    "volume_mounts",
    "env",
    "service_account",
)


def kubernetes_job_variables(res: Resources) -> dict[str, Any]:
    """Job variables for the kubernetes pool; unset fields are left to the deployment and pool."""
    jv: dict[str, Any] = {
        "gpu_count": res.gpu_count,
        "cpu": res.cpu,
        "memory": res.memory,
        "ephemeral_storage": res.ephemeral_storage,
    }
    if res.image:
        jv["image"] = res.image
    if res.gpu_allow:
        jv.update(gpu_products=list(res.gpu_allow), gpu_product_operator="In")
    elif res.gpu_deny:
        jv.update(gpu_products=list(res.gpu_deny), gpu_product_operator="NotIn")
    if res.hostname_deny:
        jv["hostname_deny"] = list(res.hostname_deny)
    if res.tolerations is not None:
        jv["tolerations"] = [t.model_dump(exclude_none=True) for t in res.tolerations]
    if res.pvc_mounts:
        jv["volumes"] = [{"name": c, "persistentVolumeClaim": {"claimName": c}} for c in res.pvc_mounts]
        jv["volume_mounts"] = [{"name": c, "mountPath": p} for c, p in res.pvc_mounts.items()]
    if res.env:
        jv["env"] = dict(res.env)
    if res.service_account:
        jv["service_account"] = res.service_account
    return jv


def process_job_variables(res: Resources) -> dict[str, Any]:
    """Job variables for a process pool: the GPUs the cell may see, and its environment."""
    env = {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(res.gpu_count))}
    env.update(res.env)  # an explicit CUDA_VISIBLE_DEVICES pins the devices
    return {"env": env}
