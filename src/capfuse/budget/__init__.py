"""Runs under a time budget (``make all TIME_LIMIT=60m``, ``capfuse all --time-limit 60m``).

A short probe measures what this machine pays for the passes a config needs (``probe``); the
planner keeps the models that fit, in the config's order, with fewer epochs where that makes one
fit, and the train stage follows the plan, re-checks it against the clock before each model and
stops a model cleanly, or drops it whole, when it would overrun (``guard``); each finished model
teaches the predictions of the later ones (``lessons``); the plan, with what was dropped
and why, is written to ``runs/<dataset>/plan.json`` (``plan``), and ``--plan FILE`` replays it
without the clock, byte for byte.
"""

from capfuse.budget.duration import parse_duration
from capfuse.budget.guard import Budget
from capfuse.budget.plan import PLAN_FILE, ModelPlan, Plan

__all__ = ["PLAN_FILE", "Budget", "ModelPlan", "Plan", "parse_duration"]
