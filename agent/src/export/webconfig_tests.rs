//! The web config against real clients: certificates made by `openssl`, requests by `curl`
//! (both installed by `cargo xtask setup`), the listener served as `siphon run` serves it.

use super::*;
use crate::export::webconfig_reload::{Poll, Reloader};
use std::process::Command;

fn parse(text: &str) -> anyhow::Result<WebConfig> {
    WebConfig::parse(text, Path::new("/nonexistent"))
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn empty_and_auth_only_configs_parse() {
    let c = parse("").expect("empty");
    assert!(c.tls.is_none() && c.auth.is_none());
    let hash = bcrypt::hash("pw", 4).expect("hash");
    let c = parse(&format!("basic_auth_users:\n  prom: '{hash}'\n")).expect("auth");
    assert!(c.tls.is_none() && c.auth.is_some());
}

#[test]
fn unsupported_or_wrong_settings_are_refused_by_name() {
    assert!(
        err("tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [x]\n")
            .contains("cipher_suites")
    );
    assert!(err("http_server_config:\n  http2: false\n").contains("http_server_config"));
    assert!(err("basic_auth_users:\n  prom: plaintext\n").contains("not a bcrypt hash"));
    let dir = certs();
    let base = |extra: &str| {
        format!(
            "tls_server_config:\n  cert_file: {d}/server.crt\n  key_file: {d}/server.key\n{extra}",
            d = dir.display()
        )
    };
    assert!(err(&base("  client_auth_type: RequireAnyClientCert\n")).contains("not supported"));
    assert!(
        err(&base("  client_auth_type: RequireAndVerifyClientCert\n"))
            .contains("needs client_ca_file")
    );
    assert!(err(&base("  min_version: SSL3\n")).contains("SSL3"));
    assert!(
        err("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: x\n")
            .contains("cert_file")
    );
    parse(&base("  min_version: TLS13\n")).expect("TLS 1.3 only");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made once per test run.
fn certs() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("siphon-webconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let script = r#"set -e
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -subj /CN=siphon-test-ca -days 2 -out ca.crt
for who in server client; do
  key $who.key
  openssl req -new -key $who.key -subj /CN=$who -out $who.csr
done
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'extendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile $who.ext -out $who.crt 2>/dev/null
done
# A second CA and server certificate, for rotation.
key ca2.key
openssl req -x509 -new -key ca2.key -subj /CN=siphon-test-ca2 -days 2 -out ca2.crt
openssl x509 -req -in server.csr -CA ca2.crt -CAkey ca2.key -CAcreateserial -days 2 \
  -extfile server.ext -out server2.crt 2>/dev/null
"#;
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .output()
            .expect("openssl (cargo xtask setup installs it)");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
    .clone()
}

/// Serves a stand-in router with `config` (written to a file of its own beside the
/// certificates) on a loopback port for the length of `f`, which gets the file and a reloader.
fn with_server(config: &str, f: impl FnOnce(std::net::SocketAddr, &Path, &mut Reloader)) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = certs().join(format!("web-{n}.yml"));
    std::fs::write(&file, config).expect("config file");
    let live = LiveWebConfig::load(Some(&file)).expect("config");
    let registry = prometheus::Registry::new();
    let mut reloader = Reloader::new(&live, &registry)
        .expect("metrics")
        .expect("a reloader for a file");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/metrics", axum::routing::get(|| async { "metrics\n" }))
        .route("/healthz", axum::routing::get(|| async { "ok\n" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        rt.block_on(async {
            let shutdown = async {
                let _ = stopped.await;
            };
            // Bounded, whatever the test does.
            let _ = tokio::time::timeout(
                Duration::from_secs(60),
                serve(listener, app, live, shutdown),
            )
            .await;
        })
    });
    f(addr, &file, &mut reloader);
    let _ = stop.send(());
    let _ = server.join();
}

/// `curl`'s HTTP status for `url` ("000": no HTTP answer, e.g. a refused handshake).
fn curl(url: &str, extra: &[&str]) -> String {
    curl_with_ca(url, &certs().join("ca.crt"), extra)
}

fn curl_with_ca(url: &str, ca: &Path, extra: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (cargo xtask setup installs it)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn tls_and_basic_auth_hold() {
    let hash = bcrypt::hash("right-password", 4).expect("hash");
    let config = format!(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n\
         basic_auth_users:\n  prom: {hash}\n"
    );
    with_server(&config, |addr, _, _| {
        let https = format!("https://{addr}/metrics");
        assert_eq!(
            curl(&format!("http://{addr}/metrics"), &[]),
            "000",
            "plain HTTP on the TLS port gets no answer"
        );
        assert_eq!(curl(&https, &[]), "401", "no credentials");
        assert_eq!(curl(&https, &["-u", "prom:wrong"]), "401", "wrong password");
        assert_eq!(curl(&https, &["-u", "nobody:right-password"]), "401");
        assert_eq!(curl(&https, &["-u", "prom:right-password"]), "200");
        // Again, now from the cache of successful checks.
        assert_eq!(curl(&https, &["-u", "prom:right-password"]), "200");
        assert_eq!(curl(&https, &["-u", "prom:wrong"]), "401", "not cached");
        assert_eq!(
            curl(&format!("https://{addr}/healthz"), &[]),
            "200",
            "probes"
        );
        assert_eq!(
            curl(&https, &["--tls-max", "1.1", "-u", "prom:right-password"]),
            "000",
            "TLS below 1.2 refused"
        );
    });
}

#[test]
fn client_certificates_are_required_when_configured() {
    let config = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n  \
                  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n";
    with_server(config, |addr, _, _| {
        let url = format!("https://{addr}/metrics");
        let dir = certs();
        let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
        let (cert, key) = (cert.to_string_lossy(), key.to_string_lossy());
        assert_eq!(curl(&url, &[]), "000", "no client certificate");
        // The server's own certificate is signed by the same CA but is not for client auth.
        let (scert, skey) = (dir.join("server.crt"), dir.join("server.key"));
        assert_eq!(
            curl(
                &url,
                &[
                    "--cert",
                    &scert.to_string_lossy(),
                    "--key",
                    &skey.to_string_lossy()
                ]
            ),
            "000",
            "a certificate without clientAuth usage"
        );
        assert_eq!(curl(&url, &["--cert", &cert, "--key", &key]), "200");
    });
}

#[test]
fn basic_credentials_parse() {
    let b64 = base64::engine::general_purpose::STANDARD.encode("u:p:q");
    let v = format!("Basic {b64}");
    assert_eq!(
        basic_credentials(v.as_bytes()),
        Some(("u".to_owned(), b"p:q".to_vec()))
    );
    assert_eq!(basic_credentials(b"Bearer x"), None);
    assert_eq!(basic_credentials(b"Basic !!!"), None);
}

/// A rotated certificate and changed users apply without a restart; a broken file or one that
/// turns TLS off keeps the config in force.
#[test]
fn changed_files_are_reloaded_and_broken_ones_kept() {
    let (old, new) = (
        bcrypt::hash("old-password", 4).expect("hash"),
        bcrypt::hash("new-password", 4).expect("hash"),
    );
    let config = |cert: &str, hash: &str| {
        format!(
            "tls_server_config:\n  cert_file: {cert}\n  key_file: server.key\n\
             basic_auth_users:\n  prom: {hash}\n"
        )
    };
    with_server(&config("server.crt", &old), |addr, file, reloader| {
        let url = format!("https://{addr}/metrics");
        let ca2 = certs().join("ca2.crt");
        assert_eq!(reloader.poll(), Poll::Unchanged);
        assert_eq!(curl(&url, &["-u", "prom:old-password"]), "200");
        assert_eq!(
            curl_with_ca(&url, &ca2, &["-u", "prom:old-password"]),
            "000"
        );

        std::fs::write(file, config("server2.crt", &new)).expect("rewrite");
        assert_eq!(reloader.poll(), Poll::Reloaded);
        assert_eq!(
            curl(&url, &["-u", "prom:new-password"]),
            "000",
            "the old CA no longer verifies the server"
        );
        assert_eq!(
            curl_with_ca(&url, &ca2, &["-u", "prom:new-password"]),
            "200"
        );
        assert_eq!(
            curl_with_ca(&url, &ca2, &["-u", "prom:old-password"]),
            "401"
        );

        std::fs::write(file, "basic_auth_users: [not, a, map]\n").expect("break");
        assert!(matches!(reloader.poll(), Poll::Kept(_)));
        assert_eq!(reloader.poll(), Poll::Unchanged, "reported once per change");
        std::fs::write(file, format!("basic_auth_users:\n  prom: {new}\n")).expect("no TLS");
        assert!(matches!(reloader.poll(), Poll::Kept(p) if p.contains("restart")));
        assert_eq!(
            curl_with_ca(&url, &ca2, &["-u", "prom:new-password"]),
            "200"
        );
    });
}
