//! Every source of references an `export` run was given, read in the order an operator gave
//! them: arguments, image lists, a chart rendered by `helm template`, values files, manifests.

use super::chart::{self, ChartRequest, RenderError};
use super::collect::Collected;
use super::settings::Settings;
use super::values;
use crate::exit;

/// Everything `export` was given: with a chart, the values files and `--set` go to
/// `helm template`; without it, values files are read as values (values.rs).
pub fn collect(settings: &Settings) -> anyhow::Result<Collected> {
    let inputs = &settings.inputs;
    let mut c = Collected {
        no_indirect: inputs.no_indirect,
        ..Collected::default()
    };
    c.add_args(&inputs.images);
    for f in &inputs.images_files {
        c.add_images_file(f);
    }
    match &inputs.chart {
        Some(given) => {
            let chart = given.chart.as_str();
            let request = ChartRequest {
                chart,
                release: &given.release_name,
                version: given.version.as_deref(),
                values: &inputs.values,
                set: &given.set,
                namespace: given.namespace.as_deref(),
                kube_version: given.kube_version.as_deref(),
                api_versions: &given.api_versions,
                helm: given.helm.as_deref(),
                plain_http: chart::oci_on(chart, &settings.insecure),
            };
            match request.render() {
                Ok(text) => c.add_manifests_text(&format!("helm template {chart}"), &text),
                Err(RenderError::NoHelm(m)) => return Err(exit::usage(m)),
                Err(RenderError::Failed(m)) => c.problems.push(m),
            }
        }
        None if !inputs.values.is_empty() => {
            values::add_values_files(&mut c, &inputs.values, settings.allow_empty)
        }
        None => {}
    }
    for f in &inputs.manifests {
        c.add_manifests_file(f);
    }
    Ok(c)
}
