//! `cargo xtask image`: builds the container image from the root Dockerfile with docker or
//! podman, whichever answers (`<engine> info` succeeds); says so and fails when none does.

use std::process::{Command, Stdio};

use anyhow::bail;
use clap::Args;

use crate::cmd::{run, workspace_root};

const ENGINES: &[&str] = &["docker", "podman"];

#[derive(Args)]
pub struct ImageArgs {
    /// Image name and tag.
    #[arg(long, default_value = concat!("siphon:", env!("CARGO_PKG_VERSION")))]
    tag: String,
}

/// The first engine whose daemon (or, for podman, runtime) answers.
fn engine() -> Option<&'static str> {
    ENGINES.iter().copied().find(|e| {
        Command::new(e)
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

pub fn image(args: &ImageArgs) -> anyhow::Result<()> {
    let Some(engine) = engine() else {
        bail!(
            "no container engine is running: `docker info` and `podman info` both failed. \
             Start docker (or install podman) and run `cargo xtask image` again; without one, \
             `cargo test -p xtask image` checks the Dockerfile's references"
        );
    };
    run(Command::new(engine).current_dir(workspace_root()).args([
        "build",
        "--file",
        "Dockerfile",
        "--tag",
        &args.tag,
        ".",
    ]))?;
    eprintln!(
        "xtask: built {} with {engine}; push it and set it in your overlay (deploy/README.md)",
        args.tag
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Dockerfile instructions with their continuation lines joined, comments dropped.
    fn instructions(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
                continue;
            }
            match line.strip_suffix('\\') {
                Some(head) => {
                    current.push_str(head);
                    current.push(' ');
                }
                None => {
                    current.push_str(line);
                    out.push(std::mem::take(&mut current));
                }
            }
        }
        out
    }

    /// Whether `.dockerignore` excludes `path` (its entries are directory or file prefixes,
    /// and `**/` globs over file names, which COPY sources here never are).
    fn ignored(dockerignore: &str, path: &str) -> bool {
        dockerignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with("**/"))
            .any(|l| {
                let l = l.trim_end_matches('/');
                path == l || path.starts_with(&format!("{l}/"))
            })
    }

    #[test]
    fn dockerfile_copies_what_exists_and_sets_up_with_xtask() {
        let root = workspace_root();
        let text = fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
        let ignore = fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
        let steps = instructions(&text);

        let mut copied = 0;
        for step in steps.iter().filter(|s| s.starts_with("COPY ")) {
            if step.contains("--from=") {
                continue;
            }
            let words: Vec<&str> = step.split_whitespace().skip(1).collect();
            let (sources, _dest) = words.split_at(words.len() - 1);
            for src in sources {
                let src = src.trim_start_matches("./");
                assert!(
                    root.join(src).exists(),
                    "Dockerfile copies {src}, which does not exist"
                );
                assert!(
                    !ignored(&ignore, src),
                    ".dockerignore excludes {src}, which is copied"
                );
                copied += 1;
            }
        }
        assert!(copied >= 5, "only {copied} sources copied");

        // The build stage sets up with the project's own set-up, then builds the release binary.
        let runs: Vec<&String> = steps.iter().filter(|s| s.starts_with("RUN ")).collect();
        let setup = runs
            .iter()
            .position(|r| {
                r.trim_start_matches("RUN ")
                    .starts_with("cargo xtask setup")
            })
            .expect("a RUN step that is `cargo xtask setup`");
        let build = runs
            .iter()
            .position(|r| r.contains("cargo build --release"))
            .expect("a RUN step with `cargo build --release`");
        assert!(setup < build, "set-up must come before the build");
        // Every workspace member the build needs is in the context.
        for member in ["agent", "agent-common", "agent-ebpf", "bench", "xtask"] {
            assert!(
                steps
                    .iter()
                    .any(|s| s.starts_with(&format!("COPY {member} "))),
                "{member} not copied"
            );
        }

        // The runtime stage holds the binary the build stage installed, and runs it.
        let from_build = steps
            .iter()
            .find(|s| s.starts_with("COPY --from=build "))
            .expect("runtime COPY --from=build");
        assert!(from_build.contains("/out/siphon"), "{from_build}");
        assert!(runs[build].contains("/out/siphon"), "{}", runs[build]);
        assert!(steps
            .iter()
            .any(|s| s.starts_with("ENTRYPOINT") && s.contains("siphon")));
        let froms = steps.iter().filter(|s| s.starts_with("FROM ")).count();
        assert_eq!(froms, 2, "a build stage and a runtime stage");
    }

    #[test]
    fn dockerignore_matching() {
        let ignore = "# c\ntarget/\n.git/\n**/__pycache__/\n";
        assert!(ignored(ignore, "target"));
        assert!(ignored(ignore, "target/release/siphon"));
        assert!(!ignored(ignore, "agent"));
        assert!(!ignored(ignore, "targets"));
    }

    #[test]
    fn continuation_lines_are_joined() {
        let steps = instructions("FROM a\n# x\nRUN a \\\n    b\nCOPY c d\n");
        assert_eq!(steps, ["FROM a", "RUN a  b", "COPY c d"]);
    }
}
