//! Listening TCP ports of this network namespace, read from /proc/net/tcp{,6}. They tell the
//! kernel program which side of an already-open flow is the server.

use std::fs;

const TCP_LISTEN: &str = "0A";

/// Local ports of sockets in LISTEN state in a /proc/net/tcp-format table. Lines that do not
/// parse are skipped: the table is advisory.
pub fn listening_ports(table: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != TCP_LISTEN {
                return None;
            }
            let port_hex = local.rsplit(':').next()?;
            u16::from_str_radix(port_hex, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

pub fn listening_tcp_ports() -> Vec<u16> {
    let mut all = Vec::new();
    for path in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match fs::read_to_string(path) {
            Ok(t) => all.extend(listening_ports(&t)),
            Err(e) => tracing::debug!("reading {path}: {e}"),
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_entries_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1\n\
   2: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 3\n\
   garbage line\n";
        assert_eq!(listening_ports(table), vec![443, 8080]);
    }

    #[test]
    fn empty_and_malformed_tables() {
        assert!(listening_ports("").is_empty());
        assert!(listening_ports("header\n 0: zz:zz 0 0A\n").is_empty());
    }
}
