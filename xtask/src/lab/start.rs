//! Starting the lab's processes, each ready before the next depends on it: the inference
//! server, Siphon on two nodes, Prometheus, the TLS ingress, the relays, then the actors.

use super::*;

impl Lab {
    /// The inference server, in the server node.
    pub(super) fn start_server(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let mut server = self.topo.command("server", "python3");
        server
            .arg(self.lab_dir().join("inference_server.py"))
            .args([
                "--listen",
                self.topo.node("server").ip(),
                "--port",
                &SERVER_PORT.to_string(),
            ])
            .arg("--keys-file")
            .arg(self.out.join("server-keys.txt"))
            .args([
                "--rate-limit-rpm",
                &RATE_LIMIT_RPM.to_string(),
                "--tokens-per-second",
                "250",
                "--seed",
                "11",
            ])
            .arg("--log")
            .arg(self.out.join("server-requests.jsonl"))
            .arg("--ready-file")
            .arg(self.out.join("server-ready.json"));
        self.procs
            .spawn("server", server, &self.out.join("server.log"))?;
        wait_for(
            &self.out.join("server-ready.json"),
            "inference server",
            Duration::from_secs(20),
            stop,
        )?;

        Ok(())
    }

    /// Siphon on the server node and on the ingress node, ready before anything else starts.
    pub(super) fn start_agents(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        // A web-config file that turns nothing on (plain HTTP, no auth, as Prometheus here
        // scrapes), as a deployment that ships one would: the agents watch it for changes and
        // export the reload metrics the shipped rules alert on.
        let web_config = self.out.join("web-config.yml");
        std::fs::write(&web_config, "").context("writing the lab's web-config file")?;
        for (role, services) in [
            ("server", vec![format!("llm=:{SERVER_PORT}")]),
            (
                "ingress",
                vec![
                    format!("ingress=:{INGRESS_PORT}"),
                    format!("llm=:{SERVER_PORT}"),
                ],
            ),
        ] {
            let mut c = self
                .topo
                .command(role, self.siphon.to_str().context("siphon path")?);
            c.args([
                "run",
                "--iface",
                "eth0",
                // All addresses of its node: Prometheus in the server node scrapes both.
                "--listen",
                &format!("0.0.0.0:{SIPHON_PORT}"),
            ])
            .args(["--sweep-interval", "1s", "--exchange-idle-timeout", "3s"])
            .arg("--exchange-log")
            .arg(self.out.join(format!("siphon-{role}-exchanges.jsonl")))
            .arg("--detection-log")
            .arg(self.out.join(format!("siphon-{role}-detections.jsonl")))
            .arg("--detect-config")
            .arg(configs::detect_config_path(&self.out))
            .arg("--web-config-file")
            .arg(&web_config)
            .env("SIPHON_KEY_HASH_SECRET", KEY_HASH_SECRET);
            // haproxy adds one X-Forwarded-For hop: on the server's requests, and on the
            // plaintext requests it sends out of the ingress node itself.
            c.args(["--trusted-proxy-hops", "1"]);
            for s in services {
                c.args(["--service", &s]);
            }
            self.procs.spawn(
                &format!("siphon-{role}"),
                c,
                &self.out.join(format!("siphon-{role}.log")),
            )?;
        }
        for role in ["server", "ingress"] {
            self.wait_http(
                role,
                &format!("http://127.0.0.1:{SIPHON_PORT}/readyz"),
                Duration::from_secs(30),
                stop,
            )
            .with_context(|| {
                format!(
                    "Siphon on {role} did not become ready; see {}",
                    self.out.join(format!("siphon-{role}.log")).display()
                )
            })?;
        }
        Ok(())
    }

    /// A real Prometheus with the shipped rules, scraping both agents (checked at the end).
    pub(super) fn start_prometheus(&mut self) -> anyhow::Result<()> {
        let targets: Vec<String> = ["server", "ingress"]
            .iter()
            .map(|r| format!("{}:{SIPHON_PORT}", self.topo.node(r).ip()))
            .collect();
        let prom_cfg = prom::write_config(&self.out, &self.root, &targets)?;
        self.procs.spawn(
            "prometheus",
            prom::command(&self.topo, &prom_cfg, &self.out),
            &self.out.join("prometheus.log"),
        )?;

        Ok(())
    }

    /// The ingress: haproxy terminating TLS.
    pub(super) fn start_ingress(&mut self, stop: &AtomicBool) -> anyhow::Result<()> {
        let cfg = configs::haproxy(
            &self.out,
            self.topo.node("ingress").ip(),
            INGRESS_PORT,
            self.topo.node("server").ip(),
            SERVER_PORT,
        )?;
        let mut haproxy = self.topo.command("ingress", "haproxy");
        haproxy.arg("-db").arg("-f").arg(&cfg);
        self.procs
            .spawn("ingress-haproxy", haproxy, &self.out.join("haproxy.log"))?;
        self.wait_tcp(
            "ingress",
            self.topo.node("ingress").ip(),
            INGRESS_PORT,
            stop,
        )?;

        Ok(())
    }

    /// The relays: a SOCKS5 server (dante) and LiteLLM, ready before the actors start.
    pub(super) fn start_relays(
        &mut self,
        keys: &actors::Keys,
        stop: &AtomicBool,
    ) -> anyhow::Result<()> {
        let cfg = configs::dante(&self.out, self.topo.node("relay2").ip(), SOCKS_PORT)?;
        let mut danted = self.topo.command("relay2", "danted");
        danted.arg("-f").arg(&cfg);
        self.procs
            .spawn("relay2-danted", danted, &self.out.join("danted.log"))?;
        self.start_litellm(keys)?;
        self.wait_tcp("relay2", self.topo.node("relay2").ip(), SOCKS_PORT, stop)?;
        self.wait_http(
            "relay1",
            &format!(
                "http://{}:{LITELLM_PORT}/health/liveliness",
                self.topo.node("relay1").ip()
            ),
            Duration::from_secs(120),
            stop,
        )
        .with_context(|| {
            format!(
                "LiteLLM did not start; see {}",
                self.out.join("litellm.log").display()
            )
        })?;
        Ok(())
    }

    pub(super) fn start_actors(&mut self, actors: &[actors::Actor]) -> anyhow::Result<()> {
        for a in actors {
            let cmd = a.command(&self.topo, &self.lab_dir(), &self.out);
            let (name, log) = (
                format!("actor-{}", a.id),
                self.out.join(format!("actor-{}.log", a.id)),
            );
            if a.program.is_some() {
                self.procs.spawn_group(&name, cmd, &log)?;
            } else {
                self.procs.spawn(&name, cmd, &log)?;
            }
            println!(
                "lab: actor {:<6} {:<11} label={:<9} from {} ({} key(s))",
                a.id,
                a.kind_label(),
                a.label,
                self.topo.node(a.node).ns,
                a.keys.len()
            );
        }

        Ok(())
    }

    pub(super) fn start_litellm(&mut self, keys: &actors::Keys) -> anyhow::Result<()> {
        let dir = self.out.join("litellm");
        std::fs::create_dir_all(&dir)?;
        cmd::run(
            Command::new("python3")
                .arg(self.lab_dir().join("litellm/render_config.py"))
                .args([
                    "--ingress-base",
                    &format!("https://ingress.lab:{INGRESS_PORT}/v1"),
                ])
                .args(["--upstream-keys", &keys.relay_upstream.join(",")])
                .arg("--ca-file")
                .arg(self.out.join("ca.pem"))
                .arg("--out")
                .arg(dir.join("config.yaml")),
        )?;
        let mut c = self
            .topo
            .priority_command("relay1", &format!("{LITELLM_VENV}/bin/litellm"));
        c.arg("--config")
            .arg(dir.join("config.yaml"))
            .args([
                "--host",
                self.topo.node("relay1").ip(),
                "--port",
                &LITELLM_PORT.to_string(),
            ])
            .current_dir(&dir)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("SSL_CERT_FILE", self.out.join("ca.pem"))
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY");
        self.procs
            .spawn("relay1-litellm", c, &self.out.join("litellm.log"))?;
        Ok(())
    }
}
