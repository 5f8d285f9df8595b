//! Just enough of Prometheus' text exposition format to read our own
//! daemons' `/metrics`: one sample per line, `name{label="value",…} value`,
//! comments and blank lines skipped, escapes in label values undone.

/// One sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every well-formed sample of `text`; malformed lines are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Sample<'_>> {
    text.lines().filter_map(line)
}

fn line(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=')?;
            let label = rest[..eq].trim();
            rest = rest[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((label, value));
            rest = &rest[end + 1..];
        }
    }
    // The value, then perhaps a timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_labels() {
        let text = r#"# HELP bismuth_fe_requests Requests by function and status code
# TYPE bismuth_fe_requests counter
bismuth_fe_requests_total{function="f1",code="200"} 12
bismuth_fe_request_duration_seconds_bucket{function="f1",le="+Inf"} 3
process_open_fds 7 1700000000000
weird{a="x\"y\\z",b="2"} 1.5e3
broken{a="x" 1
"#;
        let samples: Vec<Sample> = parse(text).collect();
        assert_eq!(samples.len(), 4);
        assert_eq!(samples[0].name, "bismuth_fe_requests_total");
        assert_eq!(samples[0].label("code"), Some("200"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].label("le"), Some("+Inf"));
        assert_eq!(
            (samples[2].name, samples[2].value),
            ("process_open_fds", 7.0)
        );
        assert_eq!(samples[3].label("a"), Some("x\"y\\z"));
        assert_eq!(samples[3].label("b"), Some("2"));
        assert_eq!(samples[3].value, 1500.0);
    }
}
