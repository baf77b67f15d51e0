"""Unit tests of check_manifests.py: the shipped DaemonSet passes, and each way of loosening it
is caught. `python3 -m unittest test_check_manifests` (run by `cargo xtask test`)."""

import copy
import os
import unittest

import yaml

import check_manifests as cm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def shipped_daemonset():
    with open(os.path.join(ROOT, "deploy/kubernetes/daemonset.yaml")) as f:
        return next(o for o in yaml.safe_load_all(f) if o and o["kind"] == "DaemonSet")


class DaemonSetPolicy(unittest.TestCase):
    def setUp(self):
        self.ds = shipped_daemonset()
        self.c = self.ds["spec"]["template"]["spec"]["containers"][0]

    def assertCaught(self, fragment):
        problems = cm.daemonset_problems(self.ds)
        self.assertTrue(any(fragment in p for p in problems), problems)

    def test_shipped_daemonset_passes(self):
        self.assertEqual(cm.daemonset_problems(self.ds), [])

    def test_privileged_is_caught_even_when_false(self):
        self.c["securityContext"]["privileged"] = True
        self.assertCaught("privileged")
        self.c["securityContext"]["privileged"] = False
        self.assertCaught("privileged")

    def test_extra_or_missing_capability_is_caught(self):
        self.c["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")
        self.assertCaught("exactly")
        self.c["securityContext"]["capabilities"]["add"] = ["BPF", "NET_ADMIN"]
        self.assertCaught("exactly")

    def test_drop_all_is_required(self):
        del self.c["securityContext"]["capabilities"]["drop"]
        self.assertCaught("drop [ALL]")

    def test_writable_root_escalation_and_seccomp(self):
        sc = self.c["securityContext"]
        sc["readOnlyRootFilesystem"] = False
        sc["allowPrivilegeEscalation"] = True
        del sc["seccompProfile"]
        for fragment in ("readOnlyRootFilesystem", "allowPrivilegeEscalation", "seccompProfile"):
            self.assertCaught(fragment)

    def test_probes_are_required(self):
        for probe in ("readinessProbe", "livenessProbe"):
            ds = copy.deepcopy(self.ds)
            del ds["spec"]["template"]["spec"]["containers"][0][probe]
            self.assertTrue(any(probe in p for p in cm.daemonset_problems(ds)))

    def test_rollout_one_node_at_a_time(self):
        self.ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"] = "10%"
        self.assertCaught("maxUnavailable")


class Schemas(unittest.TestCase):
    def setUp(self):
        self.crds = cm.load_crd_schemas()

    def load(self, name):
        with open(os.path.join(ROOT, "deploy/kubernetes", name)) as f:
            return yaml.safe_load(f)

    def test_shipped_crd_objects_pass(self):
        for name in ("servicemonitor.yaml", "prometheusrule.yaml"):
            self.assertEqual(cm.schema_problems(self.load(name), self.crds), [], name)

    def test_unknown_crd_field_is_an_error(self):
        sm = self.load("servicemonitor.yaml")
        sm["spec"]["endpoints"][0]["intervall"] = "30s"
        self.assertTrue(cm.schema_problems(sm, self.crds))
        pr = self.load("prometheusrule.yaml")
        pr["spec"]["groups"][0]["rules"][0]["exprr"] = "1"
        self.assertTrue(cm.schema_problems(pr, self.crds))

    def test_unknown_kubernetes_field_is_an_error(self):
        ds = shipped_daemonset()
        ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["bogus"] = 1
        self.assertTrue(cm.schema_problems(ds, self.crds))
        self.assertEqual(cm.schema_problems(shipped_daemonset(), self.crds), [])


if __name__ == "__main__":
    unittest.main()
