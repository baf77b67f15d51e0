#!/usr/bin/env python3
"""Render xtask/lab/litellm/config.yaml (a template) into a LiteLLM config.

    python3 render_config.py --ingress-base https://ingress.lab:8443/v1 \
        --upstream-keys K1,K2,K3 --ca-file /path/lab-ca.pem --out /run/lab/litellm/config.yaml

Substitutes {INGRESS_BASE}, {CA_FILE} and {MASTER_KEY} (random unless
--master-key); for {UPSTREAM_KEYS} repeats the block
between the "# >>> per upstream key" and "# <<< per upstream key" lines once
per key ({UPSTREAM_KEY}, {KEY_INDEX}), and copies custom_auth.py next to the
output (LiteLLM loads custom_auth from the config file's directory).
Stdlib only.
"""

from __future__ import annotations

import argparse
import json
import secrets
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
BEGIN = "# >>> per upstream key"
END = "# <<< per upstream key"


def yaml_str(s: str) -> str:
    """Content for a double-quoted YAML scalar (JSON escaping is valid YAML)."""
    return json.dumps(s)[1:-1]


def render(template: str, ingress_base: str, keys: list[str], ca_file: str, master_key: str) -> str:
    lines = template.splitlines(keepends=True)
    try:
        b = next(i for i, ln in enumerate(lines) if ln.strip() == BEGIN)
        e = next(i for i, ln in enumerate(lines) if ln.strip() == END and i > b)
    except StopIteration:
        raise ValueError("template lacks the per-upstream-key block markers") from None
    block = "".join(lines[b + 1 : e])
    deployments = "".join(
        block.replace("{UPSTREAM_KEY}", yaml_str(k)).replace("{KEY_INDEX}", str(i)) for i, k in enumerate(keys))
    # drop the template's leading comment block (it documents the placeholders)
    h = 0
    while h < b and (lines[h].startswith("#") or not lines[h].strip()):
        h += 1
    head = "# rendered by xtask/lab/litellm/render_config.py from config.yaml; do not edit\n"
    out = head + "".join(lines[h:b]) + deployments + "".join(lines[e + 1 :])
    return (out.replace("{INGRESS_BASE}", yaml_str(ingress_base)).replace("{CA_FILE}", yaml_str(ca_file))
               .replace("{MASTER_KEY}", yaml_str(master_key)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--template", default=os.path.join(HERE, "config.yaml"))
    p.add_argument("--ingress-base", required=True, help="upstream base URL including /v1")
    p.add_argument("--upstream-keys", required=True, help="comma-separated upstream keys")
    p.add_argument("--ca-file", required=True, help="lab CA PEM (must exist)")
    p.add_argument("--out", required=True, help="output config path")
    p.add_argument("--master-key", help="LiteLLM admin key (default: a random sk-<64 hex>)")
    a = p.parse_args(argv)
    keys = [k.strip() for k in a.upstream_keys.split(",") if k.strip()]
    if not keys:
        p.error("--upstream-keys: at least one key")
    if not a.ingress_base.startswith(("http://", "https://")):
        p.error("--ingress-base must be an http(s) URL")
    if not os.path.isfile(a.ca_file):
        p.error(f"--ca-file: no such file: {a.ca_file}")
    with open(a.template, encoding="utf-8") as fh:
        text = render(fh.read(), a.ingress_base.rstrip("/"), keys, os.path.abspath(a.ca_file),
                      a.master_key or "sk-" + secrets.token_hex(32))
    out_dir = os.path.dirname(os.path.abspath(a.out))
    os.makedirs(out_dir, exist_ok=True)
    tmp = a.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, 0o600)  # holds the upstream keys
    os.replace(tmp, a.out)
    src = os.path.join(HERE, "custom_auth.py")
    if os.path.abspath(os.path.join(out_dir, "custom_auth.py")) != src:
        shutil.copyfile(src, os.path.join(out_dir, "custom_auth.py"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
