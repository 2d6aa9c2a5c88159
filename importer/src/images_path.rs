//! What an images path holds, as one [`Source`]: its archives ([`ArchiveSource`]) and the
//! images of its OCI layout directories ([`LayoutSource`]). Beside `source` and `layout`, so
//! that neither needs the other's reader. A layout bundle packed into one file (`export
//! --pack`) is read as a layout, never as an archive.

use std::io::Read;
use std::path::Path;

use anyhow::Result;

use crate::archive::{ArchiveInfo, Opened};
use crate::bundle::BundleArchive;
use crate::layout::LayoutSource;
use crate::report::Reporter;
use crate::source::{ArchiveSource, Checksum, Refused, Source, Unit};

/// What an images path holds: its archives ([`ArchiveSource`]) and the images of its OCI
/// layout directories ([`LayoutSource`]), the archives' units first. Each unit is read by the
/// source it comes from.
pub(crate) struct ImagesPath {
    root: std::path::PathBuf,
    archives: ArchiveSource,
    layouts: LayoutSource,
    units: Vec<Unit>,
    refused: Vec<Refused>,
}

impl ImagesPath {
    /// What `root` holds (see [`ArchiveSource::open`] and [`LayoutSource::find`]).
    pub(crate) fn open(root: &Path, reporter: &Reporter) -> Result<ImagesPath> {
        let archives = ArchiveSource::open(root, reporter)?;
        let layouts = LayoutSource::find(root);
        let units = archives
            .units()
            .iter()
            .filter(|u| !layouts.holds(&u.path))
            .chain(layouts.units())
            .cloned()
            .collect();
        let refused = archives
            .refused()
            .iter()
            .chain(layouts.refused())
            .cloned()
            .collect();
        Ok(ImagesPath {
            root: root.to_path_buf(),
            archives,
            layouts,
            units,
            refused,
        })
    }

    /// The source `unit` comes from.
    fn of(&self, unit: &Unit) -> &dyn Source {
        if self.layouts.owns(unit) {
            &self.layouts
        } else {
            &self.archives
        }
    }
}

impl Source for ImagesPath {
    /// Neither archives nor layouts: both are named, since either was expected.
    fn nothing_found(&self) -> String {
        format!(
            "no archives (.tar, .tar.gz, .tgz, .tar.zst) and no OCI layout in {}: nothing to import",
            self.root.display()
        )
    }

    fn units(&self) -> &[Unit] {
        &self.units
    }

    fn refused(&self) -> &[Refused] {
        &self.refused
    }

    fn absent(&self) -> &[Refused] {
        self.archives.absent()
    }

    fn promised(&self) -> &[BundleArchive] {
        self.archives.promised()
    }

    fn promise(&self, unit: &Unit) -> Option<&BundleArchive> {
        self.of(unit).promise(unit)
    }

    fn checksum(&self, unit: &Unit) -> Checksum {
        self.of(unit).checksum(unit)
    }

    fn bytes(&self, unit: &Unit) -> Result<Box<dyn Read + Send>> {
        self.of(unit).bytes(unit)
    }

    fn inspect(&self, unit: &Unit) -> Result<ArchiveInfo> {
        self.of(unit).inspect(unit)
    }

    fn open(&self, unit: &Unit) -> Result<Opened> {
        self.of(unit).open(unit)
    }

    fn stamp(&self, unit: &Unit) -> Option<String> {
        self.of(unit).stamp(unit)
    }

    fn file<'a>(&self, unit: &'a Unit) -> Option<&'a Path> {
        self.of(unit).file(unit)
    }

    fn carried(&self, unit: &Unit) -> Result<Vec<crate::bundle::CarriedBlob>> {
        self.of(unit).carried(unit)
    }

    fn image_blobs(&self, unit: &Unit) -> Option<Result<crate::source::ImageBlobs>> {
        self.of(unit).image_blobs(unit)
    }
}
