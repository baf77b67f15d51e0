//! `ground_truth.json`: who every actor is, for the checks, the verdicts and evaluations.

use std::path::Path;

use super::{actors, topology::Topology, KEY_HASH_SECRET};

/// The ground truth: actor → label, its addresses, its keys (as the keyed hashes Siphon
/// exports, never the keys), and the relays' own identities.
pub fn truth_file(
    out: &Path,
    actors: &[actors::Actor],
    keys: &actors::Keys,
    topo: &Topology,
) -> anyhow::Result<()> {
    let hash = |k: &String| actors::key_hash(KEY_HASH_SECRET, k);
    let truth = serde_json::json!({
        "key_hash": "HMAC-SHA256 of the key with the lab secret, first 16 bytes, hex (Siphon's api_key_hash)",
        "actors": actors.iter().map(|a| serde_json::json!({
            "id": a.id,
            "kind": a.kind,
            "outside": a.program.is_some(),
            "command": a.program.as_ref().map(|p| p.argv.clone()),
            "level": a.level,
            "label": a.label,
            "namespace": topo.node(a.node).ns,
            "source_ips": topo.node(a.node).ips,
            "via": a.via,
            "key_hashes": a.keys.iter().map(hash).collect::<Vec<_>>(),
            "upstream_key_hashes": if a.via == "litellm" { keys.relay_upstream.iter().map(hash).collect::<Vec<_>>() } else { vec![] },
            "seen_at_server_as": a.seen_from(topo),
        })).collect::<Vec<_>>(),
        "nodes": topo.nodes.iter().map(|n| serde_json::json!({"role": n.role, "namespace": n.ns, "ips": n.ips, "delay_ms": n.delay_ms})).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("ground_truth.json"),
        serde_json::to_string_pretty(&truth)?,
    )?;
    Ok(())
}
