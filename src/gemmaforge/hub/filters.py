"""The hub's search filters: one definition for the server, the client and `hub search`.

`Filters` names every filter, its limits and its help text. The server reads it from the
query string (FastAPI's query-parameter model: `/api/adapters` and the search page), the
client sends `query_params()`, and `gemmaforge hub search` has one option per field (the CLI
builds them from `Filters.model_fields`), so a new filter is added here once.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator

from gemmaforge.errors import UserError, problem

SORTS = ("relevance", "pulls", "rating", "recent")
METRIC = re.compile(r"^\s*([A-Za-z0-9_.\-]{1,64})\s*(>=|<=|>|<|=)\s*(-?[0-9]*\.?[0-9]+)\s*$")
"""`NAME OP NUMBER`, e.g. `exact_match>=0.9`."""
FACETS = ("domain", "family", "licence", "base", "rank")
"""Filters whose values the search page counts (facets)."""

Short = Annotated[str, Field(max_length=20)]
MetricText = Annotated[str, Field(max_length=100)]


class Filters(BaseModel):
    """What a search asks for; every field is optional and all given ones must hold."""

    q: str | None = Field(None, max_length=200, description="Words in name, card or tags.")
    base: str | None = Field(None, max_length=401, description="Base id, or ID@REVISION.")
    revision: str | None = Field(None, max_length=200, description="Base revision.")
    family: str | None = Field(None, max_length=64, description="Model family (gemma4, ...).")
    modality: list[Short] = Field(
        [], max_length=3, description="text, vision or audio (repeatable; all must hold)."
    )
    domain: str | None = Field(None, max_length=100, description="Domain tag.")
    licence: str | None = Field(None, max_length=100, description="Licence (any case).")
    rank: int | None = Field(None, ge=1, le=4096, description="LoRA rank r.")
    signer: str | None = Field(
        None, max_length=128, description="Signing namespace or key fingerprint prefix."
    )
    namespace: str | None = Field(None, max_length=64, description="Publishing namespace.")
    metric: list[MetricText] = Field(
        [],
        max_length=10,
        description="Eval threshold, e.g. 'exact_match>=0.9' (also <=, >, <, =; repeatable).",
    )
    fits: str | None = Field(
        None, max_length=401, description="ID@REVISION of a registered base it must fit."
    )
    sort: str = Field(
        "relevance", pattern="^(" + "|".join(SORTS) + ")$", description=", ".join(SORTS) + "."
    )

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_unset(cls, value, info: ValidationInfo):
        """An empty form field means "any": "" or None is the field's default (None, no
        items, or relevance), and empty list items go."""
        if isinstance(value, list):
            return [v for v in value if not (isinstance(v, str) and not v.strip())]
        if value is None or (isinstance(value, str) and not value.strip()):
            return cls.model_fields[info.field_name].get_default()
        return value

    @field_validator("metric")
    @classmethod
    def _metric_syntax(cls, value: list[str]) -> list[str]:
        bad = [m for m in value if not METRIC.match(m)]
        if bad:
            shown = ", ".join(repr(m) for m in bad)
            raise ValueError(f"metric filter {shown} is not NAME OP NUMBER (e.g. exact_match>=0.9)")
        return value

    @classmethod
    def parse(cls, **values) -> Filters:
        """`Filters(**values)`, or a UserError naming every field that is not valid."""
        try:
            return cls(**values)
        except ValidationError as error:
            raise UserError(
                [
                    problem(f"search filter {'.'.join(str(p) for p in e['loc'])}", e["msg"])
                    for e in error.errors()
                ]
            ) from None

    def query_params(self) -> dict:
        """The query string the server reads back into the same Filters."""
        return self.model_dump(exclude_defaults=True)

    def without(self, name: str) -> Filters:
        """These filters less one (a facet is counted with all the other filters)."""
        return self.model_copy(update={name: type(self).model_fields[name].get_default()})
