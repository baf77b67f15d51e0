//! The detector end to end on synthetic record streams whose ground truth is known by
//! construction (who is a harvester, who a person).

use std::net::{IpAddr, SocketAddr};

use super::{
    config::Config,
    entity::EntityType,
    events::{DetectionEvent, Kind, State},
    export::DetectorMetrics,
    input::{HttpObs, Observation, Transport},
    Detector,
};

mod relay;

const S: u64 = 1_000_000_000;

/// A tiny deterministic generator (tests must not depend on a random seed they cannot see).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Each exchange on a connection of its own (a proxy's pool), as on the wire.
fn next_peer() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    SocketAddr::new(
        IpAddr::V4(std::net::Ipv4Addr::new(
            10,
            9,
            (n >> 16) as u8,
            (n >> 8) as u8,
        )),
        1024 + (n & 0xff) as u16,
    )
}

fn http(key: &str, ip: &str, start: u64, dur: u64, req: u64, resp: u64, ua: &str) -> Observation {
    let ip: IpAddr = ip.parse().unwrap();
    Observation {
        start_ns: start,
        end_ns: start + dur,
        peer: next_peer(),
        server: "10.0.0.1:8000".parse().unwrap(),
        seq: 1,
        request_bytes: req,
        response_bytes: resp,
        streamed_chunks: 1,
        http: Some(HttpObs {
            api_key_hash: Some(key.to_owned()),
            api_key_hash_prev: None,
            client_ip: ip,
            claimed_origins: 0,
            status: Some(200),
            event_stream: false,
            user_agent_family: ua.to_owned().into(),
        }),
        transport: Transport::default(),
    }
}

/// A person: think times of 10-60 s, short answers (60-500 tokens = 240-2000 bytes).
fn person(key: &str, ip: &str, from: u64, until: u64, rng: &mut Lcg) -> Vec<Observation> {
    let mut t = from + (rng.next() * 30.0) as u64 * S;
    let mut v = Vec::new();
    while t < until {
        let dur = (2.0 + rng.next() * 6.0) * 1e9;
        let resp = 240 + (rng.next() * 1760.0) as u64;
        v.push(http(
            key,
            ip,
            t,
            dur as u64,
            400 + (rng.next() * 2000.0) as u64,
            resp,
            "python_openai",
        ));
        t += dur as u64 + ((10.0 + rng.next() * 50.0) * 1e9) as u64;
    }
    v
}

/// A harvester: back to back, long answers (1000-2000 tokens), short prompts.
fn harvester(key: &str, ip: &str, from: u64, until: u64, rng: &mut Lcg) -> Vec<Observation> {
    let mut t = from;
    let mut v = Vec::new();
    while t < until {
        let dur = (5.0 + rng.next() * 3.0) * 1e9;
        let resp = 4000 + (rng.next() * 4000.0) as u64;
        v.push(http(
            key,
            ip,
            t,
            dur as u64,
            200 + (rng.next() * 100.0) as u64,
            resp,
            "curl",
        ));
        t += dur as u64 + (rng.next() * 0.05 * 1e9) as u64;
    }
    v
}

/// A batch summariser: long inputs, short outputs, machine pace, all day.
fn batch(key: &str, ip: &str, from: u64, until: u64, rng: &mut Lcg) -> Vec<Observation> {
    let mut t = from;
    let mut v = Vec::new();
    while t < until {
        let dur = (1.0 + rng.next()) * 1e9;
        v.push(http(
            key,
            ip,
            t,
            dur as u64,
            20_000 + (rng.next() * 20_000.0) as u64,
            400 + (rng.next() * 400.0) as u64,
            "python_requests",
        ));
        t += dur as u64 + (rng.next() * 0.2 * 1e9) as u64;
    }
    v
}

fn by_end(mut v: Vec<Observation>) -> Vec<Observation> {
    v.sort_by_key(|o| o.end_ns);
    v
}

fn run(det: &mut Detector, obs: &[Observation]) -> Vec<DetectionEvent> {
    for o in obs {
        det.observe(o.clone());
    }
    det.finish();
    det.take_events()
}

fn raised(ev: &[DetectionEvent], kind: Kind) -> Vec<&str> {
    ev.iter()
        .filter(|e| e.kind == kind && e.state == State::Raised)
        .map(|e| e.entity.value.as_str())
        .collect()
}

fn population(rng: &mut Lcg, minutes: u64) -> Vec<Observation> {
    let until = minutes * 60 * S;
    let mut v = Vec::new();
    for i in 0..12 {
        // An office: six people behind one NAT address, six on their own.
        let ip = if i < 6 {
            "198.51.100.7".to_owned()
        } else {
            format!("203.0.113.{i}")
        };
        v.extend(person(&format!("person{i:02}"), &ip, S, until, rng));
    }
    v.extend(batch("batchjob", "192.0.2.50", S, until, rng));
    v
}

#[test]
fn a_harvester_is_raised_quickly_and_people_and_batch_jobs_are_not() {
    let mut rng = Lcg(7);
    let mut obs = population(&mut rng, 20);
    obs.extend(harvester(
        "harvester",
        "192.0.2.99",
        60 * S,
        20 * 60 * S,
        &mut rng,
    ));
    let mut det = Detector::new(Config::default()).unwrap();
    det.log_events = false;
    let ev = run(&mut det, &by_end(obs));
    let h = raised(&ev, Kind::Harvest);
    assert!(h.contains(&"harvester"), "{h:?}");
    assert!(h.contains(&"192.0.2.99"), "{h:?}");
    for e in &ev {
        let v = &e.entity.value;
        assert!(
            !v.starts_with("person") && v != "batchjob" && v != "198.51.100.7" && v != "192.0.2.50",
            "benign raised: {e:?}"
        );
    }
    let first = ev
        .iter()
        .find(|e| e.entity.value == "harvester" && e.state == State::Raised)
        .unwrap();
    let after = (first.detected_at_ns - first.first_seen_ns) as f64 / 1e9;
    assert!(after <= 120.0, "raised after {after} s");
    assert!(first
        .reasons
        .iter()
        .any(|r| r.feature == "output_tokens_per_second"));
}

#[test]
fn a_detection_clears_once_its_windows_have_passed() {
    let mut rng = Lcg(11);
    let mut obs = population(&mut rng, 150);
    obs.extend(harvester(
        "harvester",
        "192.0.2.99",
        60 * S,
        15 * 60 * S,
        &mut rng,
    ));
    let mut det = Detector::new(Config::default()).unwrap();
    det.log_events = false;
    let ev = run(&mut det, &by_end(obs));
    let states: Vec<_> = ev
        .iter()
        .filter(|e| e.entity.value == "harvester" && e.kind == Kind::Harvest)
        .map(|e| (e.state, e.detected_at_ns / S))
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert_eq!(states[0].0, State::Raised);
    assert_eq!(states[1].0, State::Cleared);
    // Cleared once the hour-long window no longer holds enough of it: after the last request
    // (15 min) and no later than 15 min + the longest window.
    assert!(
        states[1].1 > 15 * 60 && states[1].1 <= 15 * 60 + 3600 + 60,
        "{states:?}"
    );
}

#[test]
fn a_restart_mid_run_raises_nothing_for_benign_clients() {
    let mut rng = Lcg(13);
    let obs = by_end(population(&mut rng, 60));
    let half = obs.len() / 2;
    let mut restarted = Detector::new(Config::default()).unwrap();
    restarted.log_events = false;
    let ev = run(&mut restarted, &obs[half..]);
    assert!(ev.is_empty(), "{ev:?}");
}

#[test]
fn the_allow_list_keeps_scores_but_never_raises() {
    let mut rng = Lcg(17);
    let obs = by_end(harvester(
        "eval-suite",
        "192.0.2.99",
        S,
        10 * 60 * S,
        &mut rng,
    ));
    let cfg = Config::parse(
        "[[allow]]\napi_key_hash = \"eval-suite\"\nreason = \"nightly evaluation\"\n[[allow]]\nclient = \"192.0.2.0/24\"\nreason = \"eval runners\"\n",
    )
    .unwrap();
    let mut det = Detector::new(cfg).unwrap();
    det.log_events = false;
    let ev = run(&mut det, &obs);
    let non_prefix: Vec<_> = ev
        .iter()
        .filter(|e| e.entity.ty != "prefix" && e.entity.ty != "ja4t")
        .collect();
    assert!(non_prefix.is_empty(), "{non_prefix:?}");
    let j = det.judged();
    let key = j.iter().find(|j| j.value == "eval-suite").unwrap();
    assert!(key.scores[0] > 0.7, "still scored: {:?}", key.scores);
}

#[test]
fn a_hydra_of_keys_in_lockstep_is_one_cluster() {
    let mut obs = Vec::new();
    let mut rng = Lcg(23);
    // 12 keys, each on its own address, each paced at one request per ~10 s, long outputs.
    for k in 0..12u64 {
        let mut t = S + k * S * 10 / 12;
        while t < 15 * 60 * S {
            let dur = (6.0 + rng.next()) * 1e9;
            obs.push(http(
                &format!("hydra{k:02}"),
                &format!("192.0.2.{}", 100 + k),
                t,
                dur as u64,
                250,
                7000,
                "python_openai",
            ));
            t += ((10.5 + rng.next()) * 1e9) as u64;
        }
    }
    obs.extend(population(&mut rng, 15));
    let mut det = Detector::new(Config::default()).unwrap();
    det.log_events = false;
    let ev = run(&mut det, &by_end(obs));
    let clusters = det.clusters();
    let hydra = clusters
        .iter()
        .find(|c| c.members.iter().any(|m| m.starts_with("hydra")))
        .expect("a cluster");
    let members = hydra
        .members
        .iter()
        .filter(|m| m.starts_with("hydra"))
        .count();
    assert!(members >= 11, "{:?}", hydra.members);
    assert!(
        hydra.members.iter().all(|m| m.starts_with("hydra")),
        "{:?}",
        hydra.members
    );
    assert!(
        ev.iter().any(|e| e.entity.ty == "cluster"
            && e.kind == Kind::Harvest
            && e.state == State::Raised),
        "cluster raised"
    );
}

#[test]
fn a_flood_of_new_clients_stays_within_the_table_and_the_series_bound() {
    let cfg = Config::parse("max_entities_per_type = 2000\ntop_k = 20\n").unwrap();
    let registry = prometheus::Registry::new();
    let mut metrics = DetectorMetrics::new(&registry).unwrap();
    let mut det = Detector::new(cfg).unwrap();
    det.log_events = false;
    let mut rng = Lcg(29);
    // 100,000 clients, each with its own key and address, one request each, over 10 minutes.
    for i in 0..100_000u64 {
        let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let t = S + i * 6_000_000;
        det.observe(http(
            &format!("flood{i}"),
            &ip,
            t,
            S / 2,
            300,
            1000 + (rng.next() * 100.0) as u64,
            "other",
        ));
        if i % 10_000 == 0 {
            metrics.update(&det);
        }
    }
    det.finish();
    metrics.update(&det);
    for ty in EntityType::TRACKED {
        let t = det.table(ty).unwrap();
        assert!(t.map.len() <= 2000, "{ty:?}: {}", t.map.len());
    }
    assert!(det.table(EntityType::ApiKey).unwrap().evicted >= 98_000);
    // Memory: within the README's formula (per entity ≤ 4 KiB) for 5 tables.
    assert!(det.memory_bytes <= 5 * 2000 * 4096, "{}", det.memory_bytes);
    // Series: per kind and type at most top_k by score + top_k by volume + raised + _other.
    let text = prometheus::TextEncoder::new()
        .encode_to_string(&registry.gather())
        .unwrap();
    let score_series = text
        .lines()
        .filter(|l| l.starts_with("siphon_entity_score{"))
        .count();
    assert!(score_series <= 2 * (3 * 20 + 6), "{score_series} series");
    assert!(text.contains("siphon_entities_created_total{entity_type=\"api_key\"} 100000"));
}

#[test]
fn live_reports_and_logged_lines_give_the_same_events() {
    use crate::{
        detect::input::{observation_of, parse_line},
        pipeline::report::{ExchangeReport, HttpInfo, Report, TcpInfo},
    };
    let mut rng = Lcg(31);
    let mut obs = population(&mut rng, 15);
    obs.extend(harvester(
        "harvester",
        "192.0.2.99",
        60 * S,
        15 * 60 * S,
        &mut rng,
    ));
    let reports: Vec<Report> = by_end(obs)
        .into_iter()
        .map(|o| {
            let h = o.http.clone().unwrap();
            Report::Exchange(Box::new(ExchangeReport {
                ifindex: 2,
                client: o.peer,
                server: o.server,
                seq: 1,
                part: 0,
                end: "next_request",
                request_start_ns: o.start_ns,
                request_start_unix_ns: Some(o.start_ns + 1_700_000_000 * S),
                request_bytes: o.request_bytes,
                response_bytes: o.response_bytes,
                request_packets: 1,
                response_packets: 1,
                ttfb_seconds: Some(0.0),
                response_duration_seconds: Some((o.end_ns - o.start_ns) as f64 / 1e9),
                streamed_chunks: 1,
                http: Some(HttpInfo {
                    method: "POST",
                    route: "chat_completions",
                    path: "/v1/chat/completions".into(),
                    host: None,
                    status: h.status,
                    status_class: "2xx",
                    event_stream: false,
                    user_agent_family: if h.user_agent_family == "curl" {
                        "curl"
                    } else {
                        "python_openai"
                    },
                    api_key_hash: h.api_key_hash,
                    api_key_hash_prev: None,
                    client_ip: h.client_ip,
                    forwarded_for: vec![h.client_ip],
                    ja4h: String::new(),
                    head_truncated: false,
                    decode_error: None,
                }),
                tls: None,
                tcp: TcpInfo::default(),
            }))
        })
        .collect();
    let mut live = Detector::new(Config::default()).unwrap();
    let mut offline = Detector::new(Config::default()).unwrap();
    live.log_events = false;
    offline.log_events = false;
    for r in &reports {
        live.observe(observation_of(r).unwrap());
        offline.observe(parse_line(&serde_json::to_string(r).unwrap()).unwrap());
    }
    live.finish();
    offline.finish();
    let (a, b) = (live.take_events(), offline.take_events());
    assert!(!a.is_empty());
    assert_eq!(a, b);
}

#[test]
fn prefixes_and_browser_stacks() {
    use super::{browser_like_ja4, prefix_of};
    assert_eq!(
        prefix_of("192.0.2.77".parse().unwrap(), 24, 48),
        "192.0.2.0/24"
    );
    assert_eq!(
        prefix_of("2001:db8:1:2::5".parse().unwrap(), 24, 48),
        "2001:db8:1::/48"
    );
    assert!(browser_like_ja4("t13d1516h2_8daaf6152771_02713d6af862"));
    assert!(!browser_like_ja4("t13d3112h1_e8f1e7e78f70_b26ce05bbdd6"));
    assert!(!browser_like_ja4("t13d0512h2_e8f1e7e78f70_b26ce05bbdd6"));
}

#[test]
fn monitoring_scrapes_are_not_scored() {
    // Prometheus scraping an agent: every 5 s, a tiny request, a 100 KB answer.
    let mut det = Detector::new(Config::default()).unwrap();
    det.log_events = false;
    for i in 0..2000u64 {
        let mut o = http(
            "none",
            "192.0.2.9",
            S + i * 5 * S,
            S / 10,
            150,
            100_000,
            "other",
        );
        o.server = "192.0.2.1:9947".parse().unwrap();
        o.http.as_mut().unwrap().api_key_hash = None;
        det.observe(o);
    }
    det.finish();
    assert!(det.take_events().is_empty());
    assert_eq!(det.stats.ignored, 2000);
    assert_eq!(det.table(EntityType::ClientIp).unwrap().map.len(), 0);
}

#[test]
fn retry_gaps_after_429_and_requests_per_connection_are_measured() {
    let mut det = Detector::new(Config::default()).unwrap();
    det.log_events = false;
    let mut t = S;
    // A client that gets a 429 on every other request and retries 2 s after the answer, on
    // its own connections (seq 1, then 2), from its own address.
    for i in 0..20u64 {
        let mut o = http("retrier", "192.0.2.44", t, S / 2, 300, 400, "curl");
        o.peer = "192.0.2.44:40000".parse().unwrap();
        o.peer.set_port(40000 + (i / 2) as u16);
        o.seq = 1 + (i % 2) as u32;
        o.http.as_mut().unwrap().client_ip = o.peer.ip();
        if i % 2 == 0 {
            o.http.as_mut().unwrap().status = Some(429);
        }
        det.observe(o);
        t += S / 2 + 2 * S;
    }
    det.finish();
    let st = det.entity(EntityType::ApiKey, "retrier").unwrap();
    let f = super::judge::window_features(det.config(), st, 1, det.clock_ns());
    assert_eq!(f.throttled_share, 0.5);
    assert!(
        (f.retry_after_429_seconds.unwrap() - 2.0).abs() < 1e-3,
        "{f:?}"
    );
    assert_eq!(f.requests_per_connection, Some(2.0));
    assert_eq!(st.request_sizes.estimate(), 1);
}
