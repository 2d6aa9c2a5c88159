//! `export --chart`: render the chart with the host's `helm template` (Helm 3 or 4), subcharts
//! and dependencies included, so that the images collected are the ones the release's pods run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Everything `helm template` is given.
pub struct ChartRequest<'a> {
    /// A directory, a `.tgz`, `oci://...` or `repo/name`.
    pub chart: &'a str,
    pub release: &'a str,
    pub version: Option<&'a str>,
    pub values: &'a [PathBuf],
    pub set: &'a [String],
    pub namespace: Option<&'a str>,
    pub kube_version: Option<&'a str>,
    pub api_versions: &'a [String],
    /// `--helm PATH`; else `helm` on PATH.
    pub helm: Option<&'a Path>,
    /// An `oci://` chart on a registry given to --insecure-registry: `--plain-http`.
    pub plain_http: bool,
}

/// Whether `chart` is an `oci://` reference on one of the `insecure` registries (host[:port]).
pub fn oci_on(chart: &str, insecure: &[String]) -> bool {
    let Some(rest) = chart.strip_prefix("oci://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    insecure.iter().any(|h| h.trim_end_matches('/') == host)
}

/// Why rendering did not happen.
#[derive(Debug)]
pub enum RenderError {
    /// No helm to run: an environment error (exit 2).
    NoHelm(String),
    /// helm ran and failed: an input problem (exit 1), other inputs still count.
    Failed(String),
}

impl ChartRequest<'_> {
    /// The arguments after `helm`.
    pub fn args(&self) -> Vec<String> {
        let mut a = vec![
            "template".to_string(),
            self.release.to_string(),
            self.chart.to_string(),
        ];
        let mut flag = |name: &str, value: &str| {
            a.push(name.to_string());
            a.push(value.to_string());
        };
        if let Some(v) = self.version {
            flag("--version", v);
        }
        for f in self.values {
            flag("--values", &f.display().to_string());
        }
        for s in self.set {
            flag("--set", s);
        }
        if let Some(ns) = self.namespace {
            flag("--namespace", ns);
        }
        if let Some(kv) = self.kube_version {
            flag("--kube-version", kv);
        }
        for av in self.api_versions {
            flag("--api-versions", av);
        }
        if self.plain_http {
            a.push("--plain-http".to_string());
        }
        a
    }

    /// The command line to show an operator, quoted for a POSIX shell where needed.
    pub fn shown(&self) -> String {
        format!("helm {}", self.quoted_args())
    }

    fn quoted_args(&self) -> String {
        let quoted: Vec<String> = self.args().iter().map(|a| shell_quote(a)).collect();
        quoted.join(" ")
    }

    fn helm(&self) -> Result<PathBuf, RenderError> {
        match self.helm {
            Some(p) if p.is_file() => Ok(p.to_path_buf()),
            Some(p) => Err(RenderError::NoHelm(format!(
                "--helm {}: no such file; --chart needs Helm 3 or 4 to render {}",
                p.display(),
                self.chart
            ))),
            None => which::which("helm").map_err(|_| {
                RenderError::NoHelm(format!(
                    "--chart needs Helm 3 or 4, and helm is not on PATH (give --helm PATH); \
                     or render where helm is: {} | offline-images export --manifests -",
                    self.shown()
                ))
            }),
        }
    }

    /// Run `helm template` and return its output (the rendered manifests).
    pub fn render(&self) -> Result<String, RenderError> {
        let helm = self.helm()?;
        eprintln!(
            "offline-images: rendering {} with {} {}",
            self.chart,
            helm.display(),
            self.quoted_args()
        );
        let out = Command::new(&helm)
            .args(self.args())
            .output()
            .map_err(|e| RenderError::NoHelm(format!("cannot run {}: {e}", helm.display())))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            let why = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            return Err(RenderError::Failed(format!(
                "{}: helm template failed ({}): {why}",
                self.chart, out.status
            )));
        }
        for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
            eprintln!("offline-images: helm: {}", line.trim_end());
        }
        String::from_utf8(out.stdout).map_err(|_| {
            RenderError::Failed(format!(
                "{}: helm template printed non-UTF-8 output",
                self.chart
            ))
        })
    }
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=,@+%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(values: &'a [PathBuf], set: &'a [String]) -> ChartRequest<'a> {
        ChartRequest {
            chart: "oci://registry.example.com/charts/app",
            release: "shop",
            version: Some("1.2.3"),
            values,
            set,
            namespace: Some("apps"),
            kube_version: None,
            api_versions: &[],
            helm: None,
            plain_http: false,
        }
    }

    #[test]
    fn the_helm_command_line_carries_every_flag_in_order_and_is_shown_quoted() {
        let values = vec![
            PathBuf::from("values.yaml"),
            PathBuf::from("my mirror.yaml"),
        ];
        let set = vec!["a.b=c".to_string()];
        let r = request(&values, &set);
        assert_eq!(
            r.shown(),
            "helm template shop oci://registry.example.com/charts/app --version 1.2.3 \
             --values values.yaml --values 'my mirror.yaml' --set a.b=c --namespace apps"
        );
    }

    #[test]
    fn an_oci_chart_on_an_insecure_registry_is_fetched_over_plain_http() {
        let insecure = vec!["127.0.0.1:5000".to_string()];
        assert!(oci_on("oci://127.0.0.1:5000/charts/app", &insecure));
        assert!(!oci_on("oci://127.0.0.1:5001/charts/app", &insecure));
        assert!(!oci_on("./127.0.0.1:5000/app", &insecure));
    }

    #[test]
    fn a_missing_helm_path_is_an_environment_error_that_names_it() {
        let missing = Path::new("/nonexistent/helm");
        let r = ChartRequest {
            helm: Some(missing),
            ..request(&[], &[])
        };
        match r.render() {
            Err(RenderError::NoHelm(m)) => assert!(m.contains("/nonexistent/helm"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}
