"""Names the operator, the stage pods, the campaign controller and the tests agree on: the API group and
kinds, and the labels and annotations on resources and their children (docs/contracts.md)."""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

GROUP = "quranft.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "QuranFineTune"
PLURAL = "quranfinetunes"
CAMPAIGN_KIND = "QuranFineTuneCampaign"
CAMPAIGN_PLURAL = "quranfinetunecampaigns"

# On every object the operator creates.
COMMON_LABELS: Mapping[str, str] = MappingProxyType({"app.kubernetes.io/name": "quran-finetune",
                                                     "app.kubernetes.io/managed-by": "quranft-operator"})

# --- labels of a run's children (ConfigMap, claim, Jobs, their pods) ----------------------------------------
LABEL_RUN = f"{GROUP}/run"
LABEL_STAGE = f"{GROUP}/stage"  # prepare | train | benchmark (and config, workspace, report, ...)
LABEL_GENERATION = f"{GROUP}/generation"
LABEL_DATA_HASH = f"{GROUP}/data-spec-hash"
# A multi-node training Job is re-created as a new attempt when the group restarts.
LABEL_ATTEMPT = f"{GROUP}/attempt"

# --- annotations ------------------------------------------------------------------------------------------
# Counted group failures before this attempt, on the attempt's Job itself, so the count survives an operator
# that dies between creating the Job and writing the status.
GROUP_FAILURES_ANNOTATION = f"{GROUP}/group-failures"
# Set by a user or the campaign controller on a run: the run ends Stopped; the value says why.
STOP_ANNOTATION = f"{GROUP}/stop-requested"
# Tests only (the operator's --allow-command-overrides): {"<stage>": [command...]} replaces a stage's command.
COMMAND_ANNOTATION = f"{GROUP}/stage-commands"

# --- campaigns --------------------------------------------------------------------------------------------
LABEL_CAMPAIGN = f"{GROUP}/campaign"
LABEL_VARIANT = f"{GROUP}/variant"
# Manual promotion: the variant to promote, set by a person (kubectl annotate qftc NAME quranft.io/promote=v3).
PROMOTE_ANNOTATION = f"{GROUP}/promote"
# Tests only: {"<variant>": {"<stage>": [command...]}}, merged over the campaign's own stage commands.
VARIANT_COMMANDS_ANNOTATION = f"{GROUP}/variant-stage-commands"
