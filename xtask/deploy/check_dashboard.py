"""Checks the Grafana dashboard's queries: each parses as PromQL (promtool check rules on a
throw-away rule file, Grafana's variables replaced), and each recording rule it reads
(`level:metric:operation` names) is defined in deploy/prometheus/rules.yaml.

    python3 check_dashboard.py DASHBOARD.json RULES.yaml

Run by `cargo xtask test`. Which `siphon_*` series the agents export is checked by the lab.
"""

import json
import re
import subprocess
import sys
import tempfile

import yaml

VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*", "$service": ".*"}


def main():
    dashboard, rules_path = sys.argv[1], sys.argv[2]
    with open(dashboard) as f:
        dash = json.load(f)
    with open(rules_path) as f:
        recorded = {r["record"] for g in yaml.safe_load(f)["groups"] for r in g["rules"] if "record" in r}
    rules, problems = [], []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            expr = t["expr"]
            for var, value in VARIABLES.items():
                expr = expr.replace(var, value)
            if "$" in expr:
                problems.append(f"panel {panel['title']!r}: unknown variable in {t['expr']!r}")
            for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*:[A-Za-z0-9_:]+", expr):
                if name not in recorded:
                    problems.append(f"panel {panel['title']!r}: recording rule {name} is not in {rules_path}")
            rules.append({"record": f"dashboard:panel{panel['id']}:{t['refId']}", "expr": expr})
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as tmp:
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, tmp)
        tmp.flush()
        res = subprocess.run(["promtool", "check", "rules", "--lint=none", tmp.name],
                             capture_output=True, text=True)
        if res.returncode != 0:
            problems.append(f"promtool: {res.stdout}{res.stderr}")
    for p in problems:
        print(f"{dashboard}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{dashboard}: {len(rules)} queries parse; recording rules they read are defined")


if __name__ == "__main__":
    main()
