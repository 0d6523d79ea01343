"""The schema of `tasks/<name>/task.yaml`: pydantic models, validated strictly.

Loading (files, regions from the template's markers, the description) is in
`task.py`; this module only says what a valid spec looks like.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, field_validator, model_validator

from lossgym.env.limits import LimitsSpec, PreflightSpec

TASK_FILE = "task.yaml"
PACKAGE_PREFIX = "package:"
_NAME = r"^[a-z0-9][a-z0-9_.-]*$"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _scalar(value: Any) -> bool | int | float | str:
    if isinstance(value, bool | int | float | str):
        return value
    raise ValueError(f"must be a number, string or boolean, got {type(value).__name__}")


Scalar = Annotated[bool | int | float | str, PlainValidator(_scalar)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _task_relative(value: str) -> str:
    """A path inside the task directory: relative, '/'-separated, no '..'."""
    parts = PurePosixPath(value).parts
    if not value or value.startswith("/") or "\\" in value or ".." in parts:
        raise ValueError(f"must be a relative path inside the task directory, got {value!r}")
    return value


class WorkspaceFileSpec(_Strict):
    path: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")]
    source: str
    # Names of the regions agents may edit; each lies between marker lines in
    # the file (`lossgym/env/markers.py`), which give its line numbers.
    editable: list[Annotated[str, Field(pattern=_IDENT)]] = []

    @field_validator("path")
    @classmethod
    def _no_dots(cls, value: str) -> str:
        if any(p in (".", "..") for p in value.split("/")):
            raise ValueError("must not contain '.' or '..' components")
        return value

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith(PACKAGE_PREFIX):
            package, _, name = value[len(PACKAGE_PREFIX) :].partition("/")
            if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_]\w*)*", package) or not name:
                raise ValueError("must look like 'package:<dotted.package>/<file>'")
            return value
        return _task_relative(value)

    @field_validator("editable", mode="before")
    @classmethod
    def _names_only(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(item, dict) for item in value):
            raise ValueError(
                "list the regions by name only, e.g. [compute_loss]; their line numbers come "
                "from the BEGIN/END EDITABLE REGION marker lines in the file"
            )
        return value

    @field_validator("editable")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        repeated = sorted({n for n in value if value.count(n) > 1})
        if repeated:
            raise ValueError(
                f"editable region names must be unique ({', '.join(repeated)} repeats)"
            )
        return value


class Budget(_Strict):
    tests: Annotated[int, Field(ge=1)] = 3
    steps: Annotated[int, Field(ge=1)] = 50


class PrimaryMetric(_Strict):
    name: Annotated[str, Field(pattern=_IDENT)]
    direction: Literal["minimize", "maximize"]


class ModelSpec(_Strict):
    n_layer: Annotated[int, Field(gt=0)]
    n_head: Annotated[int, Field(gt=0)]
    n_embd: Annotated[int, Field(gt=0)]
    block_size: Annotated[int, Field(gt=0)]
    vocab_size: Annotated[int, Field(gt=0)]
    bias: bool

    @model_validator(mode="after")
    def _heads(self) -> ModelSpec:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self


EvalSetName = Literal["wikitext2", "lambada", "arc_easy", "hellaswag", "piqa", "winogrande"]
_TRAIN_ONLY = ("dataset", "model", "val_tokens")


class StageSpec(_Strict):
    label: Annotated[str, Field(pattern=_NAME)]
    kind: Literal["train", "lm-eval"]
    nproc: Annotated[int, Field(ge=1)] = 1
    gpus: Annotated[int, Field(ge=0)] = 0
    time_limit_s: Annotated[float, Field(gt=0)]
    limits: LimitsSpec
    dataset: Annotated[str, Field(pattern=_NAME)] | None = None
    config: dict[Annotated[str, Field(pattern=_IDENT)], Scalar] = {}
    model: ModelSpec | None = None
    val_tokens: Annotated[int, Field(gt=0)] | None = None
    # lm-eval stages only: which sets to score (default: all present) and how many of each.
    evals: Annotated[list[EvalSetName], Field(min_length=1)] | None = None
    limit: Annotated[int, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _train_needs(self) -> StageSpec:
        if self.kind == "train":
            missing = [k for k in _TRAIN_ONLY if getattr(self, k) is None]
            if missing:
                raise ValueError(f"a train stage needs {', '.join(missing)}")
            extra = [k for k in ("evals", "limit") if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"{', '.join(extra)}: only an lm-eval stage takes this")
        if self.model is not None:
            repeated = sorted(set(self.config) & set(ModelSpec.model_fields))
            if repeated:
                raise ValueError(
                    f"config repeats model fields ({', '.join(repeated)}); set them under "
                    "model only, which both the training run and the evaluator use"
                )
        return self

    def train_config(self) -> dict[str, Scalar]:
        """The training script's knobs: the model's shape, then the stage's config."""
        shape = self.model.model_dump() if self.model is not None else {}
        return {**shape, **self.config}


class ProfileSpec(_Strict):
    description: str
    devices: Literal["cpu", "cuda"]
    stages: Annotated[list[StageSpec], Field(min_length=1)]

    @model_validator(mode="after")
    def _stages(self) -> ProfileSpec:
        labels = [s.label for s in self.stages]
        if len(set(labels)) != len(labels):
            raise ValueError(f"stage labels must be unique, got {labels}")
        if self.stages[0].kind != "train":
            raise ValueError("the first stage must be a train stage")
        for s in self.stages:
            extra = [k for k in (*_TRAIN_ONLY, "config") if s.kind == "lm-eval" and getattr(s, k)]
            if extra:
                raise ValueError(
                    f"stage {s.label}: {', '.join(extra)}: an lm-eval stage takes none (it "
                    "evaluates the preceding train stage's checkpoint with that stage's model)"
                )
            if self.devices == "cpu" and s.gpus:
                raise ValueError(f"stage {s.label}: a cpu profile cannot use gpus")
            if self.devices == "cuda" and s.gpus < 1:
                raise ValueError(f"stage {s.label}: a cuda profile needs gpus >= 1")
        return self

    @property
    def train_stage(self) -> StageSpec:
        return self.stages[0]


class TaskSpec(_Strict):
    name: Annotated[str, Field(pattern=_NAME)]
    title: str
    description: str
    workspace: Annotated[list[WorkspaceFileSpec], Field(min_length=1)]
    budget: Budget = Budget()
    preflight: PreflightSpec = PreflightSpec()
    seeds: Annotated[list[int], Field(min_length=1)]
    hidden_metrics: list[str] = []
    primary_metric: PrimaryMetric
    baselines: dict[Annotated[str, Field(pattern=_IDENT)], str]
    default_profile: str
    profiles: Annotated[
        dict[Annotated[str, Field(pattern=_NAME)], ProfileSpec], Field(min_length=1)
    ]

    @field_validator("description")
    @classmethod
    def _description(cls, value: str) -> str:
        return _task_relative(value)

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, value: dict[str, str]) -> dict[str, str]:
        if "cross_entropy" not in value:
            raise ValueError("must include cross_entropy (the unmodified template)")
        return {k: _task_relative(v) for k, v in value.items()}

    @model_validator(mode="after")
    def _cross_checks(self) -> TaskSpec:
        if self.default_profile not in self.profiles:
            raise ValueError(
                f"default_profile {self.default_profile!r} is not one of the profiles "
                f"({', '.join(self.profiles)})"
            )
        paths = [f.path for f in self.workspace]
        if len(set(paths)) != len(paths):
            raise ValueError("workspace file paths must be unique")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        return self
