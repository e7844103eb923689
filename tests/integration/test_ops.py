# SPDX-License-Identifier: Apache-2.0
"""Operations with the real binary: rate limits, single use (memory and
Redis), SIGHUP reload, TLS on the listener, graceful SIGTERM, and scale-out:
three brokers behind nginx sharing Redis for replay."""
import concurrent.futures
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import (BIN, GRANT, JWT_TYPE, Broker, Issuer, audited_credential_ids, free_port, github_issuer_config,
                     jwt_policy, main, minted_jti, yaml_dump)


def start_redis(tmp):
    exe = shutil.which("redis-server")
    if not exe:
        raise unittest.SkipTest("redis-server not installed")
    port = free_port()
    p = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                          "--dir", tmp, "--protected-mode", "yes"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p, port
        except OSError:
            time.sleep(0.05)
    p.kill()
    raise RuntimeError("redis did not start")


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class OpsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.issuer = Issuer().start()

    @classmethod
    def tearDownClass(cls):
        cls.issuer.stop()

    def broker(self, icfg=None, policies=None, **kw):
        b = Broker([github_issuer_config(self.issuer, **(icfg or {}))], policies or [jwt_policy()], **kw)
        self.addCleanup(b.stop)
        return b

    def test_rate_limit_per_ip(self):
        b = self.broker(extra={"rate_limits": {"per_ip": {"rate": 0.2, "burst": 2}}}).start()
        codes = [b.exchange(self.issuer.mint(), "web-deploy-prod") for _ in range(3)]
        self.assertEqual([r.status_code for r in codes[:2]], [200, 200])
        self.assertEqual(codes[2].status_code, 429)
        self.assertGreaterEqual(int(codes[2].headers["Retry-After"]), 1)
        self.assertEqual(codes[2].json()["error"], "temporarily_unavailable")
        self.assertIn('outcome="rate_limited"} 1', requests.get(b.url + "/metrics").text)

    def test_rate_limit_per_subject(self):
        b = self.broker(extra={"rate_limits": {"per_subject": {"rate": 0.2, "burst": 1}}}).start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 429)
        other = self.issuer.mint({"sub": "repo:acme/web:ref:refs/heads/other"})
        self.assertEqual(b.exchange(other, "web-deploy-prod").status_code, 200)

    @staticmethod
    def trickle(port, head, interval, seconds, limit=None):
        """Send head, then one byte every interval until the server hangs up
        (True), seconds pass or limit bytes went out (False); and the count."""
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(head)
        s.settimeout(interval)
        sent = 0
        end = time.time() + seconds
        try:
            while time.time() < end and (limit is None or sent < limit):
                try:
                    s.sendall(b"a")
                    sent += 1
                    if s.recv(1024) == b"":
                        return True, sent
                except socket.timeout:
                    continue
                except OSError:
                    return True, sent
            return False, sent
        finally:
            s.close()

    def test_request_deadline_cuts_trickling_body(self):
        b = self.broker(extra={"server": {"request_deadline": 2, "connection_timeout": 30}}).start()
        # 20 s: far beyond the 2 s deadline; the server must hang up long before
        cut, sent = self.trickle(b.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\n"
                                 b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n",
                                 0.3, 20, limit=4000)
        self.assertTrue(cut, "a body trickled past request_deadline must be cut off")
        self.assertLess(sent, 4000)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)

    def test_header_deadline_cuts_trickling_headers(self):
        # each byte restarts the idle timeout, so only the absolute bound
        # (connection_timeout + request_deadline) can end this
        b = self.broker(extra={"server": {"request_deadline": 2, "connection_timeout": 2}}).start()
        # 30 s: far beyond the 4 s bound; the server must hang up long before
        cut, _ = self.trickle(b.port, b"POST /v1/token HTTP/1.1\r\nHost: x\r\nX-Slow: ", 1.0, 30)
        self.assertTrue(cut, "headers trickled past connection_timeout + request_deadline must be cut off")
        # a keep-alive client that waits, then sends a whole request, is not cut
        k = requests.Session()
        self.assertEqual(k.get(b.url + "/healthz", timeout=5).status_code, 200)
        time.sleep(1.5)
        self.assertEqual(k.get(b.url + "/healthz", timeout=5).status_code, 200)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)

    def test_single_use_in_memory(self):
        b = self.broker(icfg={"single_use": True},
                        policies=[jwt_policy(), jwt_policy(name="main-only-dev", allow={
                            "repository": "acme/web", "repository_id": "89221572", "ref": "refs/heads/dev"})]).start()
        tok = self.issuer.mint()
        # a refused exchange issues nothing, so it does not spend the token
        self.assertEqual(b.exchange(tok, "main-only-dev").status_code, 403)
        self.assertEqual(b.exchange(tok, "web-deploy-prod").status_code, 200)
        r = b.exchange(tok, "web-deploy-prod")
        self.assertEqual(r.status_code, 400)
        self.assertEqual(r.json()["error"], "invalid_grant")
        self.assertEqual(b.exchange(self.issuer.mint({"jti": None}), "web-deploy-prod").status_code, 400)

    def test_single_use_redis_down_is_503(self):
        b = self.broker(icfg={"single_use": True}, extra={"replay": {"redis": f"redis://127.0.0.1:{free_port()}"}})
        b.start()
        r = b.exchange(self.issuer.mint(), "web-deploy-prod")
        self.assertEqual(r.status_code, 503, r.text)
        self.assertNotIn("access_token", r.text)
        self.assertEqual(r.headers.get("Retry-After"), "1")

    def test_sighup_reload(self):
        b = self.broker().start()
        self.assertEqual(b.exchange(self.issuer.mint(), "second").status_code, 400)
        with open(os.path.join(b.config["policies"], "new.yaml"), "w") as f:
            f.write(yaml_dump(jwt_policy(name="second")))
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while time.time() < deadline and b.exchange(self.issuer.mint(), "second").status_code != 200:
            time.sleep(0.2)
        self.assertEqual(b.exchange(self.issuer.mint(), "second").status_code, 200)
        # a broken policy: the reload is refused, the old snapshot keeps serving
        with open(os.path.join(b.config["policies"], "bad.yaml"), "w") as f:
            f.write("name: broken\nisuer: github\n")
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and 'reloads_total{result="failed"} 1' not in requests.get(b.url + "/metrics").text:
            time.sleep(0.1)
        self.assertIn('cibroker_reloads_total{result="failed"} 1', requests.get(b.url + "/metrics").text)
        self.assertEqual(b.exchange(self.issuer.mint(), "second").status_code, 200)
        self.assertIn("bad.yaml:2:1", b.log())

    def test_listener_rebuilds_under_keep_alive_load(self):
        # Rebuilding the listener stops the old libmicrohttpd daemon while
        # keep-alive clients keep sending; with sync: always their exchanges
        # park connections, and a daemon stopped with one parked aborts.
        b = self.broker().start()
        stop = threading.Event()
        codes = []

        def client():
            s = requests.Session()
            while not stop.is_set():
                form = {"grant_type": GRANT, "subject_token": self.issuer.mint(), "subject_token_type": JWT_TYPE,
                        "audience": "web-deploy-prod"}
                try:
                    codes.append(s.post(b.url + "/v1/token", data=form, timeout=30).status_code)
                except requests.RequestException:
                    s = requests.Session()  # a connection of the old listener was closed

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(6):
                b.config["server"] = {"threads": 3 + i % 2}
                b.write_config()
                b.proc.send_signal(signal.SIGHUP)
                deadline = time.time() + 15
                while time.time() < deadline and b.log().count("listener rebuilt") < i + 1:
                    self.assertIsNone(b.proc.poll(), b.log())
                    time.sleep(0.05)
                self.assertEqual(b.log().count("listener rebuilt"), i + 1, b.log())
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertIsNone(b.proc.poll(), b.log())
        self.assertNotIn("Fatal error", b.log())
        self.assertGreater(codes.count(200), 0)
        self.assertEqual(set(codes), {200})
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)

    def test_reload_to_a_taken_port_counts_as_failed(self):
        b = self.broker().start()
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        b.config["listen"] = f"127.0.0.1:{taken.getsockname()[1]}"
        b.write_config()
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while time.time() < deadline and "kept the previous listener" not in b.log():
            time.sleep(0.1)
        self.assertIn("kept the previous listener", b.log())
        self.assertIn('cibroker_reloads_total{result="failed"} 1', requests.get(b.url + "/metrics").text)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)

    def test_reload_moves_the_audit_log_and_back(self):
        b = self.broker().start()
        first = b.audit_path
        second = os.path.join(b.dir, "moved.jsonl")

        def reload_to(path):
            b.config["audit"]["path"] = path
            b.write_config()
            n = b.log().count("reloaded ")
            b.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 15
            while time.time() < deadline and b.log().count("reloaded ") == n:
                time.sleep(0.1)

        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        reload_to(second)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        reload_to(first)
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        self.assertEqual(b.stop(), 0)
        for path, count in ((first, 2), (second, 1)):
            out = subprocess.run([BIN, "audit", "verify", path], capture_output=True,
                                 text=True)
            self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
            with open(path) as f:
                self.assertEqual(len(f.read().splitlines()), count, path)

    def test_sigterm_drains_and_exits_zero(self):
        b = self.broker().start()
        tokens = [self.issuer.mint() for _ in range(50)]
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(b.exchange, t, "web-deploy-prod") for t in tokens[:20]]
            time.sleep(0.05)
            rc = b.stop()
            answered = []
            for f in futs:
                try:
                    r = f.result()
                    if r.status_code == 200:
                        answered.append(minted_jti(r.json()))
                except requests.RequestException:
                    pass
        self.assertEqual(rc, 0)
        ids = audited_credential_ids(b.audit_path)
        self.assertTrue(set(answered) <= ids)
        self.assertIn("stopped: every exchange answered, the audit log closed", b.log())

    def test_draining_listener_asks_keep_alive_clients_to_close(self):
        # While SIGTERM drains, answers on old keep-alive connections say
        # "Connection: close", so clients move on instead of finding the
        # connection gone at their next request.
        b = self.broker(icfg={"jwks_min_refetch": "1s"}).start()
        s = requests.Session()
        first = s.get(b.url + "/healthz", timeout=5)
        self.assertEqual(first.status_code, 200)
        self.assertNotEqual(first.headers.get("Connection", "").lower(), "close")
        time.sleep(1.1)
        self.issuer.set_delay(3)
        self.addCleanup(self.issuer.set_delay, 0)
        slow = concurrent.futures.ThreadPoolExecutor(1)
        self.addCleanup(slow.shutdown)
        pending = slow.submit(b.exchange, self.issuer.mint(headers={"kid": "unknown-kid"}), "web-deploy-prod")
        time.sleep(0.5)  # the exchange now waits for the (delayed) JWKS refetch
        b.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        during = s.get(b.url + "/healthz", timeout=5)
        self.assertEqual(during.status_code, 200)
        self.assertEqual(during.headers.get("Connection", "").lower(), "close")
        self.assertEqual(pending.result().status_code, 400)
        self.assertEqual(b.proc.wait(timeout=30), 0)

    @staticmethod
    def make_cert(tmp, cn):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        cpath, kpath = os.path.join(tmp, "tls.crt"), os.path.join(tmp, "tls.key")
        with open(cpath, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(kpath, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        os.chmod(kpath, 0o600)
        ca = os.path.join(tmp, cn + ".ca.pem")
        shutil.copy(cpath, ca)
        return cpath, kpath, ca

    def test_connections_past_the_limit_wait_in_the_backlog(self):
        # operations.md: at max_connections the broker stops accepting, and
        # a new client waits in the listen backlog until a slot frees; it is
        # neither refused nor closed.
        b = self.broker(extra={"server": {"threads": 1, "max_connections": 2}}).start()
        held, answers, request = self.open_served(b, 2)
        self.assertTrue(all(b" 200 " in a for a in answers), answers)
        third = socket.create_connection(("127.0.0.1", b.port), timeout=10)  # the kernel completes it
        self.addCleanup(third.close)
        third.sendall(request)
        third.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            third.recv(4096)
        held[0].close()
        third.settimeout(10)
        self.assertIn(b" 200 ", third.recv(4096))
        self.assertIsNone(b.proc.poll(), b.log())

    def test_bursts_at_a_limit_below_the_worker_count(self):
        # More workers than connections: libmicrohttpd splits its own limit
        # over the workers, and a worker refusing a handed-over connection
        # deadlocked in 0.9.75. Every burst must be served, and the broker
        # must still stop cleanly.
        b = self.broker(extra={"server": {"threads": 8, "max_connections": 3, "per_ip_connections": 0}}).start()
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\nConnection: close\r\n\r\n".encode()

        def one(_):
            with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
                s.sendall(request)
                return s.recv(4096)

        with concurrent.futures.ThreadPoolExecutor(3) as ex:
            for _ in range(30):
                answers = list(ex.map(one, range(3)))
                self.assertTrue(all(b" 200 " in a for a in answers), answers)
        self.assertEqual(b.stop(), 0, b.log())

    def open_served(self, b, n):
        """n connections, each answered once, so each holds its slot:
        (sockets, answers, the request sent)."""
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{b.port}\r\n\r\n".encode()
        socks, answers = [], []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", b.port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(request)
            socks.append(s)
            answers.append(s.recv(4096))
        return socks, answers, request

    def test_per_ip_connection_limit_closes_the_extra_connection(self):
        b = self.broker(extra={"server": {"per_ip_connections": 3}}).start()
        _, answers, request = self.open_served(b, 3)
        self.assertTrue(all(b" 200 " in a for a in answers), answers)
        extra = socket.create_connection(("127.0.0.1", b.port), timeout=10)
        self.addCleanup(extra.close)
        try:
            extra.sendall(request)
            got = extra.recv(4096)
        except ConnectionError:
            got = b""
        self.assertEqual(got, b"")  # closed without an answer

    def test_per_ip_connections_zero_turns_the_limit_off(self):
        # configuration.md: 0 turns the per-IP limit off (behind a balancer).
        b = self.broker(extra={"server": {"per_ip_connections": 0}}).start()
        _, answers, _ = self.open_served(b, 80)  # past the default of 64
        self.assertEqual(sum(b" 200 " in a for a in answers), 80)

    def test_ipv6_loopback_listener(self):
        try:
            socket.create_server(("::1", 0), family=socket.AF_INET6).close()
        except OSError:
            self.skipTest("no IPv6 loopback on this machine")
        b = self.broker()
        b.config["listen"] = f"[::1]:{b.port}"
        b.url = f"http://[::1]:{b.port}"
        b.write_config()
        b.start()
        self.assertEqual(b.exchange(self.issuer.mint(), "web-deploy-prod").status_code, 200)
        with self.assertRaises(OSError):  # v6 only: nothing on 127.0.0.1
            socket.create_connection(("127.0.0.1", b.port), timeout=2).close()

    def test_listen_address_not_on_this_machine_is_named(self):
        b = self.broker()
        b.config["listen"] = "192.0.2.1:8080"  # TEST-NET-1: never a local address
        b.write_config()
        with self.assertRaises(RuntimeError) as cm:
            b.start(timeout=10)
        self.assertEqual(b.proc.returncode, 1, b.log())
        self.assertIn("address not available on this machine", str(cm.exception))

    def test_second_broker_on_the_same_port_is_refused(self):
        # The listener uses SO_REUSEPORT for reloads; a second process must
        # still not be able to share the port and answer part of the traffic.
        a = self.broker().start()
        b = self.broker()
        b.config["listen"] = f"127.0.0.1:{a.port}"
        b.write_config()
        with self.assertRaises(RuntimeError) as cm:
            b.start(timeout=10)
        self.assertEqual(b.proc.returncode, 1, b.log())
        self.assertIn("address in use", str(cm.exception))
        self.assertEqual(requests.get(a.url + "/readyz", timeout=5).status_code, 200)

    def test_tls_listener_and_reload(self):
        tmp = tempfile.mkdtemp()
        cpath, kpath, ca_a = self.make_cert(tmp, "first")
        b = self.broker(extra={"tls": {"cert": cpath, "key": kpath}})
        b.url = b.url.replace("http://", "https://")
        b.proc = subprocess.Popen([BIN, "serve", "--config", b.config_path],
                                  stderr=open(b.stderr_path, "w"), stdout=subprocess.DEVNULL)
        deadline = time.time() + 20
        ok = False
        while time.time() < deadline and not ok:
            try:
                ok = requests.get(b.url + "/readyz", verify=ca_a, timeout=1).status_code == 200
            except requests.RequestException:
                time.sleep(0.1)
        self.assertTrue(ok, b.log())
        r = requests.post(b.url + "/v1/token", verify=ca_a, data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": self.issuer.mint(),
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "audience": "web-deploy-prod"})
        self.assertEqual(r.status_code, 200, r.text)
        with self.assertRaises(requests.RequestException):
            requests.get(b.url.replace("https://", "http://") + "/healthz", timeout=2)
        # TLS 1.2 and 1.3 only (RFC 8996), even to a client that would take less
        for version, accepted in (("-tls1", False), ("-tls1_1", False), ("-tls1_2", True), ("-tls1_3", True)):
            out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{b.port}", version, "-cipher",
                                  "DEFAULT:@SECLEVEL=0", "-CAfile", ca_a], input="", capture_output=True,
                                 text=True, timeout=20)
            self.assertEqual(out.returncode == 0 and "Verify return code: 0 (ok)" in out.stdout, accepted,
                             (version, out.stdout[-400:], out.stderr[-400:]))
        # a renewed certificate is picked up on SIGHUP, without a restart
        _, _, ca_b = self.make_cert(tmp, "second")
        b.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 15
        while time.time() < deadline and "listener rebuilt" not in b.log():
            time.sleep(0.1)
        self.assertEqual(requests.get(b.url + "/healthz", verify=ca_b, timeout=5).status_code, 200, b.log())
        with self.assertRaises(requests.exceptions.SSLError):
            requests.get(b.url + "/healthz", verify=ca_a, timeout=5)


class ScaleOutTest(unittest.TestCase):
    """Three brokers behind nginx on loopback, Redis for replay."""

    def setUp(self):
        if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
            self.skipTest("nginx not installed")
        self.tmp = tempfile.mkdtemp(prefix="cibroker-scale-")
        self.issuer = Issuer().start()
        self.addCleanup(self.issuer.stop)
        self.redis, rport = start_redis(self.tmp)
        self.addCleanup(stop, self.redis)
        self.brokers = []
        for _ in range(3):
            b = Broker([github_issuer_config(self.issuer, single_use=True)], [jwt_policy()],
                       extra={"replay": {"redis": f"redis://127.0.0.1:{rport}"}}, audit_sync="always")
            self.addCleanup(b.stop)
            self.brokers.append(b.start())
        self.port = free_port()
        conf = os.path.join(self.tmp, "nginx.conf")
        upstreams = "\n".join(f"server 127.0.0.1:{b.port} max_fails=1 fail_timeout=5s;" for b in self.brokers)
        with open(conf, "w") as f:
            f.write(f"""daemon off; worker_processes 1; pid {self.tmp}/nginx.pid; error_log {self.tmp}/error.log;
user root;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {self.tmp}/body; proxy_temp_path {self.tmp}/proxy;
  fastcgi_temp_path {self.tmp}/fcgi; uwsgi_temp_path {self.tmp}/uwsgi; scgi_temp_path {self.tmp}/scgi;
  upstream brokers {{ {upstreams} }}
  server {{
    listen 127.0.0.1:{self.port};
    location / {{ proxy_pass http://brokers; proxy_next_upstream error timeout; proxy_http_version 1.1; }}
  }}
}}
""")
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = subprocess.Popen([exe, "-c", conf, "-p", self.tmp], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self.addCleanup(stop, self.nginx)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                if requests.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.1)

    def exchange(self, url, tok):
        return requests.post(url + "/v1/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": tok,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "audience": "web-deploy-prod"}, timeout=30)

    def test_replay_through_another_instance_refused(self):
        tok = self.issuer.mint()
        self.assertEqual(self.exchange(self.brokers[0].url, tok).status_code, 200)
        for b in self.brokers[1:]:
            r = self.exchange(b.url, tok)
            self.assertEqual(r.status_code, 400)
            self.assertEqual(r.json()["error"], "invalid_grant")
        self.assertEqual(self.exchange(self.url, tok).status_code, 400)

    def test_failed_exchange_gives_the_token_back(self):
        tok = self.issuer.mint()
        r = requests.post(self.brokers[0].url + "/v1/token", data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange", "subject_token": tok,
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt", "audience": "web-deploy-prod",
            "requested_token_type": "urn:cibroker:token-type:aws-credentials"})
        self.assertEqual(r.status_code, 400)  # refused before verification: nothing recorded
        self.issuer.set_down(False)
        bad_ref = self.issuer.mint({"ref": "refs/heads/dev"})
        self.assertEqual(self.exchange(self.brokers[0].url, bad_ref).status_code, 403)
        self.assertEqual(self.exchange(self.brokers[1].url, bad_ref).status_code, 403, "403 gave the jti back")
        self.assertEqual(self.exchange(self.brokers[2].url, tok).status_code, 200)
        self.assertEqual(self.exchange(self.brokers[0].url, tok).status_code, 400)

    def test_kill_instance_under_load_loses_no_record(self):
        answered = []
        lock = threading.Lock()
        tokens = [self.issuer.mint() for _ in range(300)]

        def worker(chunk):
            for t in chunk:
                try:
                    r = self.exchange(self.url, t)
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    with lock:
                        answered.append(minted_jti(r.json()))

        threads = [threading.Thread(target=worker, args=(tokens[i::6],)) for i in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        self.brokers[1].proc.send_signal(signal.SIGKILL)
        for t in threads:
            t.join()
        self.assertGreater(len(answered), 200)
        ids = audited_credential_ids(*(b.audit_path for b in self.brokers))
        self.assertEqual([j for j in answered if j not in ids], [])


if __name__ == "__main__":
    main()
