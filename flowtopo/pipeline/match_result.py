"""What a ``flowtopo match`` job returns: typed, with one JSON form.

`MatchSummary` is what `flowtopo.pipeline.match.run_match` returns; its `MatchSummary.to_json`
is what ``--json`` prints and ``--json-out`` writes, and (without the pairs, each of which is in
its own run's ``pair.json``) what the match's parent run logs as ``scores.json``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Scores = dict[str, dict[str, float]]
"""method -> score name (r2, top1, ...) -> value, on the paired test rows."""


class RunRef(BaseModel):
    """A matched model: its MLflow run and its short name (FAMILY-sSEED-RUNID6)."""

    model_config = ConfigDict(extra="forbid")
    run_id: str
    name: str


class PairRow(BaseModel):
    """One ordered pair (source -> target): its child run, scores, map and fit check.

    A failed pair has ``error`` and scores only; a pair composed through a hub has
    ``composed_via`` and ``legs`` and no tree detail.
    """

    model_config = ConfigDict(extra="forbid")
    source: str = Field(description="Source run id.")
    target: str = Field(description="Target run id.")
    source_name: str
    target_name: str
    run_id: str = Field(description="The pair's own MLflow run.")
    scores: Scores = Field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    composed_via: str | None = None
    legs: list[str] | None = None
    matrix: list[list[float]] | None = Field(None, description="(d_t, d_s) linear part.")
    offset: list[float] | None = None
    node_pairs: list[list[int]] | None = None
    cost: float | None = None
    ambiguous: bool = False
    candidates: int | None = None
    transform: str | None = None
    fit_kl: float | None = None
    poor_fit: bool = False
    fit_reason: str | None = None
    round_trip: float | None = None
    select: str | None = None
    fit_check: dict[str, Any] | None = None
    source_tree: dict[str, Any] | None = None
    target_tree: dict[str, Any] | None = None
    picture: str | None = Field(None, description="Artifact path of the pair's picture.")

    @property
    def ok(self) -> bool:
        """The pair was aligned (or composed): it has a map."""
        return self.error is None


class CycleRow(BaseModel):
    """The cycle error of one ordered triple of models (relative to the latents' variance)."""

    model_config = ConfigDict(extra="forbid")
    cycle: list[str]
    error: float


class MatchSummary(BaseModel):
    """A match job: the runs, every pair, the score matrix, the cycles and the warnings."""

    model_config = ConfigDict(extra="forbid")
    match_id: str
    parent_run_id: str
    method: str
    transform: str
    dataset: dict[str, Any]
    runs: list[RunRef]
    r2_matrix: list[list[float | None]] = Field(description="[source][target] R² of the "
                                                "method; None on the diagonal and for failures.")
    mean_r2: dict[str, float] = Field(description="Method -> mean R² over the pairs.")
    pairs: list[PairRow]
    cycles: list[CycleRow]
    failed_pairs: int
    poor_fit_pairs: int
    warnings: list[str]
    strategy: str = "all-pairs"
    alignments: int = 0
    hub: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form (plain types; unset optional fields of the pairs left out)."""
        out = self.model_dump(mode="python", exclude={"pairs"})
        out["pairs"] = [p.model_dump(mode="python", exclude_none=True) for p in self.pairs]
        return out
