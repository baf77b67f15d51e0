//! Reading Prometheus text exposition in tests.

use std::collections::HashMap;

/// Series (name with labels, as printed) to value.
pub fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Value of `name{labels}` where labels are given as pairs, in any order.
pub fn value(metrics: &HashMap<String, f64>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.iter().find_map(|(series, v)| {
        let rest = series.strip_prefix(name)?;
        let inner = if labels.is_empty() {
            if rest.is_empty() {
                return Some(*v);
            }
            rest.strip_prefix('{')?.strip_suffix('}')?
        } else {
            rest.strip_prefix('{')?.strip_suffix('}')?
        };
        let all = labels
            .iter()
            .all(|(k, want)| inner.split(',').any(|kv| kv == format!("{k}=\"{want}\"")));
        (all && inner.split(',').filter(|s| !s.is_empty()).count() == labels.len()).then_some(*v)
    })
}
