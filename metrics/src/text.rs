//! The Prometheus text exposition format (version 0.0.4), written: one `# HELP` and `# TYPE`
//! line per family, then its samples, label values escaped. The one renderer every `/metrics`
//! goes through.

use std::fmt::Write;

use crate::family::{Counter, Family, Gauge, Histogram};

/// The `# TYPE` of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, count and sum.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A scrape being written.
#[derive(Debug, Default)]
pub struct Exposition {
    text: String,
}

/// The samples of one family, written one by one (for families computed at scrape time: a
/// queue's depth, a ring's health).
#[derive(Debug)]
pub struct Samples<'a> {
    out: &'a mut Exposition,
    name: &'a str,
}

impl Samples<'_> {
    /// One sample with `labels`.
    pub fn add(&mut self, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.sample(self.name, "", labels, None, value);
        self
    }
}

impl Exposition {
    /// An empty scrape.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// The text, as `/metrics` answers it.
    pub fn finish(self) -> String {
        self.text
    }

    /// Starts family `name`; its samples follow.
    pub fn family<'a>(&'a mut self, name: &'a str, help: &str, kind: Kind) -> Samples<'a> {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.as_str());
        Samples { out: self, name }
    }

    /// A counter without labels.
    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, help, Kind::Counter)
            .add(&[], value as f64);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, help, Kind::Gauge).add(&[], value);
    }

    /// A family of counters.
    pub fn counters<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Counter, N>) {
        self.family(name, help, Kind::Counter);
        for (values, c) in f.series() {
            let labels = zip(f.labels(), &values);
            self.sample(name, "", &labels, None, c.get() as f64);
        }
    }

    /// A family of gauges.
    pub fn gauges<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Gauge, N>) {
        self.family(name, help, Kind::Gauge);
        for (values, g) in f.series() {
            let labels = zip(f.labels(), &values);
            self.sample(name, "", &labels, None, g.get() as f64);
        }
    }

    /// A family of histograms.
    pub fn histograms<const N: usize>(&mut self, name: &str, help: &str, f: &Family<Histogram, N>) {
        self.family(name, help, Kind::Histogram);
        for (values, h) in f.series() {
            let labels = zip(f.labels(), &values);
            self.histogram_samples(name, &labels, &h);
        }
    }

    /// A histogram without labels.
    pub fn histogram(&mut self, name: &str, help: &str, h: &Histogram) {
        self.family(name, help, Kind::Histogram);
        self.histogram_samples(name, &[], h);
    }

    fn histogram_samples(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let cumulative = h.cumulative();
        for (bound, count) in h.bounds().iter().zip(&cumulative) {
            let le = format_value(*bound);
            self.sample(name, "_bucket", labels, Some(&le), *count as f64);
        }
        let total = cumulative.last().copied().unwrap_or(0);
        self.sample(name, "_bucket", labels, Some("+Inf"), total as f64);
        self.sample(name, "_sum", labels, None, h.sum());
        self.sample(name, "_count", labels, None, total as f64);
    }

    fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        le: Option<&str>,
        value: f64,
    ) {
        self.text.push_str(name);
        self.text.push_str(suffix);
        let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
        let mut first = true;
        for (key, value) in all {
            self.text.push(if first { '{' } else { ',' });
            first = false;
            self.text.push_str(key);
            self.text.push_str("=\"");
            escape_into(&mut self.text, value);
            self.text.push('"');
        }
        if !first {
            self.text.push('}');
        }
        self.text.push(' ');
        self.text.push_str(&format_value(value));
        self.text.push('\n');
    }
}

fn zip<'a, const N: usize>(
    names: &[&'static str; N],
    values: &'a [String; N],
) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .zip(values.iter())
        .map(|(n, v)| (*n, v.as_str()))
        .collect()
}

/// A label value: backslash, double quote and newline escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A sample value: integers without a fraction, infinities as Prometheus spells them.
fn format_value(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    if v.is_nan() {
        return "NaN".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{}", v as i64);
    }
    format!("{v}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse;

    #[test]
    fn families_render_and_parse_back() {
        let requests: Family<Counter, 2> = Family::new(["route", "status"]);
        requests.get(["/v2/{name}/blobs/{digest}", "200"]).add(3);
        requests.get(["a \"quoted\\\" \nroute", "404"]).inc();
        let latency: Family<Histogram, 1> = Family::with(["route"], || Histogram::new(&[0.1, 1.0]));
        latency.get(["/x"]).observe(0.5);
        let mut out = Exposition::new();
        out.counters("shoal_test_requests_total", "Requests.", &requests);
        out.histograms("shoal_test_seconds", "Latency.", &latency);
        out.gauge("shoal_test_up", "Up.", 1.0);
        out.family("shoal_test_member", "Members.", Kind::Gauge)
            .add(&[("member", "127.0.0.1:1")], 1.0)
            .add(&[("member", "127.0.0.1:2")], 0.0);
        let text = out.finish();
        let scrape = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(
            scrape.value(
                "shoal_test_requests_total",
                &[("route", "/v2/{name}/blobs/{digest}"), ("status", "200")]
            ),
            Some(3.0)
        );
        assert_eq!(
            scrape.value(
                "shoal_test_requests_total",
                &[("route", "a \"quoted\\\" \nroute")]
            ),
            Some(1.0)
        );
        assert_eq!(
            scrape.value(
                "shoal_test_seconds_bucket",
                &[("route", "/x"), ("le", "0.1")]
            ),
            Some(0.0)
        );
        assert_eq!(
            scrape.value("shoal_test_seconds_bucket", &[("le", "+Inf")]),
            Some(1.0)
        );
        assert_eq!(scrape.value("shoal_test_seconds_count", &[]), Some(1.0));
        assert_eq!(scrape.value("shoal_test_up", &[]), Some(1.0));
        assert_eq!(scrape.sum("shoal_test_member", &[]), 1.0);
    }

    #[test]
    fn values_print_as_prometheus_reads_them() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(1.7e9), "1700000000");
    }
}
