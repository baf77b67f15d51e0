//! Network interfaces of this namespace, and which of them to watch.

use std::{fs, io, path::Path};

use anyhow::{bail, Context as _};

const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    pub name: String,
    pub index: u32,
    pub up: bool,
    pub loopback: bool,
}

/// Lists interfaces from sysfs. An interface that vanishes while we read it is skipped.
pub fn list() -> anyhow::Result<Vec<Iface>> {
    list_in(Path::new("/sys/class/net"))
}

fn list_in(root: &Path) -> anyhow::Result<Vec<Iface>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(root).with_context(|| format!("reading {}", root.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match read_iface(&entry.path(), name) {
            Ok(iface) => out.push(iface),
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).context("reading interface attributes"),
        }
    }
    out.sort_by_key(|i| i.index);
    Ok(out)
}

fn read_iface(dir: &Path, name: String) -> io::Result<Iface> {
    let index = read_trimmed(&dir.join("ifindex"))?
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let flags_text = read_trimmed(&dir.join("flags"))?;
    let flags = u32::from_str_radix(flags_text.trim_start_matches("0x"), 16)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(Iface {
        name,
        index,
        up: flags & IFF_UP != 0,
        loopback: flags & IFF_LOOPBACK != 0,
    })
}

fn read_trimmed(path: &Path) -> io::Result<String> {
    Ok(fs::read_to_string(path)?.trim().to_owned())
}

/// Which interfaces to watch.
#[derive(Clone, Debug)]
pub enum Selection {
    /// Exactly these names; each must exist.
    Named(Vec<String>),
    /// Every interface whose name matches any of these.
    Patterns(Vec<glob::Pattern>),
    /// Every UP, non-loopback interface.
    DefaultUp,
}

impl Selection {
    pub fn from_args(names: &[String], patterns: &[String]) -> anyhow::Result<Selection> {
        if !names.is_empty() {
            return Ok(Selection::Named(names.to_vec()));
        }
        if patterns.is_empty() {
            return Ok(Selection::DefaultUp);
        }
        let compiled = patterns
            .iter()
            .map(|p| glob::Pattern::new(p).with_context(|| format!("bad --iface-pattern {p:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Selection::Patterns(compiled))
    }

    /// Whether new interfaces can match later (and so are worth re-checking on each sweep).
    pub fn is_dynamic(&self) -> bool {
        !matches!(self, Selection::Named(_))
    }

    pub fn pick(&self, all: &[Iface]) -> anyhow::Result<Vec<Iface>> {
        match self {
            Selection::Named(names) => names
                .iter()
                .map(|n| {
                    all.iter().find(|i| &i.name == n).cloned().with_context(|| {
                        format!("interface {n:?} does not exist in this network namespace")
                    })
                })
                .collect(),
            Selection::Patterns(ps) => Ok(all
                .iter()
                .filter(|i| ps.iter().any(|p| p.matches(&i.name)))
                .cloned()
                .collect()),
            Selection::DefaultUp => Ok(all
                .iter()
                .filter(|i| i.up && !i.loopback)
                .cloned()
                .collect()),
        }
    }

    /// Fails when a static selection picks nothing: running without watching anything is a
    /// configuration mistake, not a state to sit in quietly.
    pub fn pick_initial(&self, all: &[Iface]) -> anyhow::Result<Vec<Iface>> {
        let picked = self.pick(all)?;
        if picked.is_empty() && !self.is_dynamic() {
            bail!("no interface to attach to");
        }
        Ok(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, index: u32, up: bool, loopback: bool) -> Iface {
        Iface {
            name: name.into(),
            index,
            up,
            loopback,
        }
    }

    fn sample() -> Vec<Iface> {
        vec![
            iface("lo", 1, true, true),
            iface("eth0", 2, true, false),
            iface("eth1", 3, false, false),
            iface("veth1a2b", 4, true, false),
        ]
    }

    fn names(v: &[Iface]) -> Vec<&str> {
        v.iter().map(|i| i.name.as_str()).collect()
    }

    #[test]
    fn default_is_up_and_not_loopback() {
        let s = Selection::from_args(&[], &[]).expect("sel");
        assert_eq!(
            names(&s.pick(&sample()).expect("pick")),
            ["eth0", "veth1a2b"]
        );
    }

    #[test]
    fn pattern_matches_names_regardless_of_state() {
        let s = Selection::from_args(&[], &["eth*".into()]).expect("sel");
        assert_eq!(names(&s.pick(&sample()).expect("pick")), ["eth0", "eth1"]);
        assert!(s.is_dynamic());
    }

    #[test]
    fn named_must_exist() {
        let s = Selection::from_args(&["eth9".into()], &[]).expect("sel");
        let err = s.pick(&sample()).expect_err("missing");
        assert!(format!("{err:#}").contains("eth9"));
    }

    #[test]
    fn bad_pattern_is_an_error() {
        assert!(Selection::from_args(&[], &["[".into()]).is_err());
        assert!(Selection::from_args(&[], &["eth*".into(), "[".into()]).is_err());
    }

    #[test]
    fn any_of_several_patterns() {
        let mut all = sample();
        all.push(iface("cali12ab", 5, true, false));
        all.push(iface("docker0", 6, true, false));
        let patterns: Vec<String> = ["eth*", "veth*", "cali*"].map(String::from).into();
        let s = Selection::from_args(&[], &patterns).expect("sel");
        assert_eq!(
            names(&s.pick(&all).expect("pick")),
            ["eth0", "eth1", "veth1a2b", "cali12ab"]
        );
        assert!(s.is_dynamic());
    }

    #[test]
    fn reads_sysfs_layout() {
        let dir = std::env::temp_dir().join(format!("siphon-ifaces-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for (name, idx, flags) in [
            ("lo", "1", "0x9"),
            ("eth0", "2", "0x1003"),
            ("down0", "3", "0x1002"),
        ] {
            fs::create_dir_all(dir.join(name)).expect("mkdir");
            fs::write(dir.join(name).join("ifindex"), format!("{idx}\n")).expect("write");
            fs::write(dir.join(name).join("flags"), format!("{flags}\n")).expect("write");
        }
        let got = list_in(&dir).expect("list");
        fs::remove_dir_all(&dir).expect("cleanup");
        assert_eq!(
            got,
            vec![
                iface("lo", 1, true, true),
                iface("eth0", 2, true, false),
                iface("down0", 3, false, false)
            ]
        );
    }
}
