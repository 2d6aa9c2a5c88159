//! Every source of references an `export` run was given, read in the order an operator gave
//! them: arguments, image lists, a chart rendered by `helm template`, values files, manifests.

use super::chart::{self, ChartRequest, RenderError};
use super::collect::Collected;
use super::values;
use crate::cli::ExportArgs;
use crate::exit;

/// Everything `export` was given: with `--chart`, the values files and `--set` go to
/// `helm template`; without it, values files are read as values (values.rs).
pub fn from_args(args: &ExportArgs) -> anyhow::Result<Collected> {
    let mut c = Collected {
        no_indirect: args.no_indirect,
        ..Collected::default()
    };
    c.add_args(&args.images);
    for f in &args.images_file {
        c.add_images_file(f);
    }
    match &args.chart {
        Some(chart) => {
            let request = ChartRequest {
                chart,
                release: &args.release_name,
                version: args.chart_version.as_deref(),
                values: &args.values,
                set: &args.set,
                namespace: args.chart_namespace.as_deref(),
                kube_version: args.kube_version.as_deref(),
                api_versions: &args.api_versions,
                helm: args.helm.as_deref(),
                plain_http: chart::oci_on(chart, &args.insecure_registry),
            };
            match request.render() {
                Ok(text) => c.add_manifests_text(&format!("helm template {chart}"), &text),
                Err(RenderError::NoHelm(m)) => return Err(exit::usage(m)),
                Err(RenderError::Failed(m)) => c.problems.push(m),
            }
        }
        None if !args.values.is_empty() => {
            values::add_values_files(&mut c, &args.values, args.allow_empty)
        }
        None => {}
    }
    for f in &args.manifests {
        c.add_manifests_file(f);
    }
    Ok(c)
}
