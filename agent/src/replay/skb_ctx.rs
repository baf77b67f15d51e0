//! The `struct __sk_buff` context passed to BPF_PROG_TEST_RUN. Only `tstamp` is set: the kernel
//! accepts a handful of fields from userspace (mark, priority, ifindex, cb, tstamp, wire_len,
//! gso_*) and requires the rest to be zero.

/// sizeof(struct __sk_buff) in the kernel's uapi (linux/bpf.h), unchanged since 5.16.
pub const SKB_CTX_LEN: usize = 192;
/// offsetof(struct __sk_buff, tstamp).
const TSTAMP_OFFSET: usize = 152;

pub fn with_tstamp(ts_ns: u64) -> [u8; SKB_CTX_LEN] {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[TSTAMP_OFFSET..TSTAMP_OFFSET + 8].copy_from_slice(&ts_ns.to_ne_bytes());
    ctx
}

#[cfg(test)]
mod tests {
    #[test]
    fn tstamp_lands_at_its_offset() {
        let ctx = super::with_tstamp(0x0102_0304_0506_0708);
        assert_eq!(
            u64::from_ne_bytes(ctx[152..160].try_into().expect("8 bytes")),
            0x0102_0304_0506_0708
        );
        assert!(ctx[..152].iter().chain(&ctx[160..]).all(|b| *b == 0));
    }
}
