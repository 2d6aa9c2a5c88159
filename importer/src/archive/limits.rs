//! The caps on what reading one archive may hold in memory and take in time: entries, images
//! and names, each refused by name when passed.

/// Caps on what is held in memory while reading an archive.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `manifest.json`, `index.json`, `repositories`, `oci-layout`.
    pub metadata_max: u64,
    /// A blob small enough to be a manifest or a config is kept when it is JSON.
    pub blob_json_max: u64,
    /// All JSON kept for one archive together.
    pub total_json_max: u64,
    /// Tar entries of one archive (files, links and directories alike). Only the names of the
    /// entries are kept, so this bounds the memory one archive can take whatever it holds.
    pub entries_max: u64,
    /// Images one archive may hold (index entries, `manifest.json` entries).
    pub images_max: usize,
    /// Names one image may have.
    pub names_per_image_max: usize,
    /// Names all the images of one archive may have together: each is an image record to
    /// write and label in the runtime.
    pub names_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            metadata_max: 8 << 20,
            blob_json_max: 4 << 20,
            total_json_max: 32 << 20,
            // docker save writes 3 or 4 entries per layer, an OCI archive one per blob: 400
            // images of a hundred layers stay inside, and the entries' names take some 25 MiB.
            entries_max: 200_000,
            // Each name is an image record to write and label, a few milliseconds each: 2,000
            // keep a whole archive's naming inside the 30 s a stopped pod is given.
            images_max: 2_000,
            names_per_image_max: 1_000,
            names_max: 2_000,
        }
    }
}
