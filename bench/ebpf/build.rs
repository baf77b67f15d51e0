//! Rebuild the eBPF object when bpf-linker changes: a new linker can change the generated code.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
