# SPDX-License-Identifier: Apache-2.0
"""The deployment examples are checked, not just shipped:

- examples/kubernetes: every file parses, the kinds are all there and tied
  by kustomization.yaml, selectors/ports/probes/mounts agree with each other
  and with the broker's config, the config in the ConfigMap passes
  `cibroker policy check` with the policies beside it, and the init
  container's key copy turns what the kubelet leaves (root:10001 0440, which
  the broker refuses) into a 0600 file of UID 10001 (which it accepts).
- examples/systemd: `systemd-analyze verify` and `security --offline`, the
  required hardening directives, and a traced run of the real broker whose
  system calls, socket families and memory protections must all fit the
  unit's SystemCallFilter, RestrictAddressFamilies and MemoryDenyWriteExecute.

Checks needing a tool that is missing (systemd-analyze, strace, setpriv,
kubectl) or root are skipped with a loud message."""
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

import requests
import yaml

from harness import BIN, REPO, Broker, Issuer, github_issuer_config, jwt_policy, main

K8S = os.path.join(REPO, "examples", "kubernetes")
SYSTEMD = os.path.join(REPO, "examples", "systemd")
UNIT = os.path.join(SYSTEMD, "cibroker.service")
LOGROTATE = os.path.join(SYSTEMD, "cibroker.logrotate")


def loud_skip(test, why):
    print(f"\n*** SKIPPING {test.id().rsplit('.', 1)[-1]}: {why} ***\n", file=sys.stderr, flush=True)
    test.skipTest(why)


def load_k8s():
    docs = []
    for name in sorted(os.listdir(K8S)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(K8S, name)) as f:
                for d in yaml.safe_load_all(f):
                    if d is not None:
                        docs.append((name, d))
    return docs


def dockerfile_user():
    with open(os.path.join(REPO, "Dockerfile")) as f:
        users = [line.split()[1] for line in f if line.startswith("USER ")]
    uid, _, gid = users[-1].partition(":")
    return int(uid), int(gid or uid)


def duration_s(v):
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"(\d+)([smhd]?)", v)
    return int(m[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]]


class Kubernetes(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.files = load_k8s()
        cls.objs = [d for name, d in cls.files if name != "kustomization.yaml"]
        cls.by_kind = {}
        for d in cls.objs:
            cls.by_kind.setdefault(d["kind"], []).append(d)
        cls.deploy = cls.by_kind["Deployment"][0]
        cls.pod = cls.deploy["spec"]["template"]["spec"]
        cls.main = cls.pod["containers"][0]
        cms = {c["metadata"]["name"]: c for c in cls.by_kind["ConfigMap"]}
        cls.vol = {v["name"]: v for v in cls.pod["volumes"]}
        cls.config_cm = cms[cls.vol["config"]["configMap"]["name"]]
        cls.policies_cm = cms[cls.vol["policies"]["configMap"]["name"]]
        cls.config = yaml.safe_load(cls.config_cm["data"]["config.yaml"])

    def mount(self, container, volume):
        return next(m for m in container["volumeMounts"] if m["name"] == volume)

    def test_every_object_is_well_formed(self):
        self.assertGreaterEqual(len(self.objs), 9)
        for d in self.objs:
            self.assertIn("apiVersion", d)
            self.assertTrue(d["metadata"]["name"], d)
        self.assertLessEqual({"Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service",
                              "PodDisruptionBudget", "HorizontalPodAutoscaler", "NetworkPolicy"}, set(self.by_kind))

    def test_kustomization_lists_every_file(self):
        kust = next(d for name, d in self.files if name == "kustomization.yaml")
        self.assertEqual(kust["kind"], "Kustomization")
        present = {n for n in os.listdir(K8S) if n.endswith(".yaml") and n != "kustomization.yaml"}
        self.assertEqual(set(kust["resources"]), present)
        self.assertEqual(kust["namespace"], self.by_kind["Namespace"][0]["metadata"]["name"])

    def test_kubectl_kustomize_builds(self):
        kubectl = shutil.which("kubectl")
        if not kubectl:
            loud_skip(self, "kubectl not installed, kustomize build not checked")
        out = subprocess.run([kubectl, "kustomize", K8S], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        built = [d for d in yaml.safe_load_all(out.stdout) if d]
        self.assertEqual(sorted(d["kind"] for d in built), sorted(d["kind"] for d in self.objs))
        for d in built:
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"]["namespace"], "cibroker", d["metadata"]["name"])

    def test_pod_hardening(self):
        uid, gid = dockerfile_user()
        psc = self.pod["securityContext"]
        self.assertGreaterEqual(self.deploy["spec"]["replicas"], 2)
        self.assertTrue(psc["runAsNonRoot"])
        self.assertEqual((psc["runAsUser"], psc["runAsGroup"], psc["fsGroup"]), (uid, gid, gid))
        self.assertEqual(psc["seccompProfile"]["type"], "RuntimeDefault")
        self.assertFalse(self.pod["automountServiceAccountToken"])
        for c in self.pod["initContainers"] + self.pod["containers"]:
            sc = c["securityContext"]
            self.assertTrue(sc["readOnlyRootFilesystem"], c["name"])
            self.assertFalse(sc["allowPrivilegeEscalation"], c["name"])
            self.assertEqual(sc["capabilities"]["drop"], ["ALL"], c["name"])
            self.assertNotIn("add", sc["capabilities"], c["name"])
            self.assertIn("memory", c["resources"]["limits"], c["name"])
            self.assertIn("cpu", c["resources"]["requests"], c["name"])

    def test_probes_and_ports(self):
        port = int(self.config["listen"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in self.main["ports"]}
        self.assertEqual(ports["http"], port)
        self.assertEqual(self.main["livenessProbe"]["httpGet"]["path"], "/healthz")
        self.assertEqual(self.main["readinessProbe"]["httpGet"]["path"], "/readyz")
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            self.assertIn(self.main[probe]["httpGet"]["port"], ("http", port), probe)
        svc = self.by_kind["Service"][0]["spec"]
        self.assertIn(svc["ports"][0]["targetPort"], ("http", port))
        labels = self.deploy["spec"]["template"]["metadata"]["labels"]
        for sel in (svc["selector"], self.by_kind["PodDisruptionBudget"][0]["spec"]["selector"]["matchLabels"],
                    self.by_kind["NetworkPolicy"][0]["spec"]["podSelector"]["matchLabels"],
                    self.deploy["spec"]["selector"]["matchLabels"]):
            self.assertLessEqual(sel.items(), labels.items())

    def test_termination_covers_prestop_and_drain(self):
        pre = self.main["lifecycle"]["preStop"]["exec"]["command"]
        self.assertEqual(pre[0], "/bin/sleep")
        # SIGTERM drains for at most 2 x request_deadline (broker/cmd-serve.c)
        drain = 2 * duration_s(self.config["server"]["request_deadline"])
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], int(pre[1]) + drain)
        self.assertEqual(self.deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)

    def test_mounts_match_config(self):
        args = self.main["args"]
        self.assertEqual(args[:2], ["serve", "--config"])
        cfg_mount = self.mount(self.main, "config")
        self.assertTrue(cfg_mount["readOnly"])
        self.assertEqual(args[2], os.path.join(cfg_mount["mountPath"], "config.yaml"))
        pol_mount = self.mount(self.main, "policies")
        self.assertTrue(pol_mount["readOnly"])
        self.assertEqual(self.config["policies"], pol_mount["mountPath"])
        keys_mount = self.mount(self.main, "signing-keys")
        self.assertTrue(keys_mount["readOnly"])
        for k in self.config["signing"]["keys"]:
            self.assertEqual(os.path.dirname(k), keys_mount["mountPath"])
        self.assertEqual(self.vol["signing-key-secret"]["secret"]["defaultMode"], 0o400)
        self.assertEqual(self.vol["signing-keys"]["emptyDir"]["medium"], "Memory")
        self.assertEqual(self.config["audit"]["path"], "-")
        self.assertEqual({i["name"] for i in self.config["issuers"]}, {"github", "gitlab"})
        self.assertTrue(self.config["replay"]["redis"].startswith("redis://"))
        self.assertTrue(any(i.get("single_use") for i in self.config["issuers"]))

    def test_hpa_and_pdb(self):
        hpa = self.by_kind["HorizontalPodAutoscaler"][0]["spec"]
        self.assertEqual((hpa["scaleTargetRef"]["kind"], hpa["scaleTargetRef"]["name"]),
                         ("Deployment", self.deploy["metadata"]["name"]))
        self.assertGreaterEqual(hpa["minReplicas"], 2)
        self.assertEqual(hpa["metrics"][0]["resource"]["name"], "cpu")
        pdb = self.by_kind["PodDisruptionBudget"][0]["spec"]
        self.assertLess(pdb["minAvailable"], hpa["minReplicas"])  # a drain can always make progress

    def test_network_policy(self):
        np = self.by_kind["NetworkPolicy"][0]["spec"]
        self.assertEqual(set(np["policyTypes"]), {"Ingress", "Egress"})
        port = self.main["ports"][0]["containerPort"]
        for rule in np["ingress"]:
            self.assertEqual([p["port"] for p in rule["ports"]], [port])
        egress_ports = {(p["protocol"], p["port"]) for r in np["egress"] for p in r["ports"]}
        redis_port = int(self.config["replay"]["redis"].rsplit(":", 1)[1].split("/")[0])
        self.assertEqual(egress_ports, {("UDP", 53), ("TCP", 53), ("TCP", 443), ("TCP", redis_port)})

    def write_config(self, tmp, key_path):
        """The ConfigMap's config.yaml and policies on disk, only the key and
        policy paths moved into tmp."""
        pol_dir = os.path.join(tmp, "policies")
        os.mkdir(pol_dir)
        for name, text in self.policies_cm["data"].items():
            with open(os.path.join(pol_dir, name), "w") as f:
                f.write(text)
        text = self.config_cm["data"]["config.yaml"]
        for k in self.config["signing"]["keys"]:
            text = text.replace(k, key_path)
        text = text.replace(self.config["policies"], pol_dir)
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            f.write(text)
        return path

    def policy_check(self, config, as_user=None):
        """as_user: (uid, gid, groups) to run as, as the pod does (key files
        must belong to the broker's user or root)."""
        pre = []
        if as_user:
            uid, gid, groups = as_user
            pre = [shutil.which("setpriv"), f"--reuid={uid}", f"--regid={gid}", f"--groups={groups}", "--"]
        return subprocess.run(pre + [BIN, "policy", "check", "--config", config], capture_output=True, text=True,
                              timeout=60)

    def test_configmap_passes_policy_check(self):
        tmp = tempfile.mkdtemp(prefix="cibroker-k8s-")
        self.addCleanup(shutil.rmtree, tmp, True)
        key = os.path.join(tmp, "signing.pem")
        subprocess.run([BIN, "keygen", "--out", key], check=True, capture_output=True)
        self.assertEqual(stat.S_IMODE(os.stat(key).st_mode), 0o600)
        out = self.policy_check(self.write_config(tmp, key))
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        # the check can fail: a group-readable key is refused
        os.chmod(key, 0o640)
        self.assertEqual(self.policy_check(self.write_config(tempfile.mkdtemp(dir=tmp), key)).returncode, 1)

    def test_init_container_makes_key_usable(self):
        """Replays what the kubelet does to the Secret volume (defaultMode
        0400 | fsGroup's g+r, owned root:fsGroup) and runs the init
        container's command as the pod's user: the copy must be 0600, owned
        by that user, and accepted by the broker; the raw file refused."""
        setpriv = shutil.which("setpriv")
        if os.geteuid() != 0 or not setpriv:
            loud_skip(self, "needs root and setpriv to act as the kubelet and UID 10001")
        uid, gid = dockerfile_user()
        fs_group = self.pod["securityContext"]["fsGroup"]
        init = next(c for c in self.pod["initContainers"] if c["name"] == "signing-key")
        tmp = tempfile.mkdtemp(prefix="cibroker-k8s-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        mounts = {}
        for m in init["volumeMounts"]:
            mounts[m["mountPath"]] = os.path.join(tmp, m["name"])
            os.mkdir(mounts[m["mountPath"]])
        secret_dir = mounts[self.mount(init, "signing-key-secret")["mountPath"]]
        keys_dir = mounts[self.mount(init, "signing-keys")["mountPath"]]
        raw = os.path.join(secret_dir, "signing.pem")
        subprocess.run([BIN, "keygen", "--out", raw], check=True, capture_output=True)
        mode = self.vol["signing-key-secret"]["secret"]["defaultMode"] | 0o440  # kubelet roMask with fsGroup
        os.chown(raw, 0, fs_group)
        os.chmod(raw, mode)
        os.chown(secret_dir, 0, fs_group)
        os.chmod(secret_dir, 0o2755)
        os.chown(keys_dir, 0, fs_group)  # emptyDir with fsGroup: 0777 + setgid
        os.chmod(keys_dir, 0o2777)
        cmd = list(init["command"])
        script = cmd[-1]
        for path, local in mounts.items():
            script = script.replace(path, local)
        cmd[-1] = script
        out = subprocess.run([setpriv, f"--reuid={uid}", f"--regid={gid}", f"--groups={fs_group}", "--"] + cmd,
                             capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stderr)
        copy = os.path.join(keys_dir, "signing.pem")
        st = os.stat(copy)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid), (0o600, uid))
        with open(raw, "rb") as a, open(copy, "rb") as b:
            self.assertEqual(a.read(), b.read())
        check = os.path.join(tmp, "check")
        os.mkdir(check)
        os.chmod(check, 0o755)
        pod_user = (uid, gid, fs_group)
        ok = self.policy_check(self.write_config(check, copy), as_user=pod_user)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        other = tempfile.mkdtemp(dir=check)
        os.chmod(other, 0o755)
        refused = self.policy_check(self.write_config(other, raw), as_user=pod_user)
        self.assertEqual(refused.returncode, 1)
        self.assertIn("accessible by group or others", refused.stdout + refused.stderr)


def unit_directives(path):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            k, _, v = line.partition("=")
            out.setdefault(k, []).append(v)
    return out


def expand_syscall_groups(analyze):
    """`systemd-analyze syscall-filter` groups, each expanded to syscalls."""
    text = subprocess.run([analyze, "syscall-filter"], capture_output=True, text=True, check=True).stdout
    groups, cur = {}, None
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if not line.startswith(" ") and s.startswith("@"):
            cur = groups.setdefault(s, [])
        elif cur is not None:
            cur.append(s)

    def expand(name, seen=()):
        if not name.startswith("@"):
            return {name}
        out = set()
        for item in groups.get(name, []):
            if item not in seen:
                out |= expand(item, seen + (name,))
        return out

    return expand


def traced_broker(tracer_pid, config_path):
    """The broker's pid under strace (which also forks short-lived probes)."""
    with open(f"/proc/{tracer_pid}/task/{tracer_pid}/children") as f:
        for child in f.read().split():
            # before its exec the tracee still runs strace's image and argv
            if os.readlink(f"/proc/{child}/exe") != os.path.realpath(BIN):
                continue
            with open(f"/proc/{child}/cmdline", "rb") as c:
                if config_path.encode() in c.read():
                    return int(child)
    return None


class Systemd(unittest.TestCase):
    def setUp(self):
        self.d = unit_directives(UNIT)

    def analyze(self):
        exe = shutil.which("systemd-analyze")
        if not exe:
            loud_skip(self, "systemd-analyze not installed: the unit file is NOT verified")
        return exe

    def test_hardening_directives(self):
        want = {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
                "CapabilityBoundingSet": "", "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes",
                "RestrictNamespaces": "yes", "KillSignal": "SIGTERM", "Restart": "on-failure",
                "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX"}
        for k, v in want.items():
            self.assertEqual(self.d.get(k), [v], k)
        self.assertIn("@system-service", self.d["SystemCallFilter"])
        self.assertIn("/bin/kill -HUP $MAINPID", self.d["ExecReload"])
        self.assertEqual(self.d["ReadWritePaths"], ["/var/log/cibroker"])
        # default request_deadline 15 s: the drain takes at most 30 s
        self.assertGreater(duration_s(self.d["TimeoutStopSec"][0]), 30)
        self.assertIn("User", self.d)
        cred = dict(c.split(":", 1) for c in self.d["LoadCredential"])
        self.assertIn("signing.pem", cred)

    def test_logrotate_signals_usr1(self):
        with open(LOGROTATE) as f:
            text = f.read()
        self.assertRegex(text, r"systemctl kill -s USR1 .*cibroker")
        self.assertNotIn("copytruncate", re.sub(r"#.*", "", text))
        self.assertIn("/var/log/cibroker/", text)

    def test_systemd_analyze_verify(self):
        exe = self.analyze()
        tmp = tempfile.mkdtemp(prefix="cibroker-unit-")
        self.addCleanup(shutil.rmtree, tmp, True)
        with open(UNIT) as f:
            text = f.read()
        # verify checks that ExecStart exists: point it at the binary under test
        local = os.path.join(tmp, "cibroker.service")
        with open(local, "w") as f:
            f.write(text.replace("/usr/bin/cibroker", os.path.abspath(BIN)))
        out = subprocess.run([exe, "verify", "--man=no", local], capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        # unknown or misspelt directives are only warnings: any line about the unit fails the test
        self.assertNotIn("cibroker.service", out.stderr + out.stdout)
        sec = subprocess.run([exe, "security", "--offline=yes", local], capture_output=True, text=True, timeout=60)
        m = re.search(r"Overall exposure level for cibroker.service: ([0-9.]+)", sec.stdout + sec.stderr)
        self.assertIsNotNone(m, sec.stdout + sec.stderr)
        self.assertLessEqual(float(m[1]), 2.0)

    def test_broker_fits_the_sandbox(self):
        """A traced broker run (start, JWKS via a host name, exchanges, SIGHUP,
        SIGUSR1, SIGTERM) uses only allowed system calls and socket families
        and never maps memory writable and executable."""
        analyze = self.analyze()
        with open(BIN, "rb") as f:
            if b"__asan_init" in f.read():
                loud_skip(self, "ASan build: LeakSanitizer cannot run under ptrace, and the sandbox is checked "
                                "against the shipped (plain) build")
        strace = shutil.which("strace")
        if not strace or subprocess.run([strace, "-o", "/dev/null", "true"], capture_output=True).returncode:
            loud_skip(self, "strace missing or ptrace not permitted: SystemCallFilter is NOT checked against "
                            "the broker")
        expand = expand_syscall_groups(analyze)
        allowed = set()
        for entry in self.d["SystemCallFilter"]:
            names = entry.lstrip("~").split()
            s = set().union(*(expand(n) for n in names))
            allowed = allowed - s if entry.startswith("~") else allowed | s
        families = set(self.d["RestrictAddressFamilies"][0].split())

        issuer = Issuer().start()
        self.addCleanup(issuer.stop)
        icfg = github_issuer_config(issuer, jwks_uri=issuer.jwks_uri.replace("127.0.0.1", "localhost"))
        b = Broker([icfg], [jwt_policy()])
        self.addCleanup(shutil.rmtree, b.dir, True)
        trace = os.path.join(b.dir, "trace")
        b.stderr = open(b.stderr_path, "w")
        tracer = subprocess.Popen([strace, "-f", "-qq", "-e", "signal=none", "-o", trace, BIN, "serve",
                                   "--config", b.config_path], stdout=subprocess.DEVNULL, stderr=b.stderr)
        try:
            pid, ready = None, False
            deadline = time.time() + 30
            while time.time() < deadline and not ready and tracer.poll() is None:
                try:
                    pid = pid or traced_broker(tracer.pid, b.config_path)
                    ready = requests.get(b.url + "/readyz", timeout=2).status_code == 200
                except (OSError, IndexError, ValueError, requests.RequestException):
                    time.sleep(0.1)
            self.assertTrue(pid and ready, b.log())
            self.assertEqual(b.exchange(issuer.mint(), "web-deploy-prod").status_code, 200, b.log())
            self.assertEqual(b.exchange(issuer.mint({"ref": "x"}), "web-deploy-prod").status_code, 403)
            requests.get(b.url + "/metrics", timeout=10)
            os.kill(pid, signal.SIGHUP)
            time.sleep(1)
            os.kill(pid, signal.SIGUSR1)
            self.assertEqual(b.exchange(issuer.mint(), "web-deploy-prod").status_code, 200, b.log())
            os.kill(pid, signal.SIGTERM)
            self.assertEqual(tracer.wait(timeout=60), 0, b.log())
        finally:
            if tracer.poll() is None:
                tracer.kill()
                tracer.wait()
            b.stderr.close()
        self.assertIn("reloaded", b.log())
        used, fams, wx = set(), set(), []
        call = re.compile(r"^\d+\s+(?:<\.\.\. )?([a-z0-9_]+)[( ]")
        with open(trace) as f:
            for line in f:
                m = call.match(line)
                if not m:
                    continue
                name = m[1]
                used.add(name)
                if name in ("socket", "socketpair"):
                    fam = re.search(r"\((AF_[A-Z0-9]+)", line)
                    if fam:
                        fams.add(fam[1])
                if name in ("mmap", "mprotect", "pkey_mprotect") and "PROT_WRITE" in line and "PROT_EXEC" in line:
                    wx.append(line.strip())
        self.assertGreater(len(used), 20)
        self.assertEqual(sorted(used - allowed), [], "system calls outside SystemCallFilter")
        self.assertIn("AF_INET", fams)
        self.assertEqual(sorted(fams - families), [], "socket families outside RestrictAddressFamilies")
        self.assertEqual(wx, [], "writable+executable mappings break MemoryDenyWriteExecute")


if __name__ == "__main__":
    main()
