//! `cargo xtask deploy-render`: writes deploy/kubernetes/prometheusrule.yaml from
//! deploy/prometheus/rules.yaml (the one rule file; the PrometheusRule is never edited by hand),
//! and the manifest checks `cargo xtask test` runs.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::cmd::{run, workspace_root};

/// The one rule file: Prometheus loads it as is, the PrometheusRule is rendered from it.
pub const RULES: &str = "deploy/prometheus/rules.yaml";
pub const PROMETHEUS_RULE: &str = "deploy/kubernetes/prometheusrule.yaml";
const DASHBOARD: &str = "deploy/grafana/siphon-overview.json";
/// Where the alerts' runbook_url point (deploy/README.md says how to change it).
#[cfg(test)]
const RUNBOOK_BASE: &str = "https://github.com/siphon-dev/siphon/blob/main/docs/runbooks/";
/// Kustomize directories `cargo xtask test` renders and checks: the base and the example overlay.
const KUSTOMIZATIONS: &[(&str, &str)] = &[
    ("base", "deploy/kubernetes"),
    ("gpu-pool", "deploy/overlays/gpu-pool"),
];

#[derive(Args)]
pub struct RenderArgs {
    /// Fail, writing nothing, if the committed file differs from what would be written.
    #[arg(long)]
    check: bool,
}

/// The PrometheusRule holding `rules` (a Prometheus rule file, `groups:` at the top) as its
/// spec, verbatim: every line indented under `spec:`, comments kept.
pub fn render_prometheus_rule(rules: &str) -> anyhow::Result<String> {
    let mut seen_groups = false;
    for line in rules.lines() {
        if line.is_empty() || line.starts_with([' ', '#']) {
            continue;
        }
        if line.trim_end() == "groups:" && !seen_groups {
            seen_groups = true;
        } else {
            bail!("{RULES}: top-level line {line:?}: only `groups:` can be rendered into a PrometheusRule");
        }
    }
    if !seen_groups {
        bail!("{RULES}: no top-level `groups:`");
    }
    let mut out = String::from(
        "# Generated from deploy/prometheus/rules.yaml by `cargo xtask deploy-render`: do not edit.\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n  name: siphon\n  labels: {app.kubernetes.io/name: siphon}\n\
         spec:\n",
    );
    for line in rules.lines() {
        if !line.trim().is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

fn render_at(root: &Path, check: bool) -> anyhow::Result<()> {
    let rules = fs::read_to_string(root.join(RULES)).with_context(|| format!("reading {RULES}"))?;
    let rendered = render_prometheus_rule(&rules)?;
    let target = root.join(PROMETHEUS_RULE);
    let current = fs::read_to_string(&target).unwrap_or_default();
    if current == rendered {
        eprintln!("xtask: {PROMETHEUS_RULE} is current");
        return Ok(());
    }
    if check {
        bail!("{PROMETHEUS_RULE} differs from what {RULES} renders: run `cargo xtask deploy-render` and commit it");
    }
    fs::write(&target, rendered).with_context(|| format!("writing {PROMETHEUS_RULE}"))?;
    eprintln!("xtask: wrote {PROMETHEUS_RULE}");
    Ok(())
}

pub fn deploy_render(args: &RenderArgs) -> anyhow::Result<()> {
    render_at(&workspace_root(), args.check)
}

/// The manifest checks of `cargo xtask test`: the PrometheusRule is current; the base and the
/// overlay render with `kubectl kustomize`; every object validates in strict mode (Kubernetes
/// OpenAPI schemas, the operator's CRD fields) and the DaemonSet is locked down
/// (xtask/deploy/check_manifests.py, itself unit-tested); the dashboard's queries parse and
/// the recording rules they read exist (xtask/deploy/check_dashboard.py).
pub fn check_manifests() -> anyhow::Result<()> {
    let root = workspace_root();
    render_at(&root, true)?;
    let out = root.join("target/deploy-check");
    fs::create_dir_all(&out)?;
    let mut rendered: Vec<PathBuf> = Vec::new();
    for (name, dir) in KUSTOMIZATIONS {
        let o = Command::new("kubectl")
            .current_dir(&root)
            .args(["kustomize", dir])
            .output()
            .context("running `kubectl kustomize` (kubectl with kustomize is required; see deploy/README.md)")?;
        if !o.status.success() {
            bail!(
                "`kubectl kustomize {dir}` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        let path = out.join(format!("{name}.yaml"));
        fs::write(&path, &o.stdout)?;
        rendered.push(path);
    }
    let checks = root.join("xtask/deploy");
    run(Command::new("python3").current_dir(&checks).args([
        "-m",
        "unittest",
        "-q",
        "test_check_manifests",
    ]))?;
    run(Command::new("python3")
        .current_dir(&checks)
        .arg("check_manifests.py")
        .arg("--rules")
        .arg(root.join(RULES))
        .args(&rendered))?;
    run(Command::new("python3")
        .current_dir(&checks)
        .arg("check_dashboard.py")
        .arg(root.join(DASHBOARD))
        .arg(root.join(RULES)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_prometheus_rule_is_rendered_from_the_rules() {
        let root = workspace_root();
        let rules = fs::read_to_string(root.join(RULES)).expect("rules");
        let committed = fs::read_to_string(root.join(PROMETHEUS_RULE)).expect("prometheusrule");
        assert!(
            committed == render_prometheus_rule(&rules).expect("render"),
            "{PROMETHEUS_RULE} is stale: run `cargo xtask deploy-render`"
        );
    }

    /// Every alert has a summary, a description and a runbook_url to its own page, which exists.
    #[test]
    fn every_alert_has_annotations_and_a_runbook() {
        let root = workspace_root();
        let rules = fs::read_to_string(root.join(RULES)).expect("rules");
        let mut alerts = 0;
        for block in rules.split("- alert: ").skip(1) {
            let name = block.split_whitespace().next().unwrap_or_default();
            let block = block.split("- alert: ").next().unwrap_or_default();
            for key in ["summary:", "description:", "runbook_url:"] {
                assert!(block.contains(key), "{name} has no {key}");
            }
            let url = format!("{RUNBOOK_BASE}{name}.md\"");
            assert!(block.contains(&url), "{name}'s runbook_url is not {url}");
            let page = root.join(format!("docs/runbooks/{name}.md"));
            assert!(page.exists(), "{} missing", page.display());
            alerts += 1;
        }
        assert!(alerts >= 8, "only {alerts} alerts found");
    }

    #[test]
    fn rules_are_indented_under_spec_verbatim() {
        let rules = "# c\ngroups:\n  - name: g\n    rules:\n\n      - record: r\n        expr: |\n          up\n";
        let out = render_prometheus_rule(rules).expect("render");
        assert!(out.contains(
            "spec:\n  # c\n  groups:\n    - name: g\n      rules:\n\n        - record: r\n          expr: |\n            up\n"
        ));
        assert!(out.contains("kind: PrometheusRule\n"));
    }

    #[test]
    fn other_top_level_keys_are_refused() {
        assert!(render_prometheus_rule("groups: []\nextra: 1\n").is_err());
        assert!(render_prometheus_rule("---\ngroups: []\n").is_err());
        assert!(render_prometheus_rule("# only a comment\n").is_err());
    }
}
