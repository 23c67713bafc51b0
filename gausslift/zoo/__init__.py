"""``gausslift zoo``: the small models that ``lift`` needs for mice (a GS-LRM and a multi-view diffusion
model), trained with the measured recipes in one resumable run with a budget, then checked by ``lift`` on
a held-out synthetic mouse. Modules: :mod:`~gausslift.zoo.pipeline` (the stages, the plan, resume),
:mod:`~gausslift.zoo.check` (the unseen-view IoU against the truth)."""

from gausslift.zoo.pipeline import STAGES, ZooOptions, format_plan, lift_command, plan, zoo

__all__ = ["STAGES", "ZooOptions", "format_plan", "lift_command", "plan", "zoo"]
