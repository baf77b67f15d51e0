//! Detection events: a score crossing its raise level, and falling back below its clear level,
//! is one JSON line. This format is an interface (README.md, "Detection events"): fields are
//! only ever added, never renamed or removed; `tests/data/detection_event.golden.json` pins it.

use serde::{Deserialize, Serialize};

use super::score::Reason;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Harvest,
    Relay,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::Harvest, Kind::Relay];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Harvest => "harvest",
            Kind::Relay => "relay",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Raised,
    Cleared,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityRef {
    #[serde(rename = "type")]
    pub ty: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventReason {
    pub feature: String,
    pub value: f64,
    /// The cluster's typical value or the level the value is judged against (null if none).
    pub baseline: Option<f64>,
    pub text: String,
}

impl From<&Reason> for EventReason {
    fn from(r: &Reason) -> EventReason {
        EventReason {
            feature: r.feature.to_owned(),
            value: round(r.value),
            baseline: r.baseline.is_finite().then(|| round(r.baseline)),
            text: r.text.clone(),
        }
    }
}

/// Six significant digits: stable text across platforms, enough for any threshold.
fn round(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 6 - x.abs().log10().ceil() as i32;
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Linked {
    pub api_keys: Vec<String>,
    pub client_ips: Vec<String>,
    pub ja4: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectionEvent {
    /// Always "detection".
    pub record: String,
    pub kind: Kind,
    pub state: State,
    pub entity: EntityRef,
    pub score: f64,
    pub reasons: Vec<EventReason>,
    pub linked: Linked,
    /// When the entity was first seen, and when the score crossed; the records' clock (Unix
    /// ns where the records carry wall-clock time).
    pub first_seen_ns: u64,
    pub detected_at_ns: u64,
    /// Set when the entity is on the allow-list: scored, never raised (so never in an event
    /// today; kept for a future "would have raised" mode).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub allowed: Option<String>,
}

impl DetectionEvent {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: Kind,
        state: State,
        entity: EntityRef,
        score: f64,
        reasons: &[Reason],
        linked: Linked,
        first_seen_ns: u64,
        detected_at_ns: u64,
    ) -> DetectionEvent {
        DetectionEvent {
            record: "detection".to_owned(),
            kind,
            state,
            entity,
            score: round(score),
            reasons: reasons.iter().map(EventReason::from).collect(),
            linked,
            first_seen_ns,
            detected_at_ns,
            allowed: None,
        }
    }

    /// One line of JSON, no newline.
    pub fn to_line(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DetectionEvent {
        DetectionEvent::new(
            Kind::Harvest,
            State::Raised,
            EntityRef {
                ty: "api_key".into(),
                value: "5bdcc146bf60754e6a042426089575c7".into(),
            },
            0.912_345_678,
            &[
                Reason {
                    feature: "output_tokens_per_second",
                    value: 612.345_678_9,
                    baseline: 3.25,
                    evidence: 1.0,
                    text: "output ≈612 tokens/s vs cluster typical 3.2".into(),
                },
                Reason {
                    feature: "think_time_p50_seconds",
                    value: 0.0625,
                    baseline: f64::NAN,
                    evidence: 0.9,
                    text: "think time p50 62 ms vs cluster p50 unknown".into(),
                },
            ],
            Linked {
                api_keys: vec![],
                client_ips: vec!["192.0.2.7".into()],
                ja4: vec!["t13d1516h2_8daaf6152771_02713d6af862".into()],
            },
            1_700_000_000_000_000_000,
            1_700_000_090_000_000_000,
        )
    }

    #[test]
    fn the_event_format_matches_the_golden_file() {
        let golden = include_str!("../../tests/data/detection_event.golden.json");
        let want: serde_json::Value = serde_json::from_str(golden).unwrap();
        let got: serde_json::Value = serde_json::from_str(&sample().to_line()).unwrap();
        assert_eq!(got, want, "the detection event format is an interface");
        // And it reads back.
        let back: DetectionEvent = serde_json::from_str(&sample().to_line()).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn rounding_keeps_six_significant_digits() {
        assert_eq!(round(0.912_345_678), 0.912346);
        assert_eq!(round(612.345_678_9), 612.346);
        assert_eq!(round(0.0), 0.0);
    }
}
