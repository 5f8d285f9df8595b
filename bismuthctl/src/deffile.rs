//! Function definitions from files (`deploy -f def.json|def.yaml`): read,
//! parsed as JSON or YAML, and checked as the api would check them, so a
//! mistake is reported with its file, line and field before anything is
//! sent.

use std::path::Path;

use bismuth_model::FunctionDefinition;

use crate::UsageError;

/// Reads and checks the definition in `path` (`-` for standard input).
/// YAML when the name ends in `.yaml`/`.yml`, JSON otherwise.
pub fn load(path: &Path) -> Result<FunctionDefinition, UsageError> {
    let name = path.display().to_string();
    let text = if name == "-" {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| UsageError(format!("cannot read the definition from stdin: {e}")))?
    } else {
        std::fs::read_to_string(path).map_err(|e| UsageError(format!("cannot read {name}: {e}")))?
    };
    let yaml = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    parse(&name, &text, yaml)
}

/// Parses `text` (named `name` in messages) and validates it.
pub fn parse(name: &str, text: &str, yaml: bool) -> Result<FunctionDefinition, UsageError> {
    let def = if yaml {
        from_yaml(name, text)?
    } else {
        from_json(name, text)?
    };
    def.validate()
        .map_err(|e| UsageError(format!("{name}: {e}")))?;
    Ok(def)
}

fn from_json(name: &str, text: &str) -> Result<FunctionDefinition, UsageError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let def = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let field = field(e.path());
        let inner = e.into_inner();
        let message = inner.to_string();
        let message = without_place(&message);
        UsageError(format!(
            "{name}:{}:{}: {field}{message}",
            inner.line(),
            inner.column()
        ))
    })?;
    de.end().map_err(|e| {
        UsageError(format!(
            "{name}:{}:{}: unexpected text after the definition",
            e.line(),
            e.column()
        ))
    })?;
    Ok(def)
}

fn from_yaml(name: &str, text: &str) -> Result<FunctionDefinition, UsageError> {
    // Enums as single-key maps (`invoke_mode: {Executable: [...]}`), as
    // in JSON, rather than YAML tags.
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(
        serde_yaml_ng::Deserializer::from_str(text),
        &mut track,
    );
    serde_yaml_ng::with::singleton_map_recursive::deserialize(de).map_err(
        |inner: serde_yaml_ng::Error| {
            let path = track.path();
            let place = inner
                .location()
                .map_or(String::new(), |l| format!("{}:{}:", l.line(), l.column()));
            let message = inner.to_string();
            let message = without_place(&message);
            // It may name the field itself; then say it once.
            let named = message
                .split_once(": ")
                .is_some_and(|(p, _)| !p.contains(' ') && path.to_string().starts_with(p));
            let field = if named { String::new() } else { field(&path) };
            UsageError(format!("{name}:{place} {field}{message}"))
        },
    )
}

/// A parser's message without the " at line L column C" both serde_json
/// and serde_yaml_ng append (the place is put first instead).
fn without_place(message: &str) -> &str {
    message.rsplit_once(" at line ").map_or(message, |(m, _)| m)
}

/// `field: ` for a path inside the definition, nothing at its top.
fn field(path: &serde_path_to_error::Path) -> String {
    let p = path.to_string();
    if p.is_empty() || p == "." {
        String::new()
    } else {
        format!("{p}: ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{"image": "docker.io/bismuth/busybox:test", "cpu": 0.25, "memory": 67108864,
 "invoke_mode": {"Executable": ["/bin/cat"]}, "routes": [{"hostname": "echo.localhost"}]}"#;

    const YAML: &str = "image: docker.io/bismuth/busybox:test
cpu: 0.25
memory: 67108864
invoke_mode:
  Executable: [/bin/cat]
routes:
  - hostname: echo.localhost
";

    #[test]
    fn json_and_yaml_give_the_same_definition() {
        let a = parse("def.json", JSON, false).unwrap();
        let b = parse("def.yaml", YAML, true).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn mistakes_name_the_line_and_field() {
        let bad = JSON.replace("\"cpu\": 0.25", "\"cpu\": \"lots\"");
        let e = parse("def.json", &bad, false).unwrap_err().to_string();
        assert!(e.starts_with("def.json:1:"), "{e}");
        assert!(e.contains("cpu: invalid type"), "{e}");

        let bad = YAML.replace("Executable", "Exec");
        let e = parse("def.yaml", &bad, true).unwrap_err().to_string();
        assert!(e.starts_with("def.yaml:5:"), "{e}");
        assert!(e.contains("invoke_mode: unknown variant `Exec`"), "{e}");

        let bad = YAML.replace("cpu: 0.25\n", "");
        let e = parse("def.yaml", &bad, true).unwrap_err().to_string();
        assert!(e.contains("missing field `cpu`"), "{e}");

        let e = parse("def.json", &format!("{JSON} x"), false).unwrap_err();
        assert!(e.to_string().contains("unexpected text after"), "{e}");
    }

    #[test]
    fn values_are_checked_as_the_api_checks_them() {
        let bad = YAML.replace("memory: 67108864", "memory: 10");
        let e = parse("def.yaml", &bad, true).unwrap_err().to_string();
        assert!(
            e.starts_with("def.yaml: invalid function definition"),
            "{e}"
        );
        assert!(e.contains("memory"), "{e}");
    }
}
