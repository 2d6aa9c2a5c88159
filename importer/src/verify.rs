//! `offline-images verify`: is every image of every archive present in the runtime, under its
//! name and with its config digest? Results on stdout, one line per image; exit 1 if not.

use std::io::{self, Write};

use anyhow::Result;
use serde::Serialize;

use crate::archive::check_images_path;
use crate::archive::{self, Limits, Platform};
use crate::bundle;
use crate::cli::{LogFormat, VerifyArgs};
use crate::exit::Code;
use crate::runtime::detect;

#[derive(Serialize)]
struct Line<'a> {
    file: &'a str,
    /// `present`, `missing`, or `unreadable` (the archive could not be read).
    status: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// One image an archive should have put in the runtime.
struct Expected {
    names: Vec<String>,
    config_digest: Option<String>,
    /// Its manifest and index digests, for a runtime that knows no config digests.
    digests: Vec<String>,
}

pub fn run(args: &VerifyArgs) -> Result<Code> {
    let root = &args.images_path;
    check_images_path(root)?;
    let (found, rejected) = archive::discover(root)?;
    let index = bundle::read_index(root).unwrap_or_else(|e| {
        eprintln!("offline-images: warning: {e:#}; reading the archives themselves instead");
        None
    });
    let detected = detect::detect(&args.runtime)?;
    eprintln!(
        "offline-images: verifying against {}",
        detected.runtime.describe()
    );
    crate::runtime::check_architecture(detected.runtime.as_ref())?;
    let present = detected.runtime.present()?;
    let targets = detected.runtime.target_digests()?;
    let platform = Platform::host();

    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut write = |line: &Line<'_>| -> io::Result<()> {
        match args.log_format {
            LogFormat::Json => {
                serde_json::to_writer(&mut out, line)?;
                writeln!(out)
            }
            LogFormat::Text => {
                write!(out, "{:<10} {}", line.status, line.file)?;
                if let Some(n) = line.name {
                    write!(out, "  {n}")?;
                }
                if let Some(c) = line.config_digest {
                    write!(out, "  config {c}")?;
                }
                if let Some(r) = &line.reason {
                    write!(out, ": {r}")?;
                }
                writeln!(out)
            }
        }
    };

    let (mut ok, mut missing, mut unreadable) = (0usize, Vec::new(), 0usize);
    for r in &rejected {
        let file = bundle::relative_name(root, &r.path);
        write(&Line {
            file: &file,
            status: "unreadable",
            name: None,
            config_digest: None,
            reason: Some(r.reason.clone()),
        })?;
        unreadable += 1;
    }
    for f in &found {
        let file = bundle::relative_name(root, &f.path);
        let from_index = index
            .as_ref()
            .and_then(|i| i.archive(&file))
            .filter(|a| a.size == f.size)
            .map(|a| {
                a.images
                    .iter()
                    .map(|i| Expected {
                        names: i.names.clone(),
                        config_digest: Some(i.config_digest.clone()),
                        digests: i.manifest_digest.iter().cloned().collect(),
                    })
                    .collect::<Vec<_>>()
            });
        let expected = match from_index {
            Some(e) => e,
            None => match archive::inspect_path(&f.path, Limits::default()) {
                Ok(info) => info
                    .images
                    .iter()
                    .map(|i| {
                        let p = i.for_platform(&platform);
                        Expected {
                            names: i.names.clone(),
                            config_digest: p.and_then(|p| p.config_digest.clone()),
                            digests: [i.digest.clone(), p.and_then(|p| p.manifest_digest.clone())]
                                .into_iter()
                                .flatten()
                                .collect(),
                        }
                    })
                    .collect(),
                Err(e) => {
                    write(&Line {
                        file: &file,
                        status: "unreadable",
                        name: None,
                        config_digest: None,
                        reason: Some(format!("{e:#}")),
                    })?;
                    unreadable += 1;
                    continue;
                }
            },
        };
        for img in &expected {
            let Some(config) = img.config_digest.as_deref() else {
                write(&Line {
                    file: &file,
                    status: "missing",
                    name: img.names.first().map(String::as_str),
                    config_digest: None,
                    reason: Some(format!("the archive has no image for {platform}")),
                })?;
                missing.push(img.names.join(", "));
                continue;
            };
            let names: Vec<Option<&str>> = if img.names.is_empty() {
                vec![None]
            } else {
                img.names.iter().map(|n| Some(n.as_str())).collect()
            };
            for name in names {
                let same = |p: &crate::runtime::Present| match &p.config_digest {
                    Some(c) => c == config,
                    // Docker's containerd image store knows the manifest, not the config.
                    None => targets
                        .get(&p.name)
                        .is_some_and(|t| img.digests.contains(t)),
                };
                let here = present
                    .iter()
                    .any(|p| same(p) && name.is_none_or(|n| p.name == n));
                let reason = (!here).then(|| match name {
                    Some(n) => match present.iter().find(|p| p.name == n) {
                        Some(p) => format!(
                            "{n} is present with config {}, not {config}",
                            p.config_digest.as_deref().unwrap_or("unknown")
                        ),
                        None => format!("{n} is not in the runtime"),
                    },
                    None => "no image with this config is in the runtime".to_string(),
                });
                write(&Line {
                    file: &file,
                    status: if here { "present" } else { "missing" },
                    name,
                    config_digest: Some(config),
                    reason,
                })?;
                if here {
                    ok += 1;
                } else {
                    missing.push(name.unwrap_or(config).to_string());
                }
            }
        }
    }
    out.flush()?;
    drop(out);
    if missing.is_empty() && unreadable == 0 {
        eprintln!(
            "offline-images: all {ok} image(s) of {} archive(s) are present",
            found.len()
        );
        return Ok(Code::Success);
    }
    let mut msg = format!(
        "offline-images: {ok} image(s) present, {} missing",
        missing.len()
    );
    if !missing.is_empty() {
        msg.push_str(&format!(": {}", missing.join(", ")));
    }
    if unreadable > 0 {
        msg.push_str(&format!("; {unreadable} archive(s) could not be read"));
    }
    eprintln!("{msg}");
    Ok(Code::Failure)
}
