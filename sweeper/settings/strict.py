"""The one base of every typed record sweeper validates: the study file's sections, the
search space, pruners and samplers, and the confirmation's records."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """Unknown keys are errors (a typo is never ignored) and a value never changes once
    validated. A field's docstring is its description: the study-file reference is generated
    from them (sweeper.settings.reference), so it cannot drift from the code."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
