"""The mechanical gates, runnable anywhere: ``python -m gates --profile standard``.

As a library (what the runner's pipeline calls)::

    from gates import run_profile, check_diff, load_config, find_config, choose_profile
    results = run_profile(checkout, "standard", "origin/main", labels=["gates:strict"])
"""

from gates.checks import command_result, is_protected
from gates.choose import (
    PROFILE_LABEL_PREFIX,
    YOLO_LABEL,
    YOLO_MARKER,
    ProfileChoice,
    YoloDecision,
    choose_profile,
    decide_yolo,
)
from gates.diff import collect_diff, parse_unified_diff
from gates.model import Diff, FileDiff, GateResult, GatesError
from gates.profiles import (
    ALLOW_CI_CHANGES_LABEL,
    Command,
    GatesConfig,
    Profile,
    find_config,
    load_config,
    parse_config,
)
from gates.run import all_passed, check_diff, run_profile
from gates.secrets import SecretFinding, scan_diff

__all__ = [
    "ALLOW_CI_CHANGES_LABEL", "PROFILE_LABEL_PREFIX", "YOLO_LABEL", "YOLO_MARKER", "Command",
    "Diff", "FileDiff", "GateResult", "GatesConfig", "GatesError", "Profile", "ProfileChoice",
    "SecretFinding", "YoloDecision", "all_passed", "check_diff", "choose_profile",
    "collect_diff", "command_result", "decide_yolo", "find_config", "is_protected",
    "load_config", "parse_config", "parse_unified_diff", "run_profile", "scan_diff",
]
