"""jobs/k8s/: the manifests are valid Kubernetes objects, and what their pods would run works.

Every manifest is checked against the Kubernetes OpenAPI schema bundled with kubernetes-validate.
Then each pod is played here: its env is built as the kubelet would (JOB_COMPLETION_INDEX=k,
$(VAR) expansion), its volumes become folders (ConfigMap and Secret keys become files, a PVC one
folder shared by every pod, subPathExpr a folder in it), and its command runs through the real
`batchgpt` CLI: with --dry-run for every index, and for real against the emulator, followed by
the merge Job's command.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from batchgpt.emulator import expected_answer, running_emulator
from batchgpt.providers.chatgpt_es import ChatGptEs

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "jobs" / "k8s"
#: The Kubernetes release whose schema the manifests must satisfy.
KUBERNETES = "1.33.0"
BATCHGPT = Path(sys.prefix) / "bin" / "batchgpt"
INDEX_ANNOTATION = "metadata.annotations['batch.kubernetes.io/job-completion-index']"


def load_manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.name, doc)
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8"))
        if doc
    ]


MANIFESTS = load_manifests()


def manifest(kind: str, name: str) -> dict[str, Any]:
    (found,) = [
        doc for _, doc in MANIFESTS if doc["kind"] == kind and doc["metadata"]["name"] == name
    ]
    return found


INDEXED = manifest("Job", "batchgpt")
MERGE = manifest("Job", "batchgpt-merge")
SHARDS: int = INDEXED["spec"]["completions"]


@pytest.mark.parametrize(
    "doc", [doc for _, doc in MANIFESTS], ids=[f"{f}:{d['kind']}" for f, d in MANIFESTS]
)
def test_manifest_is_valid_kubernetes(doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_every_file_in_jobs_k8s_is_a_manifest_or_the_readme() -> None:
    names = {path.name for path in K8S.iterdir()}
    assert names == {file for file, _ in MANIFESTS} | {"README.md"}


def test_indexed_job_runs_one_pod_per_shard_and_retries_each_alone() -> None:
    spec = INDEXED["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["completions"] == spec["parallelism"] == SHARDS > 1
    assert spec["backoffLimitPerIndex"] >= 1
    assert spec["podReplacementPolicy"] == "Failed"
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (container,) = pod["containers"]
    assert container["command"][:2] == ["batchgpt", "run"], "exec form, so SIGTERM reaches it"
    assert f"--shard-count={SHARDS}" in container["args"]
    rules = {
        rule["action"]: rule["onExitCodes"]["values"]
        for rule in spec["podFailurePolicy"]["rules"]
        if "onExitCodes" in rule
    }
    assert rules == {"FailJob": [2], "FailIndex": [1]}


def test_pods_use_the_configmap_secret_and_claim_defined_here() -> None:
    for job in (INDEXED, MERGE):
        for volume in job["spec"]["template"]["spec"]["volumes"]:
            if "configMap" in volume:
                manifest("ConfigMap", volume["configMap"]["name"])
            elif "secret" in volume:
                secret = manifest("Secret", volume["secret"]["secretName"])
                keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
                assert keys == {f"shard-{k}.txt" for k in range(SHARDS)}
            else:
                manifest("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])


# -- playing the pods here ------------------------------------------------------------------------


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes a $."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", replace, text)


class Cluster:
    """Volumes as folders under `root`; `blank_secrets` writes empty Secret files (no proxies)."""

    def __init__(self, root: Path, *, blank_secrets: bool = False) -> None:
        self.root = root
        self.blank_secrets = blank_secrets

    def volume(self, volume: dict[str, Any]) -> Path:
        if "configMap" in volume:
            source = manifest("ConfigMap", volume["configMap"]["name"])
            files = dict(source.get("data", {}))
            folder = self.root / f"configmap-{source['metadata']['name']}"
        elif "secret" in volume:
            source = manifest("Secret", volume["secret"]["secretName"])
            files = {k: base64.b64decode(v).decode() for k, v in source.get("data", {}).items()}
            files.update(source.get("stringData", {}))
            if self.blank_secrets:
                files = dict.fromkeys(files, "")
            folder = self.root / f"secret-{source['metadata']['name']}"
        else:
            folder = self.root / f"pvc-{volume['persistentVolumeClaim']['claimName']}"
            files = {}
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        return folder

    def pod(
        self, job: dict[str, Any], index: int | None = None
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and environment of `job`'s container for completion index `index`."""
        spec = job["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = {"JOB_COMPLETION_INDEX": str(index)} if index is not None else {}
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = expand(variable["value"], env)
            else:
                assert variable["valueFrom"]["fieldRef"]["fieldPath"] == INDEX_ANNOTATION
                env[variable["name"]] = str(index)
        volumes = {volume["name"]: self.volume(volume) for volume in spec["volumes"]}
        mounts = {}
        for mount in container["volumeMounts"]:
            folder = volumes[mount["name"]]
            sub = mount.get("subPath") or expand(mount.get("subPathExpr", ""), env)
            mounts[mount["mountPath"]] = folder / sub if sub else folder
            mounts[mount["mountPath"]].mkdir(parents=True, exist_ok=True)
        argv = [expand(word, env) for word in container["command"] + container.get("args", [])]
        for path in sorted(mounts, key=len, reverse=True):
            pattern = re.compile(rf"(?<![\w./-]){re.escape(path)}(?=/|$)")
            argv = [pattern.sub(str(mounts[path]), word) for word in argv]
        assert argv[0] == "batchgpt"
        return [str(BATCHGPT), *argv[1:]], env


def run_pod(argv: list[str], env: dict[str, str], **extra: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHGPT_")}
    return subprocess.run(
        argv, env={**clean, **env, **extra}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("index", range(SHARDS))
def test_each_index_runs_its_own_shard(tmp_path: Path, index: int) -> None:
    cluster = Cluster(tmp_path)
    argv, env = cluster.pod(INDEXED, index)
    done = run_pod([*argv, "--dry-run"], env)
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    assert resolved["shard"] == f"{index}/{SHARDS}"
    input_folder = tmp_path / "configmap-batchgpt-input"
    assert resolved["input"] == str(input_folder / "prompts.jsonl")
    shard_folder = tmp_path / "pvc-batchgpt-results" / f"shard-{index}"
    name = f"prompts.shard-{index}-of-{SHARDS}.results.jsonl"
    assert resolved["output"] == str(shard_folder / name)
    proxies = (tmp_path / "secret-batchgpt-proxies" / f"shard-{index}.txt").read_text()
    assert len(resolved["proxies"]) == len(proxies.split()) > 0
    assert "password" not in done.stdout
    grace = INDEXED["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= resolved["drain_timeout"] + 15, "time to drain, then commit"


def test_indexes_then_merge_job_answer_every_prompt_once(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, blank_secrets=True)
    prompts = manifest("ConfigMap", "batchgpt-input")["data"]["prompts.jsonl"].splitlines()
    expected = {}
    for line in prompts:
        record = json.loads(line)
        messages = record.get("messages") or [{"role": "user", "content": record["prompt"]}]
        expected[record["id"]] = expected_answer(ChatGptEs.format_message(messages))
    with running_emulator() as (_, url):
        for index in range(SHARDS):
            argv, env = cluster.pod(INDEXED, index)
            done = run_pod(argv, env, BATCHGPT_BASE_URL=url, BATCHGPT_RATE="0")
            assert done.returncode == 0, done.stderr
    argv, env = cluster.pod(MERGE)
    merged = run_pod(argv, env)
    assert merged.returncode == 0, merged.stderr
    results_path = tmp_path / "pvc-batchgpt-results" / "prompts.results.jsonl"
    results = [json.loads(line) for line in results_path.read_text().splitlines()]
    assert Counter(r["id"] for r in results) == Counter(list(expected))
    for result in results:
        assert result["response"] == expected[result["id"]]
