//! A strict reader of the Prometheus text format, for tests: it refuses what Prometheus would
//! refuse (a malformed line, a family's samples split apart or named before its `# TYPE`, a
//! series twice, a histogram without `+Inf`) so a scrape that parses here scrapes there.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use crate::text::Kind;

/// One sample: its name, labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (with `_bucket`, `_sum`, `_count` for a histogram's).
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A parsed scrape.
#[derive(Clone, Debug, Default)]
pub struct Scrape {
    /// Every family's type, by name.
    pub families: BTreeMap<String, Kind>,
    /// Every sample, in order.
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// The sum of the samples named `name` whose labels include `labels`; `None` when there
    /// is no such sample.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for s in self.matching(name, labels) {
            *found.get_or_insert(0.0) += s.value;
        }
        found
    }

    /// [`Scrape::value`], 0 when there is no such sample.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or(0.0)
    }

    /// The samples named `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
    }
}

/// Why a scrape does not parse: the line and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a scrape in the text format.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut helped = HashSet::new();
    // Families whose samples have started, and the one whose samples are being read.
    let mut closed: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |message: String| ParseError {
            line: i + 1,
            message,
        };
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut words = rest.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), _) => {
                    check_name(name).map_err(fail)?;
                    if !helped.insert(name.to_owned()) {
                        return Err(fail(format!("a second HELP for {name}")));
                    }
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    check_name(name).map_err(fail)?;
                    let kind = match kind.trim() {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        other => return Err(fail(format!("unknown type {other:?}"))),
                    };
                    if scrape.families.insert(name.to_owned(), kind).is_some() {
                        return Err(fail(format!("a second TYPE for {name}")));
                    }
                    if closed.contains(name) || current.as_deref() == Some(name) {
                        return Err(fail(format!("TYPE of {name} after its samples")));
                    }
                }
                (Some("TYPE"), _, _) => return Err(fail("a TYPE line without a type".into())),
                _ => {}
            }
            continue;
        }
        let sample = sample(line).map_err(fail)?;
        let family = family_of(&scrape.families, &sample.name);
        if current.as_deref() != Some(family.as_str()) {
            if closed.contains(&family) {
                return Err(fail(format!("samples of {family} are not together")));
            }
            if let Some(done) = current.replace(family.clone()) {
                closed.insert(done);
            }
        }
        if scrape.families.get(&family) == Some(&Kind::Histogram)
            && sample.name.ends_with("_bucket")
            && !sample.labels.contains_key("le")
        {
            return Err(fail(format!("{} has no le label", sample.name)));
        }
        let key = (sample.name.clone(), format!("{:?}", sample.labels));
        if !series.insert(key) {
            return Err(fail(format!("{} {:?} twice", sample.name, sample.labels)));
        }
        scrape.samples.push(sample);
    }
    for (name, kind) in &scrape.families {
        if *kind != Kind::Histogram {
            continue;
        }
        let bucket = format!("{name}_bucket");
        let mut with_inf = HashSet::new();
        let mut all = HashSet::new();
        for s in scrape.samples.iter().filter(|s| s.name == bucket) {
            let mut rest = s.labels.clone();
            let le = rest.remove("le");
            let key = format!("{rest:?}");
            if le.as_deref() == Some("+Inf") {
                with_inf.insert(key.clone());
            }
            all.insert(key);
        }
        if let Some(missing) = all.difference(&with_inf).next() {
            return Err(ParseError {
                line: 0,
                message: format!("histogram {name} {missing} has no +Inf bucket"),
            });
        }
    }
    Ok(scrape)
}

/// The family a sample belongs to: its name, or the histogram it is a part of.
fn family_of(families: &BTreeMap<String, Kind>, name: &str) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base) == Some(&Kind::Histogram)
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        Ok(())
    } else {
        Err(format!("{name:?} is not a metric name"))
    }
}

/// `name{a="b",...} value [timestamp]`.
fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or_else(|| format!("{line:?} has no value"))?;
    let name = &line[..name_end];
    check_name(name)?;
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("a label without =")?;
            let key = rest[..eq].trim();
            let key_ok = key
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok {
                return Err(format!("{key:?} is not a label name"));
            }
            let (value, after) = quoted(&rest[eq + 1..])?;
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            rest = after.trim_start_matches(' ');
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err(format!("expected , or }} at {rest:?}"));
            }
        }
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("{v:?} is not a value"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("{ts:?} is not a timestamp"))?;
    }
    if fields.next().is_some() {
        return Err(format!("{line:?} has more than a value and a timestamp"));
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A double-quoted label value with `\\`, `\"` and `\n` escapes; the value and what follows.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let body = text
        .strip_prefix('"')
        .ok_or("a label value must be quoted")?;
    let mut out = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &body[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("bad escape {other:?}")),
            },
            '\n' => return Err("a raw newline in a label value".into()),
            c => out.push(c),
        }
    }
    Err("an unterminated label value".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_prometheus_refuses() {
        let bad = [
            ("x{a=\"1\"} 1\nx{a=\"1\"} 2\n", "twice"),
            (
                "# TYPE x counter\nx 1\n# TYPE y gauge\ny 1\nx 2\n",
                "together",
            ),
            ("x 1\n# TYPE x counter\n", "after its samples"),
            ("x{a=1} 1\n", "quoted"),
            ("x{a=\"1} 1\n", "unterminated"),
            ("9x 1\n", "metric name"),
            ("x one\n", "not a value"),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",
                "+Inf",
            ),
        ];
        for (text, why) in bad {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn reads_labels_escapes_and_timestamps() {
        let s = parse(
            "# HELP x A thing.\n# TYPE x gauge\nx{a=\"q\\\"\\\\\\n\",b=\"\"} 1.5 1700000000\n",
        )
        .unwrap();
        assert_eq!(s.value("x", &[("a", "q\"\\\n"), ("b", "")]), Some(1.5));
        assert_eq!(s.families["x"], Kind::Gauge);
    }
}
