//! The kinds of clients in the synthetic population: benign ones (including the heavy users
//! that are the real false-alarm risk) and attackers (including held-out variants that tuning
//! never sees).

use rand::Rng;

use super::synth::{Instance, World, NS, T0};

fn addr(block: u32, i: u32) -> String {
    format!(
        "{}.{}.{}.{}",
        20 + block,
        (i >> 16) & 255,
        (i >> 8) & 255,
        1 + (i & 255) % 254
    )
}

fn instance(
    w: &mut World<'_>,
    id: String,
    kind: &'static str,
    label: &'static str,
    keys: &[u32],
    ips: &[u32],
    start: u64,
) {
    let i = Instance {
        id,
        kind,
        label,
        keys: keys.iter().map(|&k| w.keys[k as usize].clone()).collect(),
        ips: ips.iter().map(|&i| w.ips[i as usize].clone()).collect(),
        start_ns: start,
    };
    w.instances.push(i);
}

/// A person chatting: a few sessions a day around their working hours, turns with think
/// times of tens of seconds, answers from the conversation trace.
pub fn person(w: &mut World<'_>, id: String, ip: u32, stack: u8, kind: &'static str) {
    let key = w.key(&id, 0);
    let tz = w.rng.gen_range(-3.0..3.0);
    let rtt = w.lognormal(0.03, 0.6).min(0.3);
    let sessions = w.poisson(2.5 * w.hours / 24.0);
    let mut first = u64::MAX;
    for _ in 0..sessions {
        let mut t = w.diurnal_time(tz);
        first = first.min(t);
        let mut turns = 1;
        while turns < 20 && w.rng.gen::<f64>() < 0.62 {
            turns += 1;
        }
        let mut ctx_carry = 0u32;
        for _ in 0..turns {
            let (ctx, gen) = w.conv_row();
            let stream = w.rng.gen::<f64>() < 0.85;
            let end = w.request(t, ctx.max(ctx_carry), gen, stream, key, ip, stack, rtt, 0.0);
            ctx_carry = ctx.max(ctx_carry) + gen;
            t = end + (w.lognormal(25.0, 0.8).clamp(3.0, 600.0) * 1e9) as u64;
        }
    }
    instance(w, id, kind, "benign", &[key], &[ip], first.min(w.end_ns()));
}

/// An application backend: one key for many end users (open-loop arrivals following the day),
/// moderate outputs, one or two egress addresses.
pub fn app_backend(w: &mut World<'_>, id: String, block: u32, n: u32) {
    let key = w.key(&id, 0);
    let ips: Vec<u32> = (0..2).map(|j| w.ip(addr(block, n * 2 + j))).collect();
    let base = w.lognormal(0.05, 0.7).min(0.5);
    let stack = [2u8, 4][w.rng.gen_range(0..2)];
    let mut t = T0;
    while t < w.end_ns() {
        let hour = (t - T0) as f64 / 3.6e12;
        let rate =
            base * (0.2 + (((hour - 14.0) / 24.0 * std::f64::consts::TAU).cos() + 1.0) * 0.9);
        t += (w.exp(1.0 / rate.max(1e-4)) * 1e9) as u64;
        let (ctx, gen) = if w.rng.gen::<f64>() < 0.5 {
            w.conv_row()
        } else {
            w.code_row()
        };
        let ip = ips[w.rng.gen_range(0..ips.len())];
        let stream = w.rng.gen::<f64>() < 0.4;
        w.request(t, ctx, gen, stream, key, ip, stack, 0.002, 0.0);
    }
    instance(w, id, "app_backend", "benign", &[key], &ips, T0);
}

/// A batch summarisation job: an hour a day at full speed, 4 workers back to back, long
/// inputs, short outputs.
pub fn batch_job(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let start = T0 + (w.rng.gen::<f64>() * (w.hours - 1.0).max(0.1) * 3.6e12) as u64;
    let stop = start + 3600 * NS;
    for _worker in 0..4 {
        let mut t = start + (w.rng.gen::<f64>() * 1e9) as u64;
        while t < stop {
            let ctx = w.rng.gen_range(3_000..12_000);
            let gen = w.rng.gen_range(60..250);
            t = w.request(t, ctx, gen, false, key, ip, 4, 0.002, 0.0)
                + (w.rng.gen::<f64>() * 0.05e9) as u64;
        }
    }
    instance(w, id, "batch_job", "benign", &[key], &[ip], start);
}

/// A nightly evaluation suite: the same prompts every night, 8 in flight, then idle.
pub fn ci_eval(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let prompts: Vec<(u32, u32)> = (0..w.rng.gen_range(300..1000))
        .map(|_| w.conv_row())
        .collect();
    let mut night = 2.0 + w.rng.gen_range(-0.5..0.5);
    let mut first = u64::MAX;
    while night < w.hours {
        let start = T0 + (night * 3.6e12) as u64;
        first = first.min(start);
        let per = prompts.len().div_ceil(8);
        for chunk in prompts.chunks(per) {
            let mut t = start;
            for &(ctx, gen) in chunk {
                t = w.request(t, ctx, gen.min(512), false, key, ip, 4, 0.002, 0.0);
            }
        }
        night += 24.0;
    }
    instance(
        w,
        id,
        "ci_eval",
        "benign",
        &[key],
        &[ip],
        first.min(w.end_ns()),
    );
}

/// An agent loop: sessions of tens of turns, a growing context, tool-call-sized outputs and
/// think times under two seconds.
pub fn agent_loop(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let sessions = w.poisson(5.0 * w.hours / 24.0).max(1);
    let mut first = u64::MAX;
    for _ in 0..sessions {
        let mut t = w.diurnal_time(0.0);
        first = first.min(t);
        let mut ctx = w.rng.gen_range(800..3000);
        for _ in 0..w.rng.gen_range(10..60) {
            let gen = w.rng.gen_range(30..400);
            let stream = w.rng.gen::<f64>() < 0.5;
            t = w.request(t, ctx, gen, stream, key, ip, 0, 0.01, 0.0)
                + (w.rng.gen_range(0.2..2.0) * 1e9) as u64;
            ctx += gen + w.rng.gen_range(50..800);
        }
    }
    instance(
        w,
        id,
        "agent_loop",
        "benign",
        &[key],
        &[ip],
        first.min(w.end_ns()),
    );
}

/// A content generator: an app writing long articles for its users: short prompts, long
/// outputs, all day. Benign, and on the wire much like a harvester (the allow-list is for it).
pub fn content_generator(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let base = w.lognormal(0.02, 0.5).min(0.1);
    let mut t = T0;
    while t < w.end_ns() {
        t += (w.exp(1.0 / base) * 1e9) as u64;
        let gen = w.rng.gen_range(800..2000);
        let prompt = w.rng.gen_range(50..300);
        w.request(t, prompt, gen, true, key, ip, 2, 0.002, 0.0);
    }
    instance(w, id, "content_generator", "benign", &[key], &[ip], T0);
}

/// When an attack runs: a random start, 4 to 12 hours (within the run).
fn attack_window(w: &mut World<'_>) -> (u64, u64) {
    let len = w.rng.gen_range(4.0..12.0f64).min(w.hours * 0.8);
    let start = w.rng.gen::<f64>() * (w.hours - len).max(0.0);
    (
        T0 + (start * 3.6e12) as u64,
        T0 + ((start + len) * 3.6e12) as u64,
    )
}

fn harvest_tokens(w: &mut World<'_>) -> (u32, u32) {
    (w.rng.gen_range(20..120), w.rng.gen_range(1000..2048))
}

/// Flat out: one key, one address, 4 workers back to back, long outputs.
pub fn harvester_flat(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let (start, stop) = attack_window(w);
    for _ in 0..4 {
        let mut t = start;
        while t < stop {
            let (c, g) = harvest_tokens(w);
            let stream = w.rng.gen::<f64>() < 0.3;
            t = w.request(t, c, g, stream, key, ip, 3, 0.03, 0.0)
                + (w.rng.gen::<f64>() * 0.1e9) as u64;
        }
    }
    instance(w, id, "harvester_flat", "harvester", &[key], &[ip], start);
}

/// Jittered: two keys, two workers, lognormal gaps and human-looking pauses.
pub fn harvester_jitter(w: &mut World<'_>, id: String, ip: u32) {
    let keys = [w.key(&id, 0), w.key(&id, 1)];
    let (start, stop) = attack_window(w);
    for _ in 0..2 {
        let mut t = start;
        while t < stop {
            let (c, g) = harvest_tokens(w);
            let key = keys[w.rng.gen_range(0..2)];
            let end = w.request(t, c, g, true, key, ip, 0, 0.05, 0.0);
            let mut gap = w.lognormal(4.0, 0.8).min(120.0);
            if w.rng.gen::<f64>() < 0.08 {
                gap += w.rng.gen_range(20.0..120.0);
            }
            t = end + (gap * 1e9) as u64;
        }
    }
    instance(w, id, "harvester_jitter", "harvester", &keys, &[ip], start);
}

/// A hydra: `n` keys, each on its own address in one /24, each paced under a per-key limit.
pub fn hydra(w: &mut World<'_>, id: String, block: u32, n: u32) {
    let (start, stop) = attack_window(w);
    let keys: Vec<u32> = (0..16).map(|i| w.key(&id, i)).collect();
    let ips: Vec<u32> = (0..16)
        .map(|i| w.ip(format!("{}.{}.{}.{}", 60 + block, n >> 8, n & 255, 10 + i)))
        .collect();
    for i in 0..16 {
        let mut t = start + (i as u64) * 10 * NS / 16;
        while t < stop {
            let (c, g) = harvest_tokens(w);
            w.request(t, c, g, true, keys[i], ips[i], 0, 0.04, 0.0);
            t += (w.rng.gen_range(10.5..11.5) * 1e9) as u64;
        }
    }
    instance(w, id, "hydra", "harvester", &keys, &ips, start);
}

/// A relay router: end users' long-output requests shuffled over 3 keys from one address.
pub fn relay_pool(w: &mut World<'_>, id: String, ip: u32, stacks: [u8; 3], kind: &'static str) {
    let (start, stop) = attack_window(w);
    let keys: Vec<u32> = (0..3).map(|i| w.key(&id, i)).collect();
    let mut t = start;
    while t < stop {
        t += (w.exp(1.2) * 1e9) as u64;
        let (c, g) = harvest_tokens(w);
        let k = w.rng.gen_range(0..3);
        w.request(t, c, g, true, keys[k], ip, stacks[k], 0.002, 0.0);
    }
    instance(w, id, kind, "relay", &keys, &[ip], start);
}

/// A far client behind a byte-forwarding relay: TCP ends at the relay, TLS at the client.
pub fn relay_far(w: &mut World<'_>, id: String, ip: u32, stack: u8, kind: &'static str) {
    let key = w.key(&id, 0);
    let (start, stop) = attack_window(w);
    let far = w.rng.gen_range(0.08..0.3);
    for _ in 0..2 {
        let mut t = start;
        while t < stop {
            let (c, g) = harvest_tokens(w);
            let end = w.request(t, c, g.min(1200), false, key, ip, stack, 0.002, far);
            t = end + (w.lognormal(2.0, 0.6) * 1e9) as u64;
        }
    }
    instance(w, id, kind, "relay", &[key], &[ip], start);
}

/// Held out: a harvester that behaves like people (think times of tens of seconds, a working
/// day) but runs three sessions at once on one key and asks for long outputs.
pub fn evasive_harvester(w: &mut World<'_>, id: String, ip: u32) {
    let key = w.key(&id, 0);
    let (start, _) = attack_window(w);
    let stop = start + 8 * 3600 * NS;
    for _ in 0..3 {
        let mut t = start + (w.rng.gen::<f64>() * 30e9) as u64;
        while t < stop {
            let (c, g) = harvest_tokens(w);
            let end = w.request(t, c + 200, g, true, key, ip, 0, 0.03, 0.0);
            t = end + (w.lognormal(25.0, 0.8).clamp(3.0, 600.0) * 1e9) as u64;
        }
    }
    instance(
        w,
        id,
        "evasive_harvester",
        "harvester",
        &[key],
        &[ip],
        start,
    );
}

/// Held out: slow key rotation: 8 keys used one after another, 45 minutes each, flat out.
pub fn slow_rotation(w: &mut World<'_>, id: String, ip: u32) {
    let (start, _) = attack_window(w);
    let keys: Vec<u32> = (0..8).map(|i| w.key(&id, i)).collect();
    for (i, &key) in keys.iter().enumerate() {
        let from = start + i as u64 * 2700 * NS;
        for _ in 0..2 {
            let mut t = from;
            while t < from + 2700 * NS {
                let (c, g) = harvest_tokens(w);
                t = w.request(t, c, g, false, key, ip, 3, 0.03, 0.0)
                    + (w.rng.gen::<f64>() * 0.5e9) as u64;
            }
        }
    }
    instance(w, id, "slow_rotation", "harvester", &keys, &[ip], start);
}
