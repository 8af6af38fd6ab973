"""campaign_jobs: the report Job is built like the stage Jobs (pure)."""
from __future__ import annotations

import yaml
from campaignkit import campaign

from quranft.operator import builders, campaign_jobs
from quranft.operator.settings import OperatorSettings


def test_report_job_follows_the_stage_job_conventions():
    spec, meta = campaign()
    settings = OperatorSettings()
    job = campaign_jobs.report_job(spec, meta, "report", settings)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == "c-report" and job["metadata"]["ownerReferences"][0]["uid"] == "uid-c"
    assert job["spec"]["template"]["metadata"]["labels"]["quranft.io/campaign"] == "c"
    assert container["command"] == ["quranft", "benchmark", "campaign-report", "--input",
                                    "/etc/quranft-campaign/campaign.json", "--workspace", "/workspace"]
    assert container["securityContext"] == builders.RESTRICTED_CONTAINER_SECURITY
    assert pod["securityContext"] == builders.RESTRICTED_POD_SECURITY and pod["automountServiceAccountToken"] is False
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["ws"]
    assert container["image"] == settings.default_image(0)
    # Test-only command override, honoured only when the operator allows overrides.
    meta["annotations"] = {builders.COMMAND_ANNOTATION: '{"report": ["python", "-c", "pass"]}'}
    assert campaign_jobs.report_command(meta, settings)[0] == "quranft"
    allowed = OperatorSettings(allow_command_overrides=True)
    assert campaign_jobs.report_command(meta, allowed) == ["python", "-c", "pass"]
    doc = {"campaign": {"name": "c"}, "variants": []}
    cm = campaign_jobs.input_config_map(meta, "report", doc)
    assert cm["metadata"]["name"] == "c-report-input" and yaml.safe_load(cm["data"]["campaign.json"]) == doc


def test_a_gpu_template_lets_the_report_pod_reach_gpu_nodes_and_keeps_its_placement():
    spec, meta = campaign()
    template = dict(spec.template, resources={**spec.template["resources"], "gpus": 1,
                                              "nodeSelector": {"pool": "a100"}})
    spec = spec.model_copy(update={"template": template})
    pod = campaign_jobs.report_job(spec, meta, "promote", OperatorSettings())["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "a100"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]  # the report needs no GPU
