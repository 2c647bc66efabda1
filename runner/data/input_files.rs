//! The files behind the paths a plan reads (`RecipeKind::input_paths`): a file itself, every
//! file under a folder, the images a ScienceQA-style data file lists. Their digests make a
//! run's identity cover its data, not only the names of it.

use std::path::{Path, PathBuf};

use super::scienceqa;
use crate::plan::layout::InputPath;

/// Each file once, in a stable order. A path that does not exist is kept (its digest records
/// it as missing); a data file that cannot be read lists no images (the run says why).
pub fn files(paths: &[InputPath]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        match path {
            InputPath::File(file) => files.push(PathBuf::from(file)),
            InputPath::Folder(folder) => {
                let mut found: Vec<PathBuf> = walkdir::WalkDir::new(folder)
                    .into_iter()
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_file())
                    .map(walkdir::DirEntry::into_path)
                    .collect();
                found.sort();
                files.extend(found);
            }
            InputPath::ImagesOf { data, root } => {
                let items = scienceqa::read(Path::new(data)).unwrap_or_default();
                let mut images: Vec<PathBuf> = items
                    .iter()
                    .filter(|item| !item.image.is_empty())
                    .map(|item| Path::new(root).join(&item.image))
                    .collect();
                images.sort();
                files.extend(images);
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(f.clone()));
    files
}
