"""The operator mounts spec.hubTokenSecretRef as a file and sets HF_TOKEN_PATH (no HF_TOKEN env var): the hub
libraries the trainer uses must find the token there. No network: only the token lookup is exercised."""
from __future__ import annotations

import os
import subprocess
import sys

LOOKUP = ("from huggingface_hub import get_token; import datasets, huggingface_hub; "
          "print(get_token() or '')")


def _token_seen(env: dict[str, str]) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    out = subprocess.run([sys.executable, "-c", LOOKUP], env={**clean, **env}, capture_output=True, text=True,
                         timeout=120, check=True)
    return out.stdout.strip()


def test_token_file_named_by_hf_token_path_is_used(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("hf_from_the_mounted_secret")
    assert _token_seen({"HF_TOKEN_PATH": str(token_file), "HF_HOME": str(tmp_path / "home")}) == \
        "hf_from_the_mounted_secret"


def test_without_the_file_there_is_no_token(tmp_path):
    assert _token_seen({"HF_TOKEN_PATH": str(tmp_path / "absent"), "HF_HOME": str(tmp_path / "home")}) == ""

