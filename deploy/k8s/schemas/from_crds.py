"""Turn CustomResourceDefinitions into strict JSON schemas, one file per kind and version.

    python deploy/k8s/schemas/from_crds.py CRD.yaml... > (writes <group>/<kind>_<version>.json)

A CRD's ``openAPIV3Schema`` is read by the API server as a *structural* schema that
prunes unknown fields; a typo in a manifest would vanish silently. Here every object
schema that lists its ``properties`` (and neither allows extra ones nor preserves
unknown fields) is closed with ``additionalProperties: false``, so a misspelt field is an
error, as ``kubeconform -strict`` makes it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent


def strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in closed
        and "additionalProperties" not in closed
        and not closed.get("x-kubernetes-preserve-unknown-fields")
    ):
        closed["additionalProperties"] = False
    return closed


def main(paths: list[str]) -> None:
    for path in paths:
        for crd in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group = crd["spec"]["group"]
            kind = crd["spec"]["names"]["kind"].lower()
            for version in crd["spec"]["versions"]:
                schema = strict(version["schema"]["openAPIV3Schema"])
                schema["$schema"] = "http://json-schema.org/draft-07/schema#"
                target = HERE / group / f"{kind}_{version['name']}.json"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(target.relative_to(HERE))


if __name__ == "__main__":
    main(sys.argv[1:])
