//! Configuration files of the lab's real components (haproxy, dante) and its TLS certificates.

use std::{path::Path, path::PathBuf, process::Command};

use anyhow::Context as _;

use crate::cmd;

/// A lab CA and a certificate for `ingress.lab` signed by it (`ca.pem`, `ingress.pem`).
pub fn certificates(out: &Path) -> anyhow::Result<()> {
    let o = |name: &str| out.join(name);
    let ext = o("ingress.ext");
    std::fs::write(&ext, "subjectAltName=DNS:ingress.lab\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n")?;
    let openssl = |args: &[&str]| -> anyhow::Result<()> {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(out);
        cmd::run(&mut c).context("openssl (the lab's certificates)")
    };
    let ec_key = |name: &str| {
        openssl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            name,
        ])
    };
    ec_key("ca.key")?;
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-days",
        "2",
        "-subj",
        "/CN=Siphon Lab CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-out",
        "ca.pem",
    ])?;
    ec_key("ingress.key")?;
    openssl(&[
        "req",
        "-new",
        "-key",
        "ingress.key",
        "-subj",
        "/CN=ingress.lab",
        "-out",
        "ingress.csr",
    ])?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        "ingress.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ingress.ext",
        "-out",
        "ingress.crt",
    ])?;
    let pem = [
        std::fs::read_to_string(o("ingress.crt"))?,
        std::fs::read_to_string(o("ingress.key"))?,
    ]
    .concat();
    std::fs::write(o("ingress.pem"), pem)?;
    Ok(())
}

/// haproxy: TLS from clients, plaintext HTTP/1.1 to the server with X-Forwarded-For, pooled
/// server-side connections (as a real ingress does).
pub fn haproxy(
    out: &Path,
    ip: &str,
    port: u16,
    server_ip: &str,
    server_port: u16,
) -> anyhow::Result<PathBuf> {
    let path = out.join("haproxy.cfg");
    let pem = out.join("ingress.pem");
    std::fs::write(
        &path,
        format!(
            "global\n  maxconn 4096\n  nbthread 1\n\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 300s\n  timeout server 300s\n  timeout http-keep-alive 60s\n  option http-keep-alive\n  http-reuse always\n\nfrontend ingress\n  bind {ip}:{port} ssl crt {pem} alpn http/1.1\n  option forwardfor\n  default_backend inference\n\nbackend inference\n  server s1 {server_ip}:{server_port}\n",
            pem = pem.display()
        ),
    )?;
    Ok(path)
}

/// dante: a SOCKS5 relay without authentication, for lab clients only.
pub fn dante(out: &Path, ip: &str, port: u16) -> anyhow::Result<PathBuf> {
    let path = out.join("danted.conf");
    let subnet = format!("{}.0/24", super::topology::SUBNET);
    std::fs::write(
        &path,
        format!(
            "logoutput: stderr\ninternal: {ip} port = {port}\nexternal: eth0\nclientmethod: none\nsocksmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\nclient pass {{\n  from: {subnet} to: 0.0.0.0/0\n}}\nsocks pass {{\n  from: {subnet} to: {subnet}\n}}\n"
        ),
    )?;
    Ok(path)
}

/// Entities per type the lab's detectors keep: the shipped configuration's, smaller so that an
/// outside flood actor (a few thousand fresh keys in a short run) overflows the table and the
/// lab shows what eviction does under a flood. Memory knob only: every threshold stays the
/// shipped one.
pub const LAB_MAX_ENTITIES_PER_TYPE: usize = 2000;

pub fn detect_config_path(out: &Path) -> PathBuf {
    out.join("detect.toml")
}

/// The detector configuration of the lab's agents and of its `siphon detect` runs: the shipped
/// file (deploy/kubernetes/config/detect.toml) with [`LAB_MAX_ENTITIES_PER_TYPE`].
pub fn detect_config(out: &Path, root: &Path) -> anyhow::Result<PathBuf> {
    let shipped = root.join("deploy/kubernetes/config/detect.toml");
    let text = std::fs::read_to_string(&shipped)
        .with_context(|| format!("reading {}", shipped.display()))?;
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("max_entities_per_type"))
        .with_context(|| format!("no max_entities_per_type in {}", shipped.display()))?;
    let lab = text.replacen(
        line,
        &format!("max_entities_per_type = {LAB_MAX_ENTITIES_PER_TYPE}"),
        1,
    );
    let path = detect_config_path(out);
    std::fs::write(&path, lab)?;
    Ok(path)
}
